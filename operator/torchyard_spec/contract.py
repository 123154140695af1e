"""The contract between the operator and the processes in its pods.

This module is the single definition of that contract: the operator's builders write these
variables into every training container, and the bundled trainer reads them back with
:func:`PodEnv.from_environ`. It imports nothing outside the standard library, so the trainer
image can use it without pulling in kopf or the Kubernetes client. docs/contract.md explains each
variable for users who bring their own script.

Which pod gets which rank, role and address is decided in one place,
:mod:`torchyard_spec.topology`; this module only names the variables and carries their values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

# torch.distributed's standard variables, the ones plain PyTorch scripts read.
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
WORLD_SIZE = "WORLD_SIZE"
RANK = "RANK"
LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
GROUP_RANK = "GROUP_RANK"

# What torchrun reads when a script is launched as `torchrun <script>` with no flags.
PET_NNODES = "PET_NNODES"
PET_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
PET_NODE_RANK = "PET_NODE_RANK"
PET_MASTER_ADDR = "PET_MASTER_ADDR"
PET_MASTER_PORT = "PET_MASTER_PORT"

# torchyard's own.
JOB_NAME = "TORCHYARD_JOB_NAME"
NAMESPACE = "TORCHYARD_NAMESPACE"
STRATEGY = "TORCHYARD_STRATEGY"
ROLE = "TORCHYARD_ROLE"
ROLE_INDEX = "TORCHYARD_ROLE_INDEX"
NUM_WORKERS = "TORCHYARD_NUM_WORKERS"
NUM_PARAMETER_SERVERS = "TORCHYARD_NUM_PARAMETER_SERVERS"
WORKER_ADDRESSES = "TORCHYARD_WORKER_ADDRESSES"
PARAMETER_SERVER_ADDRESSES = "TORCHYARD_PARAMETER_SERVER_ADDRESSES"
CHECKPOINT_DIR = "TORCHYARD_CHECKPOINT_DIR"
MODEL_DIR = "TORCHYARD_MODEL_DIR"
MODEL_NAME = "TORCHYARD_MODEL_NAME"
TRAINER_CONFIG = "TORCHYARD_TRAINER_CONFIG"
ATTEMPT = "TORCHYARD_ATTEMPT"
METRICS_PORT = "TORCHYARD_METRICS_PORT"
PROGRESS_URL = "TORCHYARD_PROGRESS_URL"
PROGRESS_TOKEN = "TORCHYARD_PROGRESS_TOKEN"
RESULT_PATH = "TORCHYARD_RESULT_PATH"

ROLE_WORKER = "worker"
ROLE_PARAMETER_SERVER = "ps"

STRATEGY_ALLREDUCE = "AllReduce"
STRATEGY_PARAMETER_SERVER = "ParameterServer"

DEFAULT_MASTER_PORT = 23456
DEFAULT_METRICS_PORT = 9090
DEFAULT_CHECKPOINT_DIR = "/var/lib/torchyard/checkpoints"
DEFAULT_MODEL_DIR = "/var/lib/torchyard/models"
# Kubernetes reads a terminated container's message from here; the operator needs no log access.
DEFAULT_RESULT_PATH = "/dev/termination-log"
# A termination message is cut by the kubelet at 4096 bytes; the trainer stays below it.
RESULT_MAX_BYTES = 4096

# S3-compatible storage (spec.storage.uri): the variables every S3 tool reads. They are also the keys
# of the Secret that spec.storage.secretName names, which the operator passes into training and
# model-server pods key by key (secretKeyRef), never by value. Required keys first; the region is
# optional (default us-east-1).
S3_ENDPOINT = "AWS_ENDPOINT_URL"
S3_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
S3_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
S3_REGION = "AWS_REGION"
S3_REQUIRED_KEYS = (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY)
S3_DEFAULT_REGION = "us-east-1"
S3_SCHEME = "s3://"
# spec.storage.uri: a bucket name as S3 allows it, then an optional prefix (the CRD has the same pattern).
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
# Under spec.storage.uri each run writes s3://<bucket>/<prefix>/<CHECKPOINTS>/<run>/ and
# s3://<bucket>/<prefix>/<MODELS>/<model>/<run>/, the same layout as on a claim.
S3_CHECKPOINTS = "checkpoints"
S3_MODELS = "models"

# Where a pod's progress reports go: POST {PROGRESS_URL} with a JSON body of PROGRESS_FIELDS.
PROGRESS_FIELDS = ("step", "totalSteps", "epoch", "loss", "samplesPerSecond", "percent", "etaSeconds")


@dataclass(frozen=True)
class PodEnv:
    """Everything one pod learns from its environment, as typed values.

    ``rank`` is the global rank of the pod's first process; a pod with ``local_world_size`` > 1
    gives its k-th local process rank ``rank + k``.
    """

    job_name: str
    namespace: str
    strategy: str
    role: str
    role_index: int
    master_addr: str
    master_port: int
    world_size: int
    rank: int
    local_world_size: int
    num_workers: int
    num_parameter_servers: int
    worker_addresses: tuple[str, ...]
    parameter_server_addresses: tuple[str, ...]
    checkpoint_dir: str
    model_dir: str
    model_name: str
    trainer_config: dict = field(default_factory=dict)
    attempt: int = 0
    metrics_port: int = DEFAULT_METRICS_PORT
    progress_url: str = ""
    progress_token: str = ""
    result_path: str = DEFAULT_RESULT_PATH
    node_rank: int = 0  # torchrun's node rank: the pod's position in rank order

    def to_environ(self) -> dict[str, str]:
        """The variables as the operator writes them (all strings, stable order)."""
        return {
            MASTER_ADDR: self.master_addr,
            MASTER_PORT: str(self.master_port),
            WORLD_SIZE: str(self.world_size),
            RANK: str(self.rank),
            LOCAL_WORLD_SIZE: str(self.local_world_size),
            GROUP_RANK: str(self.node_rank),
            PET_NNODES: str(self.num_parameter_servers + self.num_workers),
            PET_NPROC_PER_NODE: str(self.local_world_size),
            PET_NODE_RANK: str(self.node_rank),
            PET_MASTER_ADDR: self.master_addr,
            PET_MASTER_PORT: str(self.master_port),
            JOB_NAME: self.job_name,
            NAMESPACE: self.namespace,
            STRATEGY: self.strategy,
            ROLE: self.role,
            ROLE_INDEX: str(self.role_index),
            NUM_WORKERS: str(self.num_workers),
            NUM_PARAMETER_SERVERS: str(self.num_parameter_servers),
            WORKER_ADDRESSES: ",".join(self.worker_addresses),
            PARAMETER_SERVER_ADDRESSES: ",".join(self.parameter_server_addresses),
            CHECKPOINT_DIR: self.checkpoint_dir,
            MODEL_DIR: self.model_dir,
            MODEL_NAME: self.model_name,
            TRAINER_CONFIG: json.dumps(self.trainer_config, sort_keys=True, separators=(",", ":")),
            ATTEMPT: str(self.attempt),
            METRICS_PORT: str(self.metrics_port),
            PROGRESS_URL: self.progress_url,
            PROGRESS_TOKEN: self.progress_token,
            RESULT_PATH: self.result_path,
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "PodEnv":
        """Read the contract back; a missing or malformed variable raises ``ContractError``."""
        env = os.environ if environ is None else environ

        def need(name: str) -> str:
            value = env.get(name)
            if value is None or value == "":
                raise ContractError(f"environment variable {name} is not set")
            return value

        def need_int(name: str) -> int:
            raw = need(name)
            try:
                return int(raw)
            except ValueError:
                raise ContractError(f"environment variable {name}={raw!r} is not an integer") from None

        def addresses(name: str) -> tuple[str, ...]:
            return tuple(a for a in env.get(name, "").split(",") if a)

        raw_config = env.get(TRAINER_CONFIG) or "{}"
        try:
            config = json.loads(raw_config)
        except json.JSONDecodeError as exc:
            raise ContractError(f"environment variable {TRAINER_CONFIG} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ContractError(f"environment variable {TRAINER_CONFIG} must hold a JSON object")

        return cls(
            job_name=env.get(JOB_NAME, "local"),
            namespace=env.get(NAMESPACE, "default"),
            strategy=env.get(STRATEGY, STRATEGY_ALLREDUCE),
            role=env.get(ROLE, ROLE_WORKER),
            role_index=int(env.get(ROLE_INDEX, "0")),
            master_addr=need(MASTER_ADDR),
            master_port=need_int(MASTER_PORT),
            world_size=need_int(WORLD_SIZE),
            rank=need_int(RANK),
            local_world_size=int(env.get(LOCAL_WORLD_SIZE, "1")),
            num_workers=int(env.get(NUM_WORKERS, "1")),
            num_parameter_servers=int(env.get(NUM_PARAMETER_SERVERS, "0")),
            worker_addresses=addresses(WORKER_ADDRESSES),
            parameter_server_addresses=addresses(PARAMETER_SERVER_ADDRESSES),
            checkpoint_dir=env.get(CHECKPOINT_DIR, DEFAULT_CHECKPOINT_DIR),
            model_dir=env.get(MODEL_DIR, DEFAULT_MODEL_DIR),
            model_name=env.get(MODEL_NAME, env.get(JOB_NAME, "model")),
            trainer_config=config,
            attempt=int(env.get(ATTEMPT, "0")),
            metrics_port=int(env.get(METRICS_PORT, str(DEFAULT_METRICS_PORT))),
            progress_url=env.get(PROGRESS_URL, ""),
            progress_token=env.get(PROGRESS_TOKEN, ""),
            result_path=env.get(RESULT_PATH, DEFAULT_RESULT_PATH),
            node_rank=int(env.get(GROUP_RANK, "0")),
        )


class ContractError(ValueError):
    """The pod's environment does not follow the contract."""
