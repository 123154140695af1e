"""The contract's environment for one pod of a job."""

from __future__ import annotations

from typing import Any, Mapping

from torchyard import progress
from torchyard.api.trainingjob import TrainingJob
from torchyard.builders import names
from torchyard.builders.strategies import Role, strategy_for
from torchyard.settings import Settings
from torchyard_spec import contract


def pod_env(
    job: TrainingJob,
    role: Role,
    index: int,
    attempt: int,
    settings: Settings,
    trainer_config: Mapping[str, Any] | None = None,
) -> contract.PodEnv:
    spec = job.spec
    strategy = strategy_for(spec)
    roles = {r.name: r for r in strategy.roles(spec)}
    master_role, master_index = strategy.master(spec)

    def addresses(role_name: str) -> tuple[str, ...]:
        r = roles.get(role_name)
        if r is None:
            return ()
        return tuple(
            f"{names.pod_address(job, role_name, i)}:{contract.DEFAULT_MASTER_PORT}" for i in range(r.spec.replicas)
        )

    progress_url = token = ""
    if settings.progress_url_base:
        progress_url = settings.progress_url_base + progress.progress_path(job.namespace, job.name)
        token = progress.job_token(settings.progress_key, job.namespace, job.name, job.uid)

    ps = roles.get(contract.ROLE_PARAMETER_SERVER)
    return contract.PodEnv(
        job_name=job.name,
        namespace=job.namespace,
        strategy=spec.strategy,
        role=role.name,
        role_index=index,
        master_addr=names.pod_address(job, master_role, master_index),
        master_port=contract.DEFAULT_MASTER_PORT,
        world_size=spec.world_size,
        rank=role.rank_of(index),
        local_world_size=role.spec.processes,
        num_workers=spec.worker.replicas,
        num_parameter_servers=ps.spec.replicas if ps else 0,
        worker_addresses=addresses(contract.ROLE_WORKER),
        parameter_server_addresses=addresses(contract.ROLE_PARAMETER_SERVER),
        checkpoint_dir=f"{spec.storage.checkpoint_dir.rstrip('/')}/{names.run_id(job)}",
        model_dir=f"{spec.storage.model_dir.rstrip('/')}/{names.model_name(job)}/{names.run_id(job)}",
        model_name=names.model_name(job),
        trainer_config=dict(spec.trainer if trainer_config is None else trainer_config),
        attempt=attempt,
        metrics_port=contract.DEFAULT_METRICS_PORT,
        progress_url=progress_url,
        progress_token=token,
        result_path=contract.DEFAULT_RESULT_PATH,
    )
