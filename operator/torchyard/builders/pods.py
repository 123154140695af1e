"""Pods and the headless Service of a TrainingJob, as plain manifest dicts."""

from __future__ import annotations

from typing import Any, Mapping

from torchyard import labels
from torchyard.api.trainingjob import RoleSpec, TrainingJob
from torchyard.builders import gang, names
from torchyard.builders.env import pod_env, storage_secret_env
from torchyard.builders.security import container_security_context, pod_security_context
from torchyard.builders.strategies import Role, strategy_for
from torchyard.settings import Settings
from torchyard_spec import contract
from torchyard_spec.topology import Network

CONTAINER = "trainer"
GPU_RESOURCE = "nvidia.com/gpu"
DATA_VOLUME = "torchyard-data"
DATA_MOUNT = "/var/lib/torchyard"
BUNDLED_COMMAND = ("python", "-m", "torchyard_trainer")


def pod_labels(job_name: str, role: str, index: int, attempt: int) -> dict[str, str]:
    return {
        labels.JOB_NAME: job_name,
        labels.ROLE: role,
        labels.INDEX: str(index),
        labels.ATTEMPT: str(attempt),
        labels.MANAGED_BY: labels.MANAGER,
    }


def build_service(job: TrainingJob) -> dict:
    """One headless Service per job: stable DNS for every pod, ready or not (rendezvous needs it)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.service_name(job.name),
            "namespace": job.namespace,
            "labels": {labels.JOB_NAME: job.name, labels.MANAGED_BY: labels.MANAGER},
            "ownerReferences": [job.owner_reference()],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {labels.JOB_NAME: job.name},
            "ports": [{"name": "dist", "port": contract.DEFAULT_MASTER_PORT, "targetPort": contract.DEFAULT_MASTER_PORT}],
        },
    }


def build_pods(job: TrainingJob, attempt: int, settings: Settings, trainer_config: Mapping[str, Any] | None = None,
               network: Network | None = None) -> list[dict]:
    """Every pod of the job, in rank order."""
    return [
        build_pod(job, role, index, attempt, settings, trainer_config, network)
        for role in strategy_for(job.spec).roles(job.spec)
        for index in range(role.spec.replicas)
    ]


def build_pod(
    job: TrainingJob,
    role: Role,
    index: int,
    attempt: int,
    settings: Settings,
    trainer_config: Mapping[str, Any] | None = None,
    network: Network | None = None,
) -> dict:
    spec = role.spec
    name = names.pod_name(job.name, role.name, index)
    env = pod_env(job, role, index, attempt, settings, trainer_config, network)
    pod_spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": names.service_name(job.name),
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [_container(job, spec, env, settings)],
        "volumes": _volumes(job, spec),
    }
    _place(pod_spec, spec, settings)
    if job.spec.run_policy.gang_scheduling:
        gang.link_pod(pod_spec, job)
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": job.namespace,
        # The role's own labels first: the operator's identity labels always win.
        "labels": {**spec.pod_labels, **pod_labels(job.name, role.name, index, attempt)},
        "ownerReferences": [job.owner_reference()],
    }
    if spec.pod_annotations:
        metadata["annotations"] = dict(spec.pod_annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _container(job: TrainingJob, spec: RoleSpec, env: contract.PodEnv, settings: Settings) -> dict:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or job.spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        **_command(spec),
        "env": [{"name": k, "value": v} for k, v in env.to_environ().items()]
        + storage_secret_env(job.spec.storage.secret_name) + [dict(e) for e in spec.env],
        "ports": [
            {"name": "dist", "containerPort": contract.DEFAULT_MASTER_PORT},
            {"name": "metrics", "containerPort": contract.DEFAULT_METRICS_PORT},
        ],
        "resources": _resources(spec),
        "securityContext": container_security_context(spec.security_context),
        "terminationMessagePath": contract.DEFAULT_RESULT_PATH,
        # If the process dies before writing its result, the log tail becomes the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ]
        + [dict(m) for m in spec.volume_mounts],
    }
    if spec.args:
        container["args"] = list(spec.args)
    return container


def _command(spec: RoleSpec) -> dict:
    """The role's command; none for its own image without one, so the image's ENTRYPOINT runs."""
    if spec.command:
        return {"command": list(spec.command)}
    return {} if spec.image else {"command": list(BUNDLED_COMMAND)}


def _resources(spec: RoleSpec) -> dict:
    # Quantities are strings in the API ("1", "500m"); YAML may have given numbers.
    resources = {k: {name: str(q) for name, q in v.items()} for k, v in spec.resources.items() if k in ("limits", "requests")}
    if spec.gpus > 0:
        # Extended resources are set as limits; the API server copies them to requests.
        resources.setdefault("limits", {})[GPU_RESOURCE] = str(spec.gpus)
    return resources


def _volumes(job: TrainingJob, spec: RoleSpec) -> list[dict]:
    claim = job.spec.storage.claim_name
    data = {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim}} if claim else {"name": DATA_VOLUME, "emptyDir": {}}
    return [data, {"name": "tmp", "emptyDir": {}}, {"name": "dshm", "emptyDir": {"medium": "Memory"}}] + [
        dict(v) for v in spec.volumes
    ]


def _place(pod_spec: dict, spec: RoleSpec, settings: Settings) -> None:
    """GPU pods go to GPU nodes by default; a role's own nodeSelector/tolerations replace the defaults."""
    gpu = spec.gpus > 0
    node_selector = spec.node_selector if spec.node_selector is not None else (settings.gpu_node_selector if gpu else {})
    tolerations = spec.tolerations if spec.tolerations is not None else (settings.gpu_tolerations if gpu else ())
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)
