"""The AllReduce strategy: DistributedDataParallel over every worker process.

Gradients are averaged by DDP's bucketed all-reduce, overlapped with the backward pass. A
communication hook wraps the stock all-reduce only to time it, so the numbers are exactly DDP's.
"""

from __future__ import annotations

import copy
import threading
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from torchyard_trainer.config import OptimizerConfig
from torchyard_trainer.distributed import Process
from torchyard_trainer.optim import build_optimizer


class _CommTimer:
    """Sums, per step, the time each gradient bucket spends in all-reduce."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = 0.0

    def reset(self) -> None:
        self.seconds = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


def _timed_allreduce(timer, bucket):
    # No annotations: DDP inspects them, and postponed (string) annotations fail its check.
    start = time.perf_counter()

    def finished(future: torch.futures.Future) -> torch.Tensor:
        timer.add(time.perf_counter() - start)
        return future.value()

    return default_hooks.allreduce_hook(None, bucket).then(finished)


class AllReduce:
    """Workers hold full replicas; each step all-reduces gradients, then every worker steps."""

    group = None  # the worker collectives run on the default group: every process is a worker

    def __init__(self, process: Process, optimizer: OptimizerConfig):
        self.process = process
        self.optimizer_config = optimizer
        self.optimizer: torch.optim.Optimizer | None = None
        self._timer = _CommTimer()

    def prepare(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` for training (DDP broadcasts rank 0's parameters to every worker)."""
        self.optimizer = build_optimizer(model.parameters(), self.optimizer_config)
        device_ids = [self.process.device] if self.process.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=device_ids)
        ddp.register_comm_hook(self._timer, _timed_allreduce)
        return ddp

    def update(self, loss: torch.Tensor) -> float:
        """Backward (with the all-reduce inside it) and one optimizer step; returns comm seconds."""
        self.optimizer.zero_grad(set_to_none=True)
        self._timer.reset()
        loss.backward()
        self.optimizer.step()
        return self._timer.seconds

    def checkpoint_state(self) -> dict:
        """A copy of the optimizer state: the live one changes in place with the next step."""
        return {"optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def synchronize(self) -> None:
        """Every replica already holds the same parameters after each step."""

    def finish(self) -> None:
        """Nothing to release: the process group is left by the caller."""
