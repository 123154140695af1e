"""The ParameterServer strategy, worker side: push gradient shards, pull parameter shards.

A worker keeps a full replica for its forward and backward passes but never steps an optimizer:
during each backward it sends every server the gradients of the tensors that server owns, bucket by
bucket as they are ready (:mod:`torchyard_trainer.ps_overlap`), and then waits for the updated
values, which it copies back into its replica.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.distributed as dist
from torch import nn

from torchyard_trainer import ps_protocol as wire
from torchyard_trainer.distributed import Process
from torchyard_trainer.ps_overlap import BucketPusher

log = logging.getLogger(__name__)


class ParameterServerClient:
    """Worker side of the protocol in :mod:`torchyard_trainer.ps_protocol`."""

    def __init__(self, process: Process, plan: wire.ShardPlan, group: dist.ProcessGroup, timeout: float):
        self.process = process
        self.plan = plan
        self.group = group  # worker processes only: barriers and checkpoint gathers
        self.timeout = timeout
        self.servers = list(range(plan.servers))
        self.step = 0
        self._params: list[torch.Tensor] = []
        self._shards: list[list[torch.Tensor]] = []
        self._buffers = [torch.empty(plan.numel(s) + 1) for s in self.servers]  # + the server's stop flag
        self.servers_stopping = False

    def prepare(self, model: nn.Module) -> nn.Module:
        """Bind to ``model``'s parameters (the same objects stay bound if pruning renames them)."""
        self._params = [p for _, p in model.named_parameters()]
        self._shards = [[self._params[i] for i in self.plan.owned(s)] for s in self.servers]
        self._pusher = BucketPusher(self.plan, self._params)
        self.pull()
        return model

    def _send_header(self, server: int, op: int, numel: int = 0):
        return dist.isend(wire.header(op, self.step, self.process.rank, numel), dst=server, tag=wire.TAG_HEADER)

    def _post_receives(self) -> list:
        return [dist.irecv(self._buffers[s], src=s, tag=wire.TAG_PARAMETERS) for s in self.servers]

    def _adopt(self, sends: list, receives: list) -> None:
        for work in sends + receives:
            wire.wait(work, self.timeout)
        for s in self.servers:
            wire.unflatten_into(self._buffers[s][:-1], self._shards[s])
        self.servers_stopping = self.servers_stopping or any(bool(b[-1] > 0) for b in self._buffers)

    def update(self, loss: torch.Tensor) -> float:
        """Push each server its gradient shard during backward, adopt the parameters it answers with.

        The replies' receives are posted before backward, so each lands as soon as its server has
        the step's pushes (in Sync mode, every worker's). Returns the seconds spent waiting after
        backward: the communication that did not overlap it.
        """
        for p in self._params:
            p.grad = None
        headers = [self._send_header(s, wire.OP_PUSH, self.plan.numel(s)) for s in self.servers]
        receives = self._post_receives()
        sends = self._pusher.push(loss)
        start = time.perf_counter()
        self._adopt(headers + sends, receives)
        self.step += 1
        return time.perf_counter() - start

    def pull(self) -> None:
        """Replace the replica's parameters with the servers' current ones."""
        self._adopt([self._send_header(s, wire.OP_PULL) for s in self.servers], self._post_receives())

    def checkpoint_state(self) -> dict:
        """Each server's optimizer state, for the lead worker's checkpoint."""
        shards = []
        for s in self.servers:
            wire.wait(self._send_header(s, wire.OP_STATE), self.timeout)
            box: list = [None]
            dist.recv_object_list(box, src=s)
            shards.append(box[0])
        return {"shards": shards}

    def load(self, state: dict) -> None:
        """Servers load their shards from the same broadcast checkpoint; workers keep the step."""

    def synchronize(self) -> None:
        """Wait for every worker to finish its pushes, then pull: all replicas become identical."""
        dist.barrier(group=self.group)
        self.pull()

    def finish(self) -> None:
        """Adopt the final parameters and tell every server this worker is done."""
        self.synchronize()
        for s in self.servers:
            wire.wait(self._send_header(s, wire.OP_DONE), self.timeout)

    def stopping(self) -> bool:
        """Whether a server said (in its last reply) that it was asked to stop."""
        return self.servers_stopping

    def stop(self) -> None:
        """Tell every server the workers stopped early, so it stops too."""
        for s in self.servers:
            wire.wait(self._send_header(s, wire.OP_STOP), self.timeout)
