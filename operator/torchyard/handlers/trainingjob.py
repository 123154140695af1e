"""Wire kopf's events for TrainingJobs and their pods and Service to the work queue.

No change handlers (create/update/delete) are used on purpose: they would need kopf's progress
storage and a finalizer, and a level-based reconcile needs neither. Each event puts the object
it shows into the watch cache (what a pass observes) and, when that changed what a pass reads,
queues the job's key; the queue folds a burst of events into a few passes (torchyard.workqueue).
A change no pass reads (an IP, an image ID) queues nothing, nor does the echo of the operator's
own create (a pod or Service shown as it was created): the pass that created it counted on it,
and wrote the status that says so. While the watch has yet to show some of the job's own
creates and deletes, an event queues nothing: the pass would only wait for them
(kube/cache.py); the event that shows the last of them queues it if anything else changed
meanwhile. A pod's or the Service's event queues the job once the job's events pause for
`EVENT_HOLD_SECONDS` (at most `EVENT_HOLD_MOST_SECONDS` after the first), every event meanwhile
folded in: a gang's pods are scheduled and start within moments of each other, and one pass sees
them together. A pod that failed or vanished queues the job at once. A slow resync from the cache
covers what a watch may miss.
"""

from __future__ import annotations

import logging

import kopf

from torchyard import labels as keys
from torchyard.api import trainingjob as tj
from torchyard.jobs import JobReconciler

log = logging.getLogger(__name__)
OWNED = {keys.JOB_NAME: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER}
EVENT_HOLD_SECONDS = 0.5
EVENT_HOLD_MOST_SECONDS = 2.0


@kopf.on.event(tj.GROUP, tj.VERSION, tj.PLURAL)
async def trainingjob_event(event: dict, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    deleted = event.get("type") == "DELETED"
    changed = memo.cache.seen_job(event["object"], deleted)
    listed(event, memo)
    if deleted:
        jobs: JobReconciler = memo.jobs
        jobs.forget(namespace, name)
    elif changed or event.get("type") is None:  # not the echo of the operator's own status write
        queue(memo, namespace, name)


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def pod_event(event: dict, namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    memo.cache.seen_pod(event["object"], event.get("type") == "DELETED")
    listed(event, memo)
    job = labels[keys.JOB_NAME]
    if memo.cache.due(namespace, job) or event.get("type") is None:
        queue(memo, namespace, job, 0.0 if broken(event) else EVENT_HOLD_SECONDS)


def broken(event: dict) -> bool:
    """A pod that failed or vanished: its gang is broken, its peers wait on it in a collective, and
    nothing is gained by holding the pass (the passes that restart it see the rest)."""
    return event.get("type") == "DELETED" or (event["object"].get("status") or {}).get("phase") == "Failed"


@kopf.on.event("", "v1", "services", labels=OWNED)
async def service_event(event: dict, namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    memo.cache.seen_service(event["object"], event.get("type") == "DELETED")
    listed(event, memo)
    job = labels[keys.JOB_NAME]
    if memo.cache.due(namespace, job) or event.get("type") is None:
        queue(memo, namespace, job, EVENT_HOLD_SECONDS)


def queue(memo: kopf.Memo, namespace: str, job: str, hold: float = 0.0) -> None:
    """Queue the job's pass, unless it would only wait for the job's own writes to show."""
    if not memo.cache.awaits(namespace, job):
        memo.queue.add((namespace, job), hold=hold, most=EVENT_HOLD_MOST_SECONDS if hold else 0.0)


def listed(event: dict, memo: kopf.Memo) -> None:
    """kopf shows a listing afresh as events of type None; what it deleted meanwhile it cannot show
    (torchyard.relist): the cache lists afresh too."""
    if event.get("type") is None:
        memo.relister.request()
