"""Wire kopf's events for ModelDeployments, their ModelVersions, Deployments, pods and Service
to the one serving reconcile.

Like the TrainingJob handlers, only event handlers are used: no finalizers, no change handlers.
A pod's readiness flipping reaches the reconcile directly (failover latency depends on it); a
timer in the reconciler covers grace periods, and the resync loop covers everything else.
"""

from __future__ import annotations

import logging

import kopf

from torchyard import labels as keys
from torchyard.api import modeldeployment as md_api
from torchyard.api import modelversion as mv_api
from torchyard.handlers.resync import logged
from torchyard.serving import ServingReconciler

log = logging.getLogger(__name__)
OWNED = {mv_api.DEPLOYMENT_LABEL: kopf.PRESENT, keys.MANAGED_BY: keys.MANAGER}


@kopf.on.event(md_api.GROUP, md_api.VERSION, md_api.PLURAL)
def modeldeployment_event(event: dict, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    serving: ServingReconciler = memo.serving
    serving.seen(namespace, name)
    if event.get("type") == "DELETED":
        serving.forget(namespace, name)
        model = (body.get("spec") or {}).get("modelName")
        if model:  # a second ModelDeployment of the same model may take over now
            logged("model", serving.reconcile_model, namespace, model)
        return
    logged("ModelDeployment", serving.reconcile, namespace, name)


@kopf.on.event(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL)
def modelversion_event(namespace: str, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    model = (body.get("spec") or {}).get("modelName")
    if model:
        logged("model", memo.serving.reconcile_model, namespace, model)


@kopf.on.event("", "v1", "pods", labels=OWNED)
def serving_pod_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    logged("ModelDeployment", memo.serving.reconcile, namespace, labels[mv_api.DEPLOYMENT_LABEL])


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
def serving_deployment_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    logged("ModelDeployment", memo.serving.reconcile, namespace, labels[mv_api.DEPLOYMENT_LABEL])


@kopf.on.event("", "v1", "services", labels=OWNED)
def serving_service_event(namespace: str, labels: dict, memo: kopf.Memo, **_) -> None:
    logged("ModelDeployment", memo.serving.reconcile, namespace, labels[mv_api.DEPLOYMENT_LABEL])
