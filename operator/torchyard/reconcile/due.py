"""When a job's time-based rules next fall due, so its next pass is queued for that moment
instead of found by sweeping every job every few seconds.

Each moment is the one a rule of `decide` compares `now` with: the TTL of a finished job, the
active and startup deadlines, the progress deadline, a node fault that has lasted long enough,
a pod stuck Terminating. tests/unit/test_due.py checks each against `decide` itself: just before
the moment the decision is the same as now, at it the decision changes. A rule added to `decide`
without a moment here still runs, at the next safety resync.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping

from torchyard.api.trainingjob import TrainingJob
from torchyard.reconcile.decide import TERMINAL, Observed
from torchyard.reconcile.observe import parse_time

RUNNING = "Running"


def next_due(job: TrainingJob, status: Mapping[str, Any], observed: Observed) -> datetime | None:
    """The earliest moment after which a pass may decide differently with nothing else changed.
    A moment already past is not one: the pass at `observed.now` decided with it (a Running job
    past its startup deadline would otherwise be queued again every second, for good)."""
    moments = [m for m in _moments(job, status, observed) if m is not None and m > observed.now]
    return min(moments) if moments else None


def _moments(job: TrainingJob, status: Mapping[str, Any], observed: Observed) -> Iterator[datetime | None]:
    policy = job.spec.run_policy
    for pod in observed.pods:
        if pod.deleting and pod.deletion_deadline:
            yield pod.deletion_deadline + timedelta(seconds=observed.stuck_terminating_seconds)
    if status.get("phase") in TERMINAL:
        yield _after(status.get("completionTime"), policy.ttl_seconds_after_finished)
        return
    yield _after(status.get("startTime"), policy.active_deadline_seconds)
    yield _after(status.get("attemptStartTime"), policy.startup_deadline_seconds)
    if observed.progress_reported and status.get("phase") == RUNNING:
        yield _progress_deadline(status, policy.progress_deadline_seconds)
    for pod in observed.pods:
        fault = observed.node_faults.get(pod.node)
        if fault is not None and not pod.finished:
            yield fault.since + timedelta(seconds=observed.node_failure_seconds)


def _after(moment: str | None, seconds: float | None) -> datetime | None:
    start = parse_time(moment)
    return start + timedelta(seconds=seconds) if start is not None and seconds is not None else None


def _progress_deadline(status: Mapping[str, Any], seconds: float | None) -> datetime | None:
    progress = status.get("progress") or {}
    running = next((c for c in status.get("conditions") or [] if c.get("type") == RUNNING), {})
    moments = [t for t in (parse_time(progress.get("stepTime")), parse_time(running.get("lastTransitionTime"))) if t]
    return max(moments) + timedelta(seconds=seconds) if moments and seconds is not None else None
