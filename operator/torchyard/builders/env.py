"""The contract's environment for one pod of a job."""

from __future__ import annotations

from typing import Any, Mapping

from torchyard import progress
from torchyard.api.trainingjob import TrainingJob
from torchyard.builders import names
from torchyard.builders.strategies import Role
from torchyard.settings import Settings
from torchyard_spec import contract
from torchyard_spec.topology import Network


def cluster_network(job: TrainingJob) -> Network:
    """Pods reach each other by their stable DNS names under the job's headless Service."""
    return Network(lambda role, index: names.pod_address(job, role, index), contract.DEFAULT_MASTER_PORT)


def pod_env(
    job: TrainingJob,
    role: Role,
    index: int,
    attempt: int,
    settings: Settings,
    trainer_config: Mapping[str, Any] | None = None,
    network: Network | None = None,
) -> contract.PodEnv:
    """``network`` defaults to the cluster's; ``torchyard run`` passes loopback addresses."""
    spec = job.spec
    progress_url = token = ""
    if settings.progress_url_base:
        progress_url = settings.progress_url_base + progress.progress_path(job.namespace, job.name)
        token = progress.job_token(settings.progress_key, job.namespace, job.name, job.uid)
    return spec.topology.pod_env(
        role.members[index],
        network or cluster_network(job),
        job_name=job.name,
        namespace=job.namespace,
        checkpoint_dir=spec.storage.checkpoints(names.run_id(job)),
        model_dir=spec.storage.artifact(names.model_name(job), names.run_id(job)),
        model_name=names.model_name(job),
        trainer_config=dict(spec.trainer if trainer_config is None else trainer_config),
        attempt=attempt,
        metrics_port=contract.DEFAULT_METRICS_PORT,
        progress_url=progress_url,
        progress_token=token,
        result_path=contract.DEFAULT_RESULT_PATH,
    )


def storage_secret_env(secret_name: str | None) -> list[dict]:
    """The S3 connection of spec.storage.secretName, each variable a reference to the Secret's key
    of the same name (the values never enter the pod spec); the region may be left out."""
    if not secret_name:
        return []
    return [_secret_key(secret_name, key) for key in contract.S3_REQUIRED_KEYS] + [
        _secret_key(secret_name, contract.S3_REGION, optional=True)]


def _secret_key(secret_name: str, key: str, optional: bool = False) -> dict:
    ref: dict = {"name": secret_name, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}
