"""Who this process is in the job, joining the process group, and the random state it owns.

Ranks follow docs/contract.md: parameter-server processes take ranks ``0..P-1``, workers the rest.
A pod may run several processes (one per GPU); the k-th gets rank ``RANK + k``.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from torchyard_spec.contract import ROLE_PARAMETER_SERVER, ROLE_WORKER, STRATEGY_PARAMETER_SERVER, PodEnv
from torchyard_spec.topology import parameter_server_processes, worker_ranks
from torchyard_trainer.errors import UserError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "TORCHYARD_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 600.0
LOCAL_RANK_ENV = "LOCAL_RANK"


def timeout_seconds() -> float:
    """How long any blocking exchange may wait for a peer before the peer counts as lost."""
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS))


@dataclass(frozen=True)
class Process:
    """One process of the job: its global rank, role and the shape of the whole gang."""

    env: PodEnv
    rank: int
    local_rank: int
    world_size: int
    role: str
    parameter_servers: int  # processes, not pods

    @classmethod
    def from_env(cls, env: PodEnv, local_rank: int = 0) -> "Process":
        if env.role not in (ROLE_WORKER, ROLE_PARAMETER_SERVER):
            raise UserError("spec", f"unknown role {env.role!r} in the pod environment")
        servers = parameter_server_processes(env)
        if env.strategy == STRATEGY_PARAMETER_SERVER and servers < 1:
            raise UserError("spec.parameterServer.replicas", "the ParameterServer strategy needs at least one")
        return cls(env=env, rank=env.rank + local_rank, local_rank=local_rank,
                   world_size=env.world_size, role=env.role, parameter_servers=servers)

    @property
    def is_parameter_server(self) -> bool:
        return self.role == ROLE_PARAMETER_SERVER

    @property
    def worker_ranks(self) -> range:
        return worker_ranks(self.parameter_servers, self.world_size)

    @property
    def workers(self) -> int:
        return len(self.worker_ranks)

    @property
    def worker_index(self) -> int:
        """0-based position among worker processes (the data shard this process reads)."""
        return self.rank - self.lead_rank

    @property
    def lead_rank(self) -> int:
        """Global rank of worker 0: it evaluates, checkpoints, reports and saves the model."""
        return self.worker_ranks.start

    @property
    def is_lead(self) -> bool:
        return not self.is_parameter_server and self.rank == self.lead_rank

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available() and not self.is_parameter_server:
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")

    @property
    def backend(self) -> str:
        """nccl for GPU all-reduce; gloo otherwise (parameter-server traffic is CPU tensors)."""
        if torch.cuda.is_available() and self.parameter_servers == 0:
            return "nccl"
        return "gloo"


def join(process: Process) -> None:
    """Join the job's process group at MASTER_ADDR:MASTER_PORT."""
    if process.device.type == "cuda":
        torch.cuda.set_device(process.device)
    env = process.env
    log.info("joining %s process group at %s:%d as rank %d of %d",
             process.backend, env.master_addr, env.master_port, process.rank, process.world_size)
    dist.init_process_group(
        process.backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=process.rank,
        world_size=process.world_size,
        timeout=datetime.timedelta(seconds=timeout_seconds()),
    )


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, so every process builds the same initial model.

    cuDNN is also held to deterministic kernels, so a GPU run repeats like a CPU run does.
    """
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's random state, for a checkpoint."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
