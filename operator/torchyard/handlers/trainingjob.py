"""Wire kopf's events for TrainingJobs and their pods to the one reconcile.

No change handlers (create/update/delete) are used on purpose: they would need kopf's progress
storage and a finalizer, and a level-based reconcile needs neither. Watch events cover create,
update and the operator's own restart (kopf lists every object when it starts); a resync loop
covers time (deadlines, TTL) and retries after an error.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from torchyard import labels as keys
from torchyard.api import trainingjob as tj
from torchyard.jobs import JobReconciler

log = logging.getLogger(__name__)


@kopf.on.event(tj.GROUP, tj.VERSION, tj.PLURAL)
def trainingjob_event(event: dict, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    jobs: JobReconciler = memo.jobs
    if event.get("type") == "DELETED":
        jobs.forget(namespace, name)
        return
    _reconcile_logged(jobs, namespace, name)


@kopf.on.event("", "v1", "pods", labels={keys.JOB_NAME: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER})
def pod_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    _reconcile_logged(memo.jobs, namespace, labels[keys.JOB_NAME])


def _reconcile_logged(jobs: JobReconciler, namespace: str, name: str) -> None:
    # Event handlers are not retried by kopf; the resync loop retries, so log and carry on.
    try:
        jobs.reconcile(namespace, name)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("reconcile of TrainingJob %s/%s: %s", namespace, name, exc)
    except Exception:
        log.exception("reconcile of TrainingJob %s/%s failed", namespace, name)


async def resync_forever(jobs: JobReconciler, namespaces: list[str] | None, interval: float) -> None:
    """Reconcile every job every `interval` seconds, so time-based rules fire without an event."""
    while True:
        await asyncio.sleep(interval)
        for namespace in namespaces or [None]:
            try:
                items = await asyncio.to_thread(jobs.kube.list_jobs, namespace)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                log.warning("resync: %s", exc)
                continue
            for item in items:
                meta = item["metadata"]
                await asyncio.to_thread(_reconcile_logged, jobs, meta["namespace"], meta["name"])
