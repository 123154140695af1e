"""Each time-based rule of `decide` has its moment in `next_due`: just before it the decision is
the one a pass made now, at it the decision changes. A pass is queued for that moment instead of
every job being swept every few seconds, so a moment that is late or missing is a rule that
fires late."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from jobs import NOW, job, pod
from torchyard.reconcile.decide import Observed, decide
from torchyard.reconcile.due import next_due
from torchyard.reconcile.observe import parse_time
from torchyard.reconcile.nodes import NodeFault

RUNNING = {"phase": "Running", "startTime": "2026-01-01T11:00:00Z", "attemptStartTime": "2026-01-01T11:00:00Z",
           "attempt": 0, "restarts": 0,
           "conditions": [{"type": "Running", "status": "True", "lastTransitionTime": "2026-01-01T11:00:00Z"}]}
BOTH = (pod("worker", 0), pod("worker", 1))


def observed(*pods, **kw):
    return Observed(pods=tuple(pods), service_exists=True, now=NOW, **kw)


def outcome(plan):
    return plan.status.get("phase"), plan.delete_pods, plan.force_delete_pods, plan.create_pods, plan.delete_job


CASES = [
    ("ttl after finished", job(ttlSecondsAfterFinished=3600),
     {**RUNNING, "phase": "Succeeded", "completionTime": "2026-01-01T11:59:00Z"}, observed()),
    ("active deadline", job(activeDeadlineSeconds=7200), RUNNING, observed(*BOTH)),
    ("startup deadline", job(startupDeadlineSeconds=600),
     {**RUNNING, "phase": "Pending", "attemptStartTime": "2026-01-01T11:58:00Z"},
     observed(pod("worker", 0), pod("worker", 1, "Pending"))),
    ("progress deadline", job(progressDeadlineSeconds=600),
     {**RUNNING, "progress": {"step": 3, "stepTime": "2026-01-01T11:59:00Z"}}, observed(*BOTH, progress_reported=True)),
    ("node fault", job(), RUNNING,
     observed(pod("worker", 0), replace(pod("worker", 1), node="bad"), node_failure_seconds=60,
              node_faults={"bad": NodeFault("bad", "NodeNotReady", NOW - timedelta(seconds=20), "down")})),
    ("stuck terminating", job(), {**RUNNING, "phase": "Restarting", "attempt": 1},
     observed(pod("worker", 0, deleting_since=NOW - timedelta(seconds=10)))),
]


@pytest.mark.parametrize("case, tj, status, seen", CASES, ids=[c[0] for c in CASES])
def test_the_decision_changes_exactly_when_due(case, tj, status, seen):
    now = decide(tj, status, seen)
    due = next_due(tj, now.status, seen)
    assert due is not None and due > NOW, case
    before = decide(tj, now.status, replace(seen, now=due - timedelta(seconds=1)))
    at = decide(tj, now.status, replace(seen, now=due))
    assert outcome(before) == outcome(now), f"{case}: nothing falls due before {due}"
    assert outcome(at) != outcome(now), f"{case}: the rule fires at {due}"


def test_a_job_without_time_rules_is_never_due():
    plan = decide(job(), RUNNING, observed(*BOTH))
    assert next_due(job(), plan.status, observed(*BOTH)) is None


def test_a_moment_already_past_is_not_due_again():
    # A gang that got Running after its startup deadline's moment is not queued again every second.
    tj = job(startupDeadlineSeconds=600, activeDeadlineSeconds=7200)
    started = {**RUNNING, "attemptStartTime": "2026-01-01T10:00:00Z"}
    plan = decide(tj, started, observed(*BOTH))
    assert plan.status["phase"] == "Running"
    assert next_due(tj, plan.status, observed(*BOTH)) == parse_time(plan.status["startTime"]) + timedelta(seconds=7200)
