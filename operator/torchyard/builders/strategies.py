"""AllReduce and ParameterServer as two strategies behind one small interface.

The only questions on which the two differ (which roles exist, in what rank order, which pod
hosts the rendezvous) are answered by the job's topology (torchyard_spec.topology), the same
layout `torchyard run` and the trainer use. Everything else (pods, env, status, failure policy)
is shared, so the reconciler never branches on the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchyard.api.trainingjob import STRATEGIES as STRATEGY_NAMES
from torchyard.api.trainingjob import RoleSpec, TrainingJobSpec
from torchyard_spec.topology import Member


@dataclass(frozen=True)
class Role:
    """One role of a job as the builders see it: its name, spec, and its pods in rank order."""

    name: str
    spec: RoleSpec
    members: tuple[Member, ...]

    def rank_of(self, index: int) -> int:
        return self.members[index].rank


@dataclass(frozen=True)
class Strategy:
    name: str

    def roles(self, spec: TrainingJobSpec) -> list[Role]:
        """The job's roles in rank order."""
        topology = spec.topology
        members = topology.members()
        return [Role(g.role, spec.role(g.role), tuple(m for m in members if m.role == g.role))
                for g in topology.groups]

    def master(self, spec: TrainingJobSpec) -> tuple[str, int]:
        """(role, index) of the pod whose address is MASTER_ADDR."""
        master = spec.topology.master
        return master.role, master.index


STRATEGIES: dict[str, Strategy] = {name: Strategy(name) for name in STRATEGY_NAMES}


def strategy_for(spec: TrainingJobSpec) -> Strategy:
    return STRATEGIES[spec.strategy]
