"""AllReduce and ParameterServer as two strategies behind one small interface.

A strategy answers the only questions on which the two topologies differ: which roles exist, in
rank order, and which pod hosts the rendezvous. Everything else (pods, env, status, failure
policy) is shared, so the reconciler never branches on the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torchyard.api.trainingjob import RoleSpec, TrainingJobSpec
from torchyard_spec import contract


@dataclass(frozen=True)
class Role:
    """One role of a job as the builders see it: its name, spec, and first global rank."""

    name: str
    spec: RoleSpec
    first_rank: int

    def rank_of(self, index: int) -> int:
        return self.first_rank + index * self.spec.processes


class Strategy(Protocol):
    name: str

    def roles(self, spec: TrainingJobSpec) -> list[Role]: ...

    def master(self, spec: TrainingJobSpec) -> tuple[str, int]:
        """(role, index) of the pod whose address is MASTER_ADDR."""


def _ranked(named: list[tuple[str, RoleSpec]]) -> list[Role]:
    roles, rank = [], 0
    for name, spec in named:
        roles.append(Role(name, spec, rank))
        rank += spec.replicas * spec.processes
    return roles


class AllReduce:
    name = contract.STRATEGY_ALLREDUCE

    def roles(self, spec: TrainingJobSpec) -> list[Role]:
        return _ranked([(contract.ROLE_WORKER, spec.worker)])

    def master(self, spec: TrainingJobSpec) -> tuple[str, int]:
        return contract.ROLE_WORKER, 0


class ParameterServer:
    name = contract.STRATEGY_PARAMETER_SERVER

    def roles(self, spec: TrainingJobSpec) -> list[Role]:
        assert spec.parameter_server is not None, "parse_training_job guarantees it"
        return _ranked([(contract.ROLE_PARAMETER_SERVER, spec.parameter_server), (contract.ROLE_WORKER, spec.worker)])

    def master(self, spec: TrainingJobSpec) -> tuple[str, int]:
        return contract.ROLE_PARAMETER_SERVER, 0


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (AllReduce(), ParameterServer())}


def strategy_for(spec: TrainingJobSpec) -> Strategy:
    return STRATEGIES[spec.strategy]
