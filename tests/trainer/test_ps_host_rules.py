"""The parameter server's rules for answering pushes, driven message by message in-process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchyard_trainer import ps_protocol as wire
from torchyard_trainer.config import OptimizerConfig, ParameterServerConfig
from torchyard_trainer.metrics import TrainerMetrics
from torchyard_trainer.ps_host import ShardHost, _Message

pytestmark = pytest.mark.trainer

WORKERS = [1, 2, 3]


class RecordingHost(ShardHost):
    """A shard host whose replies are recorded instead of sent."""

    def __init__(self, mode: str, max_staleness: int = 0):
        model = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(1.0)
        super().__init__(0, wire.plan_shards([2], 1), model, OptimizerConfig(name="sgd", learning_rate=1.0),
                         ParameterServerConfig(mode=mode, max_staleness=max_staleness), WORKERS,
                         TrainerMetrics("t", "ps", 0), timeout=5)
        self.replies: list[int] = []
        self.active, self.pending, self.held = set(WORKERS), {}, set()

    def _reply(self, workers):
        self.replies += workers

    def push(self, worker: int, gradient: float) -> None:
        self._on_push(_Message(worker, wire.OP_PUSH, payload=torch.full((2,), gradient)),
                      self.active, self.pending, self.held)

    def done(self, worker: int) -> None:
        self.active.discard(worker)
        self._settle(self.active, self.pending, self.held)


def test_sync_answers_nobody_until_every_worker_pushed_then_applies_the_mean_once():
    host = RecordingHost("Sync")
    host.push(2, 3.0)
    host.push(1, 6.0)
    assert host.replies == [] and host.updates == 0
    host.push(3, 0.0)
    assert host.replies == [1, 2, 3] and host.updates == 1
    assert torch.allclose(host.param.detach(), torch.full((2,), 1.0 - 3.0))  # lr 1, mean gradient 3


def test_sync_does_not_wait_for_a_worker_that_is_done():
    host = RecordingHost("Sync")
    host.push(1, 1.0)
    host.push(2, 1.0)
    host.done(3)
    assert host.replies == [1, 2] and host.updates == 1


def test_async_applies_each_push_and_holds_back_a_worker_too_far_ahead():
    host = RecordingHost("Async", max_staleness=1)
    host.push(1, 1.0)
    assert host.replies == [1] and host.updates == 1  # one ahead of workers 2 and 3: allowed
    host.push(1, 1.0)
    assert host.replies == [1] and host.updates == 2  # two ahead: held until the slowest moves
    host.push(2, 1.0)
    assert host.replies == [1, 2]  # worker 2 is within the bound; 1 is still two ahead of worker 3
    host.push(3, 1.0)
    assert sorted(host.replies) == [1, 1, 2, 3]
    assert torch.allclose(host.param.detach(), torch.full((2,), 1.0 - 4.0))


def test_async_releases_held_workers_when_the_slowest_finishes():
    host = RecordingHost("Async", max_staleness=0)
    host.push(1, 1.0)
    host.push(2, 1.0)
    assert host.replies == []
    host.done(3)
    assert sorted(host.replies) == [1, 2]
