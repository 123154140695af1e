"""Small builders of ModelDeployments, ModelVersions and observed versions for the serving tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from torchyard.api.modeldeployment import parse_model_deployment
from torchyard.api.modelversion import Artifact, ModelVersion
from torchyard.reconcile.health import VersionHealth
from torchyard.reconcile.serving import ServingObserved, decide_serving

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
LONG_AGO = NOW - timedelta(minutes=10)


def md(**spec):
    body = {"modelName": "digits", **spec}
    return parse_model_deployment({
        "apiVersion": "torchyard.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "md-uid", "generation": 1},
        "spec": body,
    })


def version(v: int, accuracy: float = 0.9, *, phase: str | None = None, metrics: dict | None = None,
            metric: str = "accuracy") -> ModelVersion:
    return ModelVersion(
        name=f"digits-v{v}", namespace="ml", model_name="digits", version=v,
        artifact=Artifact(path=f"/var/lib/torchyard/models/digits/run-{v}", sha256=f"{v:064x}", claim_name="models"),
        metrics=metrics if metrics is not None else {"accuracy": accuracy},
        metric=metric,
        status={"phase": phase} if phase else {},
    )


def health(v: int, ready: int = 1, *, replicas: int = 1, crashing: int = 0,
           ready_since: datetime | None = LONG_AGO) -> VersionHealth:
    return VersionHealth(
        version=v, replicas=replicas, ready=ready, pods=replicas, crash_looping=crashing,
        crash_reason="pod digits-v%d-abc: container server is in CrashLoopBackOff" % v if crashing else "",
        ready_since=ready_since if ready else None,
    )


def observe(versions=(), deployments=(), selected=None, now=NOW, verified=None) -> ServingObserved:
    return ServingObserved(
        versions={m.version: m for m in versions},
        deployments={h.version: h for h in deployments},
        selected=selected,
        now=now,
        verified=verified or {},
    )


def serving(active: int, **extra) -> dict:
    """A previous status in which `active` serves and was promoted (LatestPassing) long ago."""
    return {"activeVersion": active, "targetVersion": active, "targetReason": "promotion",
            "promotedVersion": active, "evaluatedVersion": active, "history": [], "conditions": [], **extra}


def decide(spec_md, previous, observed):
    return decide_serving(spec_md, previous, observed)


def condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)
