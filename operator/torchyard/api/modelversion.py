"""The ModelVersion resource as typed values, and the labels that tie serving objects together.

A ModelVersion is one trained artifact of one model: where it lies, its digest, how it scored on
held-out data and where it came from. The operator creates it when a TrainingJob succeeds; its
spec never changes afterwards (the CRD refuses updates), only the status that the
ModelDeployment serving the model writes (Active, Standby, Retired, Rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torchyard.api.errors import SpecError
from torchyard.api.fields import Fields
from torchyard.api.trainingjob import GROUP, VERSION

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelVersion"
PLURAL = "modelversions"

# Labels on ModelVersions, on each served version's Deployment and on its pods.
MODEL_LABEL = "torchyard.dev/model"
VERSION_LABEL = "torchyard.dev/version"
TRAINING_JOB_UID_LABEL = "torchyard.dev/training-job-uid"
DEPLOYMENT_LABEL = "torchyard.dev/model-deployment"

REGISTERED, ACTIVE, STANDBY, RETIRED, REJECTED = "Registered", "Active", "Standby", "Retired", "Rejected"
PHASES = (REGISTERED, ACTIVE, STANDBY, RETIRED, REJECTED)


@dataclass(frozen=True)
class Artifact:
    path: str
    sha256: str
    claim_name: str | None = None


@dataclass(frozen=True)
class ModelVersion:
    name: str
    namespace: str
    model_name: str
    version: int
    artifact: Artifact
    metrics: Mapping[str, float] = field(default_factory=dict)
    metric: str = ""
    lineage: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        return self.status.get("phase") or REGISTERED

    @property
    def rejected(self) -> bool:
        return self.phase == REJECTED


def version_name(model_name: str, version: int) -> str:
    """`<model>-v<version>`: the ModelVersion's name, and its Deployment's."""
    return f"{model_name}-v{version}"


def model_selector(model_name: str) -> str:
    return f"{MODEL_LABEL}={model_name}"


def parse_model_version(obj: Mapping[str, Any]) -> ModelVersion:
    """Parse a ModelVersion as the API server returns it, or raise ``SpecError``."""
    meta = obj.get("metadata") or {}
    spec = Fields(obj.get("spec"), "spec")
    artifact = spec.child("artifact", required=True)
    version = spec.integer("version", default=None, minimum=1)
    if version is None:
        raise SpecError("spec.version", "is required")
    metrics = spec.mapping("metrics")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"spec.metrics.{key}", f"must be a number, got {value!r}")
    return ModelVersion(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", "default"),
        model_name=spec.string("modelName", required=True),
        version=version,
        artifact=Artifact(
            path=artifact.string("path", required=True),
            sha256=artifact.string("sha256") or "",
            claim_name=artifact.string("claimName"),
        ),
        metrics={k: float(v) for k, v in metrics.items()},
        metric=spec.string("metric") or "",
        lineage=spec.mapping("lineage"),
        status=dict(obj.get("status") or {}),
    )
