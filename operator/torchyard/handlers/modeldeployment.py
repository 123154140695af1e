"""Wire kopf's events for ModelDeployments, their ModelVersions, Deployments, pods and Service to
the serving work queue.

Like the TrainingJob handlers, only event handlers are used: no finalizers, no change handlers.
Each event puts the object it shows into the serving watch cache (kube/serving_cache.py) and,
when that changed what a pass reads, queues the ModelDeployment's key on a queue of its own, so a
pod turning NotReady reaches a worker at once, never behind a burst of TrainingJobs. The reconciler
queues a pass for when a grace period ends; a rare safety resync repairs a missed event.
"""

from __future__ import annotations

import kopf

from torchyard import labels as keys
from torchyard.api import modeldeployment as md_api
from torchyard.api import modelversion as mv_api
from torchyard.kube import serving_cache as sc

OWNED = {mv_api.DEPLOYMENT_LABEL: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER}


@kopf.on.event(md_api.GROUP, md_api.VERSION, md_api.PLURAL)
async def modeldeployment_event(event: dict, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    deleted = event.get("type") == "DELETED"
    changed = seen(sc.MODEL_DEPLOYMENTS, event, memo)
    if not deleted:
        if changed or event.get("type") is None:  # not the echo of the operator's own status write
            memo.serving_queue.add((namespace, name))
        return
    memo.serving.forget(namespace, name)
    model = (body.get("spec") or {}).get("modelName")
    if model:  # a second ModelDeployment of the same model may take over now
        queue_model(memo, namespace, model)


@kopf.on.event(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL)
async def modelversion_event(event: dict, namespace: str, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    model = (body.get("spec") or {}).get("modelName")
    if (seen(sc.MODEL_VERSIONS, event, memo) or event.get("type") is None) and model:
        queue_model(memo, namespace, model)


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def serving_pod_event(event: dict, namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    owned_event(sc.PODS, event, namespace, labels, memo)


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
async def serving_deployment_event(event: dict, namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    owned_event(sc.DEPLOYMENTS, event, namespace, labels, memo)


@kopf.on.event("", "v1", "services", labels=OWNED)
async def serving_service_event(event: dict, namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    owned_event(sc.SERVICES, event, namespace, labels, memo)


def owned_event(sort: str, event: dict, namespace: str, labels: dict, memo: kopf.Memo) -> None:
    """A Deployment, pod or Service made for a ModelDeployment: queue it when what a pass reads changed."""
    if seen(sort, event, memo) or event.get("type") is None:
        memo.serving_queue.add((namespace, labels[mv_api.DEPLOYMENT_LABEL]))


def seen(sort: str, event: dict, memo: kopf.Memo) -> bool:
    """Into the cache; kopf shows a listing afresh as events of type None, and what was deleted
    meanwhile it cannot show (torchyard.relist): the cache lists afresh too."""
    changed = memo.serving_cache.seen(sort, event["object"], event.get("type") == "DELETED")
    if event.get("type") is None:
        memo.serving_relister.request()
    return changed


def queue_model(memo: kopf.Memo, namespace: str, model: str) -> None:
    """Every ModelDeployment serving `model` (a ModelVersion of it appeared, changed or went)."""
    for key in memo.serving_cache.deployments_of_model(namespace, model):
        memo.serving_queue.add(key)
