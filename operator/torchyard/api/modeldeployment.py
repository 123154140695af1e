"""The ModelDeployment resource as typed values, parsed once at the edge.

A ModelDeployment serves one model: which of its ModelVersions takes traffic (pinned, or the
newest that passes the promotion gate), how many replicas each served version runs, how many
previous versions stay warm, and when traffic fails over. crds/modeldeployment.yaml is the
schema the API server enforces; parsing repeats the checks the operator relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from torchyard.api.errors import SpecError
from torchyard.api.meta import owner_reference
from torchyard.api.fields import Fields
from torchyard.api.trainingjob import GROUP, VERSION

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

PINNED, LATEST_PASSING = "Pinned", "LatestPassing"
POLICIES = (LATEST_PASSING, PINNED)
SCALE_TO_ZERO, DELETE = "ScaleToZero", "Delete"
RETIRE_POLICIES = (SCALE_TO_ZERO, DELETE)
DEFAULT_PORT = 8080
# Bounds of adaptive batching, as the CRD has them: rows per pass (the server's per-request limit) and 1 s of wait.
MAX_BATCH_SIZE, MAX_BATCH_WAIT_MS = 1024, 1000
# The model name becomes a Service and Deployment name (`<model>`, `<model>-v<version>`).
MODEL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,48}[a-z0-9])?$")
# Metrics where a smaller value is better; any other metric is better when larger.
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error")


def higher_is_better(metric: str) -> bool:
    """accuracy: higher; loss, mse, mae (and names containing them): lower."""
    name = metric.lower()
    return not any(word in name for word in LOWER_IS_BETTER)


@dataclass(frozen=True)
class Gate:
    metric: str | None = None  # None: each candidate's own main metric
    max_regression: float = 0.0
    higher_is_better: bool | None = None  # None: derived from the metric's name

    def better_is_higher(self, metric: str) -> bool:
        return higher_is_better(metric) if self.higher_is_better is None else self.higher_is_better


@dataclass(frozen=True)
class Failover:
    min_ready_replicas: int = 1
    grace_period_seconds: float = 1.0
    crash_loop_restarts: int = 3


@dataclass(frozen=True)
class Batching:
    """Adaptive batching in the model server; a max_batch_size of 1 means none."""

    max_batch_size: int = 1
    max_wait_milliseconds: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


@dataclass(frozen=True)
class Server:
    image: str | None = None
    image_pull_policy: str | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    batching: Batching = Batching()


@dataclass(frozen=True)
class Verification:
    """A golden request sent to a version before traffic switches to it."""

    golden_request: Mapping[str, Any] | None = None
    expected_output: Mapping[str, Any] | None = None  # output name -> expected data
    tolerance: float = 1e-4
    timeout_seconds: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.golden_request is not None


@dataclass(frozen=True)
class ModelDeploymentSpec:
    model_name: str
    policy: str = LATEST_PASSING
    active_version: int | None = None
    gate: Gate = Gate()
    replicas: int = 1
    standby: int = 1
    retired_versions: str = SCALE_TO_ZERO
    failover: Failover = Failover()
    claim_name: str | None = None
    storage_secret: str | None = None  # credentials of s3:// artifacts, as AWS_* keys
    server: Server = Server()
    verification: Verification = Verification()

    @property
    def floor(self) -> int:
        """Ready replicas a version needs to take (or keep) traffic."""
        return min(self.failover.min_ready_replicas, self.replicas)


@dataclass(frozen=True)
class ModelDeployment:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelDeploymentSpec

    def owner_reference(self) -> dict:
        return owner_reference(API_VERSION, KIND, self.name, self.uid)


def parse_model_deployment(obj: Mapping[str, Any]) -> ModelDeployment:
    """Parse a ModelDeployment object, or raise ``SpecError`` naming the field."""
    meta = obj.get("metadata") or {}
    root = Fields(obj.get("spec"), "spec")
    model_name = root.string("modelName", required=True)
    if not MODEL_NAME.match(model_name):
        raise SpecError("spec.modelName", f"must be a DNS label of at most 50 characters (a-z, 0-9, -), got {model_name!r}")
    policy = root.enum("policy", POLICIES, default=LATEST_PASSING)
    active = root.integer("activeVersion", default=None, minimum=1)
    if policy == PINNED and active is None:
        raise SpecError("spec.activeVersion", "is required when spec.policy is Pinned")
    replicas = root.integer("replicas", default=1, minimum=1)
    failover = _parse_failover(root.child("failover"))
    if failover.min_ready_replicas > replicas:
        raise SpecError("spec.failover.minReadyReplicas", f"must be <= spec.replicas ({replicas}), got {failover.min_ready_replicas}")
    spec = ModelDeploymentSpec(
        model_name=model_name,
        policy=policy,
        active_version=active,
        gate=_parse_gate(root.child("gate")),
        replicas=replicas,
        standby=root.integer("standby", default=1, minimum=0),
        retired_versions=root.enum("retiredVersions", RETIRE_POLICIES, default=SCALE_TO_ZERO),
        failover=failover,
        claim_name=root.child("storage").string("claimName"),
        storage_secret=root.child("storage").string("secretName"),
        server=_parse_server(root.child("server")),
        verification=_parse_verification(root.child("verification")),
    )
    return ModelDeployment(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        spec=spec,
    )


def _parse_gate(f: Fields) -> Gate:
    higher = f.data.get("higherIsBetter")
    if higher is not None and not isinstance(higher, bool):
        raise SpecError("spec.gate.higherIsBetter", f"must be true or false, got {higher!r}")
    return Gate(
        metric=f.string("metric"),
        max_regression=float(f.number("maxRegression", default=0.0, minimum=0.0)),
        higher_is_better=higher,
    )


def _parse_failover(f: Fields) -> Failover:
    return Failover(
        min_ready_replicas=f.integer("minReadyReplicas", default=1, minimum=1),
        grace_period_seconds=float(f.number("gracePeriodSeconds", default=1.0, minimum=0.0)),
        crash_loop_restarts=f.integer("crashLoopRestarts", default=3, minimum=1),
    )


def _parse_server(f: Fields) -> Server:
    port = f.integer("port", default=DEFAULT_PORT, minimum=1)
    if port > 65535:
        raise SpecError("spec.server.port", f"must be <= 65535, got {port}")
    return Server(
        image=f.string("image"),
        image_pull_policy=f.enum("imagePullPolicy", ("Always", "IfNotPresent", "Never"), default="") or None,
        resources=f.mapping("resources"),
        port=port,
        node_selector=f.mapping("nodeSelector"),
        tolerations=f.list_of_mappings("tolerations", default=()),
        batching=_parse_batching(f.child("batching")),
    )


def _parse_batching(f: Fields) -> Batching:
    size = f.integer("maxBatchSize", default=1, minimum=1)
    if size > MAX_BATCH_SIZE:
        raise SpecError(f"{f.path}.maxBatchSize", f"must be <= {MAX_BATCH_SIZE}, got {size}")
    wait = float(f.number("maxWaitMilliseconds", default=0.0, minimum=0.0))
    if wait > MAX_BATCH_WAIT_MS:
        raise SpecError(f"{f.path}.maxWaitMilliseconds", f"must be <= {MAX_BATCH_WAIT_MS}, got {wait:g}")
    return Batching(max_batch_size=size, max_wait_milliseconds=wait)


def _parse_verification(f: Fields) -> Verification:
    request = f.mapping("goldenRequest", default=None)
    expected = f.mapping("expectedOutput", default=None)
    if expected is not None and request is None:
        raise SpecError("spec.verification.expectedOutput", "needs spec.verification.goldenRequest")
    return Verification(
        golden_request=request,
        expected_output=expected,
        tolerance=float(f.number("tolerance", default=1e-4, minimum=0.0)),
        timeout_seconds=float(f.number("timeoutSeconds", default=1.0, minimum=0.0, exclusive_minimum=True)),
    )
