"""Which process of a job has which rank, role and address, and the environment each one gets.

One statement of the layout, used by the operator's pod builders, by ``torchyard run`` and by the
trainer's local gang: parameter servers come first (ranks ``0..P-1``), then workers; a pod runs
its role's nprocPerNode processes (by default one per GPU, one without GPUs) and takes that many
consecutive ranks; the rendezvous is
on the first pod in rank order. Addresses are whatever the caller's network gives a pod (a DNS
name in a cluster, 127.0.0.1 with its own port on a laptop), so they are passed in.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torchyard_spec import contract


def processes_per_pod(gpus: int, nproc_per_node: int | None = None) -> int:
    """The role's nprocPerNode when set; otherwise one process per GPU, or one in a CPU pod."""
    if nproc_per_node is not None:
        return int(nproc_per_node)
    return max(1, int(gpus))


@dataclass(frozen=True)
class Group:
    """The pods of one role: how many, and how many processes each runs."""

    role: str
    replicas: int
    processes: int = 1


@dataclass(frozen=True)
class Member:
    """One pod: its role, its index in the role, its first global rank and its torchrun node rank."""

    role: str
    index: int
    rank: int
    processes: int
    node_rank: int

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


@dataclass(frozen=True)
class Network:
    """How the pods reach each other: ``host(role, index)`` names a pod; every pod listens for
    peers on ``master_port`` unless ``ports`` gives it its own (several pods on one machine)."""

    host: Callable[[str, int], str]
    master_port: int = contract.DEFAULT_MASTER_PORT
    ports: Mapping[tuple[str, int], int] = field(default_factory=dict)

    def address(self, role: str, index: int) -> str:
        return f"{self.host(role, index)}:{self.ports.get((role, index), self.master_port)}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback(master_port: int, ports: Mapping[tuple[str, int], int] | None = None) -> Network:
    """Every pod on 127.0.0.1: the network of ``torchyard run`` and of a local gang."""
    return Network(lambda role, index: "127.0.0.1", master_port, dict(ports or {}))


@dataclass(frozen=True)
class Topology:
    strategy: str
    groups: tuple[Group, ...]  # in rank order

    @classmethod
    def of(cls, workers: int, parameter_servers: int = 0, *, worker_processes: int = 1,
           parameter_server_processes: int = 1, strategy: str | None = None) -> "Topology":
        """A job's layout; the strategy is ParameterServer exactly when it has parameter servers."""
        groups = [Group(contract.ROLE_WORKER, workers, worker_processes)]
        if parameter_servers:
            groups.insert(0, Group(contract.ROLE_PARAMETER_SERVER, parameter_servers, parameter_server_processes))
        default = contract.STRATEGY_PARAMETER_SERVER if parameter_servers else contract.STRATEGY_ALLREDUCE
        return cls(strategy or default, tuple(groups))

    def members(self) -> list[Member]:
        """Every pod, in rank order."""
        out, rank, node = [], 0, 0
        for group in self.groups:
            for index in range(group.replicas):
                out.append(Member(group.role, index, rank, group.processes, node))
                rank += group.processes
                node += 1
        return out

    def member(self, role: str, index: int) -> Member:
        return next(m for m in self.members() if (m.role, m.index) == (role, index))

    def replicas(self, role: str) -> int:
        return sum(g.replicas for g in self.groups if g.role == role)

    @property
    def world_size(self) -> int:
        return sum(g.replicas * g.processes for g in self.groups)

    @property
    def master(self) -> Member:
        """The pod that hosts the rendezvous (MASTER_ADDR)."""
        return self.members()[0]

    def pod_env(self, member: Member, network: Network, **common: Any) -> contract.PodEnv:
        """The contract for one pod; ``common`` holds what every pod of the job shares (job name,
        namespace, directories, trainer config, progress endpoint, ...)."""
        def addresses(role: str) -> tuple[str, ...]:
            return tuple(network.address(role, i) for i in range(self.replicas(role)))

        return contract.PodEnv(
            strategy=self.strategy,
            role=member.role,
            role_index=member.index,
            master_addr=network.host(self.master.role, self.master.index),
            master_port=network.master_port,
            world_size=self.world_size,
            rank=member.rank,
            local_world_size=member.processes,
            node_rank=member.node_rank,
            num_workers=self.replicas(contract.ROLE_WORKER),
            num_parameter_servers=self.replicas(contract.ROLE_PARAMETER_SERVER),
            worker_addresses=addresses(contract.ROLE_WORKER),
            parameter_server_addresses=addresses(contract.ROLE_PARAMETER_SERVER),
            **common,
        )


def worker_ranks(parameter_server_processes: int, world_size: int) -> range:
    """Global ranks of the worker processes: every rank after the parameter servers'."""
    return range(parameter_server_processes, world_size)


def parameter_server_processes(env: contract.PodEnv) -> int:
    """How many processes of the job are parameter servers, as one pod can tell from its env.

    A worker pod's first rank is every parameter-server process plus the worker pods before it.
    """
    if env.strategy != contract.STRATEGY_PARAMETER_SERVER:
        return 0
    if env.role == contract.ROLE_PARAMETER_SERVER:
        return env.num_parameter_servers * env.local_world_size
    return env.rank - env.role_index * env.local_world_size
