"""The AllReduce strategy: DistributedDataParallel over every worker process.

Gradients are averaged by DDP's bucketed all-reduce, overlapped with the backward pass, using DDP's
own C++ communication path. Communication time comes from the runtime statistics DDP samples
itself (the first ten steps, then one in a hundred) rather than from a Python communication hook,
which would cost every step a few percent of its time.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchyard_trainer.config import OptimizerConfig
from torchyard_trainer.distributed import Process
from torchyard_trainer.optim import build_optimizer

log = logging.getLogger(__name__)

_STATS_READ_EVERY = 10  # DDP refreshes its sample at steps 1-10 and every 100th; a read costs ~0.1 ms


class AllReduce:
    """Workers hold full replicas; each step all-reduces gradients, then every worker steps."""

    group = None  # the worker collectives run on the default group: every process is a worker

    def __init__(self, process: Process, optimizer: OptimizerConfig):
        self.process = process
        self.optimizer_config = optimizer
        self.optimizer: torch.optim.Optimizer | None = None
        self.ddp: DistributedDataParallel | None = None
        self._steps = 0
        self._last_sample = None

    def prepare(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` for training (DDP broadcasts rank 0's parameters to every worker)."""
        self.optimizer = build_optimizer(model.parameters(), self.optimizer_config)
        device_ids = [self.process.device] if self.process.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(model, device_ids=device_ids)
        return self.ddp

    def update(self, loss: torch.Tensor) -> float | None:
        """Backward (with the all-reduce inside it) and one optimizer step.

        Returns the step's all-reduce seconds when DDP sampled this step, else None.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._steps += 1
        if self._steps <= _STATS_READ_EVERY or self._steps % _STATS_READ_EVERY == 0:
            return self._sampled_communication()
        return None

    def _sampled_communication(self) -> float | None:
        try:
            stats = self.ddp._get_ddp_logging_data()
        except Exception:  # private API: without it the metric goes unobserved, training goes on
            return None
        sample = stats.get("backward_comm_time_start")
        if sample is None or sample == self._last_sample:
            return None
        self._last_sample = sample
        return stats.get("backward_comm_time", 0) / 1e9

    def checkpoint_state(self) -> dict:
        """A copy of the optimizer state: the live one changes in place with the next step."""
        return {"optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def synchronize(self) -> None:
        """Every replica already holds the same parameters after each step."""

    def finish(self) -> None:
        """Nothing to release: the process group is left by the caller."""

    def stopping(self) -> bool:
        """Every process is a worker and votes itself."""
        return False

    def stop(self) -> None:
        """No peer outside the workers to tell."""
