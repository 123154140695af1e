"""Wire kopf's events for TrainingJobs and their pods to the one reconcile.

No change handlers (create/update/delete) are used on purpose: they would need kopf's progress
storage and a finalizer, and a level-based reconcile needs neither. Watch events cover create,
update and the operator's own restart (kopf lists every object when it starts); a resync loop
covers time (deadlines, TTL) and retries after an error.
"""

from __future__ import annotations

import logging

import kopf

from torchyard import labels as keys
from torchyard.api import trainingjob as tj
from torchyard.handlers.resync import logged
from torchyard.jobs import JobReconciler

log = logging.getLogger(__name__)


@kopf.on.event(tj.GROUP, tj.VERSION, tj.PLURAL)
def trainingjob_event(event: dict, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    jobs: JobReconciler = memo.jobs
    if event.get("type") == "DELETED":
        jobs.forget(namespace, name)
        return
    logged("TrainingJob", jobs.reconcile, namespace, name)


@kopf.on.event("", "v1", "pods", labels={keys.JOB_NAME: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER})
def pod_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    logged("TrainingJob", memo.jobs.reconcile, namespace, labels[keys.JOB_NAME])
