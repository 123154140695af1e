"""Wire kopf's events for Kueue's Workloads and ResourceFlavors to the job reconcile.

Registered only when the operator runs with `--kueue` (docs/kueue.md). A Workload event (Kueue
admitted, evicted or requeued it) fills the store and queues the job that owns it; a flavor event
only fills its store, which admitted jobs read when their pods are made.
"""

from __future__ import annotations

import kopf

from torchyard import labels as keys
from torchyard.kube import kueue

OWNED = {keys.JOB_NAME: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER}


@kopf.on.event(kueue.GROUP, kueue.VERSION, kueue.WORKLOADS, labels=OWNED)
async def workload_event(event: dict, namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    memo.queueing.api.store.seen(event["object"], event.get("type") == "DELETED")
    memo.queue.add((namespace, labels[keys.JOB_NAME]))


@kopf.on.event(kueue.GROUP, kueue.VERSION, kueue.FLAVORS)
async def resource_flavor_event(event: dict, memo: kopf.Memo, **_) -> None:
    memo.queueing.api.flavors.seen(event["object"], event.get("type") == "DELETED")
