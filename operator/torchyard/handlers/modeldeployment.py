"""Wire kopf's events for ModelDeployments, their ModelVersions, Deployments, pods and Service
to the one serving reconcile.

Like the TrainingJob handlers, only event handlers are used: no finalizers, no change handlers.
A pod's readiness flipping reaches the reconcile directly (failover latency depends on it); a
timer in the reconciler covers grace periods, and the resync loop covers everything else.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from torchyard import labels as keys
from torchyard.api import modeldeployment as md_api
from torchyard.api import modelversion as mv_api
from torchyard.serving import ServingReconciler

log = logging.getLogger(__name__)
OWNED = {mv_api.DEPLOYMENT_LABEL: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER}


@kopf.on.event(md_api.GROUP, md_api.VERSION, md_api.PLURAL)
def modeldeployment_event(event: dict, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    serving: ServingReconciler = memo.serving
    if event.get("type") == "DELETED":
        serving.forget(namespace, name)
        return
    _logged(serving.reconcile, namespace, name)


@kopf.on.event(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL)
def modelversion_event(namespace: str, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    model = (body.get("spec") or {}).get("modelName")
    if model:
        _logged(memo.serving.reconcile_model, namespace, model)


@kopf.on.event("", "v1", "pods", labels=OWNED)
def serving_pod_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    _logged(memo.serving.reconcile, namespace, labels[mv_api.DEPLOYMENT_LABEL])


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
def serving_deployment_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    _logged(memo.serving.reconcile, namespace, labels[mv_api.DEPLOYMENT_LABEL])


@kopf.on.event("", "v1", "services", labels=OWNED)
def serving_service_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    _logged(memo.serving.reconcile, namespace, labels[mv_api.DEPLOYMENT_LABEL])


def _logged(reconcile, namespace: str, name: str) -> None:
    # Event handlers are not retried by kopf; the resync loop retries, so log and carry on.
    try:
        reconcile(namespace, name)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("reconcile of ModelDeployment %s/%s: %s", namespace, name, exc)


async def resync_serving(serving: ServingReconciler, namespaces: list[str] | None, interval: float) -> None:
    """Reconcile every ModelDeployment every `interval` seconds."""
    while True:
        await asyncio.sleep(interval)
        for namespace in namespaces or [None]:
            try:
                items = await asyncio.to_thread(serving.kube.list_model_deployments, namespace)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                log.warning("serving resync: %s", exc)
                continue
            for item in items:
                meta = item["metadata"]
                await asyncio.to_thread(_logged, serving.reconcile, meta["namespace"], meta["name"])
