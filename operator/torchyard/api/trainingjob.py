"""The TrainingJob resource as typed values, parsed once at the edge.

The CRD's OpenAPI schema (crds/trainingjob.yaml) rejects most bad specs at admission; parsing here
repeats the checks that matter so that an object which slipped past an older schema, or a
`torchyard run` file that never met an API server, fails with the same field-naming message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from torchyard.api.errors import SpecError
from torchyard.api.meta import owner_reference
from torchyard.api.fields import Fields
from torchyard_spec import contract
from torchyard_spec.errors import FieldError
from torchyard_spec.topology import Topology, processes_per_pod
from torchyard_spec.trainer import TrainerConfig, parse_trainer

# Bounds of runPolicy.progressDeadlineSeconds: above the trainer's report interval, at most a week.
PROGRESS_DEADLINE_MIN, PROGRESS_DEADLINE_MAX = 10, 604800
GROUP = "torchyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
# spec.runPolicy.managedBy naming this operator (as unset does); any other value leaves the job to
# that controller (e.g. kueue.x-k8s.io/multikueue), as Kubernetes Jobs' spec.managedBy does.
CONTROLLER_NAME = "torchyard.dev/operator"

STRATEGIES = (contract.STRATEGY_ALLREDUCE, contract.STRATEGY_PARAMETER_SERVER)
RESTART_POLICIES = ("OnFailure", "ExitCode", "Never")
RESTART_SCOPES = ("Gang", "Pod")
CLEAN_POD_POLICIES = ("Running", "All", "None")
# Every pod's env lists the address of every pod, so a role's size is bounded (the CRD says the same).
MAX_REPLICAS = 1000
MAX_GPUS = 64
MAX_PROCESSES = 64
# Pod label and annotation keys a role may not set: the operator's identity labels and the queue's.
RESERVED_KEY_PREFIXES = ("torchyard.dev/", "kueue.x-k8s.io/")
RESERVED_LABELS = ("app.kubernetes.io/managed-by",)
SECURITY_CONTEXT_FIELDS = {"runAsUser": int, "runAsGroup": int, "runAsNonRoot": bool, "readOnlyRootFilesystem": bool}



@dataclass(frozen=True)
class RoleSpec:
    """One role's pods: how many, where they run, and what they run."""

    replicas: int
    gpus: int = 0
    resources: Mapping[str, Any] = field(default_factory=dict)
    node_selector: Mapping[str, str] | None = None  # None: the operator's default applies
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    affinity: Mapping[str, Any] | None = None
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    service_account_name: str | None = None
    priority_class_name: str | None = None
    nproc_per_node: int | None = None  # None: one process per GPU, one without GPUs
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    image_pull_secrets: tuple[str, ...] = ()
    # Fields of template.securityContext; honoured only where the operator's settings allow it.
    security_context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def processes(self) -> int:
        return processes_per_pod(self.gpus, self.nproc_per_node)

    @property
    def custom(self) -> bool:
        """True when the user brings their own command or image instead of the bundled trainer."""
        return bool(self.command) or bool(self.image)


@dataclass(frozen=True)
class RunPolicy:
    backoff_limit: int = 3
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    clean_pod_policy: str = "Running"
    suspend: bool = False
    restart_policy: str = "OnFailure"
    restart_scope: str = "Gang"
    startup_deadline_seconds: int | None = None
    progress_deadline_seconds: int | None = None
    managed_by: str | None = None  # None: this operator (CONTROLLER_NAME)
    gang_scheduling: bool = False  # all pods bound together or none (builders/gang.py)


@dataclass(frozen=True)
class Storage:
    """Where checkpoints and model artifacts live: a PVC shared by every pod, S3-compatible object
    storage (``uri``, with endpoint and credentials in the Secret ``secret_name``), or an emptyDir."""

    claim_name: str | None = None
    checkpoint_dir: str = contract.DEFAULT_CHECKPOINT_DIR
    model_dir: str = contract.DEFAULT_MODEL_DIR
    uri: str | None = None
    secret_name: str | None = None

    def checkpoints(self, run: str) -> str:
        """The run's checkpoint directory or location."""
        if self.uri:
            return f"{self.uri.rstrip('/')}/{contract.S3_CHECKPOINTS}/{run}"
        return f"{self.checkpoint_dir.rstrip('/')}/{run}"

    def artifact(self, model: str, run: str) -> str:
        """Where the run's model artifact is written."""
        base = f"{self.uri.rstrip('/')}/{contract.S3_MODELS}" if self.uri else self.model_dir.rstrip("/")
        return f"{base}/{model}/{run}"


@dataclass(frozen=True)
class TrainingJobSpec:
    strategy: str
    worker: RoleSpec
    parameter_server: RoleSpec | None
    run_policy: RunPolicy
    storage: Storage
    trainer: Mapping[str, Any]  # as the user wrote it; the pods receive it as JSON
    image: str | None
    model_name: str | None
    trainer_settings: TrainerConfig | None = None  # None when every role runs its own command

    def role(self, name: str) -> RoleSpec:
        """The spec of a role by its contract name (``worker`` or ``ps``)."""
        return self.parameter_server if name == contract.ROLE_PARAMETER_SERVER else self.worker

    @property
    def topology(self) -> Topology:
        """Ranks, roles and the rendezvous pod, laid out by the one rule the trainer also uses."""
        ps = self.parameter_server
        return Topology.of(self.worker.replicas, ps.replicas if ps else 0, worker_processes=self.worker.processes,
                           parameter_server_processes=ps.processes if ps else 1, strategy=self.strategy)

    @property
    def world_size(self) -> int:
        return self.topology.world_size


@dataclass(frozen=True)
class TrainingJob:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: TrainingJobSpec
    labels: Mapping[str, str] = field(default_factory=dict)

    def owner_reference(self) -> dict:
        return owner_reference(API_VERSION, KIND, self.name, self.uid)


def managed_elsewhere(obj: Mapping[str, Any]) -> str | None:
    """The controller named by spec.runPolicy.managedBy when it is not this operator (which then
    leaves the job alone, even a malformed one); None when the job is this operator's."""
    run_policy = ((obj.get("spec") or {}).get("runPolicy") or {}) if isinstance(obj.get("spec"), Mapping) else {}
    manager = run_policy.get("managedBy") if isinstance(run_policy, Mapping) else None
    return manager if isinstance(manager, str) and manager not in ("", CONTROLLER_NAME) else None


def parse_training_job(obj: Mapping[str, Any]) -> TrainingJob:
    """Parse a TrainingJob object (as the API server returns it) or raise ``SpecError``."""
    meta = obj.get("metadata") or {}
    root = Fields(obj.get("spec"), "spec")
    strategy = root.enum("strategy", STRATEGIES, default=contract.STRATEGY_ALLREDUCE)
    worker = _parse_role(root.child("worker", required=True), min_replicas=1)
    ps_fields = root.child("parameterServer")
    parameter_server = _parse_role(ps_fields, min_replicas=1) if ps_fields.present else None
    if strategy == contract.STRATEGY_PARAMETER_SERVER and parameter_server is None:
        raise SpecError("spec.parameterServer", "is required when spec.strategy is ParameterServer")
    if strategy == contract.STRATEGY_ALLREDUCE and parameter_server is not None:
        raise SpecError("spec.parameterServer", "must be omitted when spec.strategy is AllReduce")
    image = root.string("image")
    trainer = root.mapping("trainer")
    uses_bundled = not worker.custom or (parameter_server is not None and not parameter_server.custom)
    spec = TrainingJobSpec(
        strategy=strategy,
        worker=worker,
        parameter_server=parameter_server,
        run_policy=_parse_run_policy(root.child("runPolicy"), strategy),
        storage=_parse_storage(root.child("storage")),
        trainer=dict(trainer),
        trainer_settings=_parse_trainer(trainer) if uses_bundled else None,
        image=image,
        model_name=root.string("modelName"),
    )
    return TrainingJob(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        labels=dict(meta.get("labels") or {}),
    )


def _parse_role(f: Fields, min_replicas: int) -> RoleSpec:
    template = f.child("template")
    metadata = template.child("metadata")
    return RoleSpec(
        replicas=f.integer("replicas", default=1, minimum=min_replicas, maximum=MAX_REPLICAS),
        gpus=f.integer("gpus", default=0, minimum=0, maximum=MAX_GPUS),
        resources=f.mapping("resources"),
        node_selector=f.mapping("nodeSelector", default=None),
        tolerations=f.list_of_mappings("tolerations", default=None),
        affinity=f.mapping("affinity", default=None),
        nproc_per_node=f.integer("nprocPerNode", default=None, minimum=1, maximum=MAX_PROCESSES),
        image=template.string("image"),
        command=tuple(template.string_list("command")),
        args=tuple(template.string_list("args")),
        env=template.list_of_mappings("env", default=()),
        volumes=template.list_of_mappings("volumes", default=()),
        volume_mounts=template.list_of_mappings("volumeMounts", default=()),
        service_account_name=template.string("serviceAccountName"),
        priority_class_name=template.string("priorityClassName"),
        pod_labels=_pod_metadata(metadata, "labels", RESERVED_LABELS),
        pod_annotations=_pod_metadata(metadata, "annotations", ()),
        image_pull_secrets=_pull_secrets(template),
        security_context=_security_context(template.child("securityContext")),
    )


def _pod_metadata(f: Fields, key: str, reserved: tuple[str, ...]) -> dict[str, str]:
    """Labels or annotations for the role's pods, with the operator's and the queue's keys refused."""
    values = f.mapping(key)
    for name, value in values.items():
        if name.startswith(RESERVED_KEY_PREFIXES) or name in reserved:
            raise SpecError(f"{f.path}.{key}", f"must not set {name!r}: keys under {' and '.join(RESERVED_KEY_PREFIXES)}"
                            f"{', and ' + ', '.join(reserved) if reserved else ''} are set by the operator and the queue")
        if not isinstance(value, str):
            raise SpecError(f"{f.path}.{key}.{name}", f"must be a string, got {value!r}")
    return values


def _pull_secrets(template: Fields) -> tuple[str, ...]:
    secrets = template.list_of_mappings("imagePullSecrets", default=())
    for index, secret in enumerate(secrets):
        if not isinstance(secret.get("name"), str) or not secret["name"]:
            raise SpecError(f"{template.path}.imagePullSecrets[{index}].name", "is required: the name of a Secret")
    return tuple(s["name"] for s in secrets)


def _security_context(f: Fields) -> dict[str, Any]:
    """The fields of template.securityContext that were set, type-checked."""
    out: dict[str, Any] = {}
    for key, kind in SECURITY_CONTEXT_FIELDS.items():
        value = f.integer(key, default=None, minimum=0) if kind is int else f.boolean(key, default=None)
        if value is not None:
            out[key] = value
    unknown = sorted(set(f.data) - set(SECURITY_CONTEXT_FIELDS))
    if unknown:
        raise SpecError(f"{f.path}.{unknown[0]}", f"is not supported; allowed: {', '.join(SECURITY_CONTEXT_FIELDS)}")
    return out


def _parse_run_policy(f: Fields, strategy: str) -> RunPolicy:
    return RunPolicy(
        backoff_limit=f.integer("backoffLimit", default=3, minimum=0),
        active_deadline_seconds=f.integer("activeDeadlineSeconds", default=None, minimum=1),
        ttl_seconds_after_finished=f.integer("ttlSecondsAfterFinished", default=None, minimum=0),
        clean_pod_policy=f.enum("cleanPodPolicy", CLEAN_POD_POLICIES, default="Running"),
        suspend=f.boolean("suspend", default=False),
        restart_policy=f.enum("restartPolicy", RESTART_POLICIES, default="OnFailure"),
        restart_scope=f.enum("restartScope", RESTART_SCOPES, default="Gang"),
        startup_deadline_seconds=f.integer("startupDeadlineSeconds", default=None, minimum=1),
        managed_by=f.string("managedBy"),
        progress_deadline_seconds=f.integer("progressDeadlineSeconds", default=None, minimum=PROGRESS_DEADLINE_MIN,
                                            maximum=PROGRESS_DEADLINE_MAX),
        gang_scheduling=f.boolean("gangScheduling", default=False),
    )


def _parse_storage(f: Fields) -> Storage:
    storage = Storage(
        claim_name=f.string("claimName"),
        checkpoint_dir=f.string("checkpointDir") or contract.DEFAULT_CHECKPOINT_DIR,
        model_dir=f.string("modelDir") or contract.DEFAULT_MODEL_DIR,
        uri=f.string("uri"),
        secret_name=f.string("secretName"),
    )
    if storage.uri is not None and not re.match(contract.S3_URI_PATTERN, storage.uri):
        raise SpecError(f"{f.path}.uri", f"must be s3://<bucket>[/<prefix>] with an S3 bucket name, got {storage.uri!r}")
    if storage.uri and storage.claim_name:
        raise SpecError(f"{f.path}.uri", "and spec.storage.claimName exclude each other: checkpoints and the "
                        "artifact go either to object storage or to a claim")
    if bool(storage.uri) != bool(storage.secret_name):
        raise SpecError(f"{f.path}.secretName", "is required with spec.storage.uri, and only with it: it names the "
                        "Secret holding the store's endpoint and credentials")
    return storage


def _parse_trainer(raw: Mapping[str, Any]) -> TrainerConfig:
    """The bundled trainer's settings, by the parser the trainer itself runs on the same JSON."""
    try:
        return parse_trainer(raw)
    except FieldError as exc:
        raise SpecError(exc.field, exc.problem) from None
