"""The worker's training loop: epochs of batches from this worker's data shard, whatever the strategy.

``Trainer.train`` runs epochs, ``_run_epoch`` walks the shard a ``DistributedSampler`` gives this
worker, ``_run_batch`` does one forward pass and hands the loss to the strategy (DDP all-reduce or
parameter-server push/pull), which owns the backward pass and the update. The loop's position
(epoch and batch), the optimizer state and every worker's random state go into checkpoints, so a
restarted gang continues with the very next batch. After SIGTERM the workers agree on a step to
stop at (see :class:`StopVote`), checkpoint it and raise :class:`Preempted`.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Callable, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from torchyard_trainer import checkpoint, shutdown
from torchyard_trainer.data import Dataset
from torchyard_trainer.distributed import Process, rng_state, set_rng_state, timeout_seconds
from torchyard_trainer.errors import Preempted
from torchyard_trainer.evaluation import evaluation_sums, metrics_from_sums
from torchyard_trainer.metrics import TrainerMetrics
from torchyard_trainer.progress import ProgressReporter

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_LOSS_READ_EVERY = 10  # reading the loss syncs a GPU; every few steps is enough for reports


class Strategy(Protocol):
    """What the loop needs from AllReduce and ParameterServer alike."""

    group: dist.ProcessGroup | None

    def prepare(self, model: nn.Module) -> nn.Module: ...
    def update(self, loss: torch.Tensor) -> float | None: ...  # communication seconds, if measured
    def checkpoint_state(self) -> dict: ...
    def load(self, state: dict) -> None: ...
    def synchronize(self) -> None: ...
    def finish(self) -> None: ...
    def stopping(self) -> bool: ...  # a peer outside the worker group (a parameter server) asked to stop
    def stop(self) -> None: ...  # the workers stopped early; tell those peers


class Trainer:
    """Trains ``model`` on this worker's shard of ``data`` with ``strategy``."""

    def __init__(self, process: Process, model: nn.Module, data: Dataset, strategy: Strategy, *,
                 loss_fn: LossFn, batch_size: int, seed: int, total_epochs: int, metrics: TrainerMetrics,
                 reporter: ProgressReporter | None, checkpoint_dir: str, fingerprint: str,
                 checkpoint_every: int = 0):
        self.process = process
        self.model = model
        self.data = data
        self.strategy = strategy
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.metrics = metrics
        self.reporter = reporter
        self.writer = checkpoint.Writer(checkpoint_dir)
        self.fingerprint = fingerprint
        self.checkpoint_every = checkpoint_every
        self.device = process.device
        self.x = data.x_train.to(self.device)
        self.y = data.y_train.to(self.device)
        self.sampler = DistributedSampler(range(len(self.x)), num_replicas=process.workers,
                                          rank=process.worker_index, shuffle=True, seed=seed)
        self.steps_per_epoch = math.ceil(len(self.sampler) / batch_size)
        self.total_epochs = total_epochs
        self.total_steps = self.steps_per_epoch * total_epochs
        self.step = self.epoch = self.batch = 0
        self.resumed_from: int | None = None
        self.checkpointing = True
        self.last_eval: dict[str, float] = {}
        self.train_module = strategy.prepare(model)
        self.vote = StopVote(process, strategy.group)
        self._samples = 0
        self._busy_seconds = 0.0
        self.wall_seconds = 0.0  # the whole loop, evaluation and checkpoints included

    def load(self, state: dict) -> None:
        """Continue from a checkpoint: same step, position, optimizer state and random state."""
        self.model.load_state_dict(state["model"])
        self.strategy.load(state)
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        rng = state["rng"]
        set_rng_state(rng[self.process.worker_index] if self.process.worker_index < len(rng) else rng[0])
        self.resumed_from = self.step

    def train(self, until_epoch: int) -> None:
        """Run epochs until ``until_epoch`` (exclusive), evaluating and checkpointing each one."""
        started = time.perf_counter()
        with shutdown.deferred():
            self._train(until_epoch)
        self.wall_seconds += time.perf_counter() - started

    def _train(self, until_epoch: int) -> None:
        while self.epoch < until_epoch:
            self._run_epoch(self.epoch)
            self.epoch, self.batch = self.epoch + 1, 0
            self.last_eval = self._evaluate()
            if self.process.is_lead:
                log.info("epoch %d: %s", self.epoch, _fmt(self.last_eval))
            if self.checkpointing:
                self._checkpoint()
        self.vote.settle()

    def _evaluate(self) -> dict[str, float]:
        """Held-out metrics, each worker scoring every n-th sample and one all-reduce adding them up."""
        workers, index = self.process.workers, self.process.worker_index
        sums = evaluation_sums(self.model, self.data.x_test[index::workers], self.data.y_test[index::workers],
                               self.data.task, self.device)
        if self.process.backend == "nccl":
            sums = sums.to(self.device)
        dist.all_reduce(sums, group=self.strategy.group)
        return metrics_from_sums(sums, self.data.task)

    def _run_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        order = torch.as_tensor(list(self.sampler), device=self.device)
        for start in range(self.batch * self.batch_size, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            self._run_batch(self.x[index], self.y[index])
            self.batch += 1
            due = self.checkpoint_every and self.step % self.checkpoint_every == 0
            if self.checkpointing and due and self.batch < self.steps_per_epoch:  # the epoch end saves anyway
                self._checkpoint()
            if self.vote.stop(shutdown.requested() or self.strategy.stopping()):
                self._stop()

    def _run_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        started = time.perf_counter()
        loss = self.loss_fn(self.train_module(inputs), inputs, targets)
        communication = self.strategy.update(loss)
        self.step += 1
        elapsed = time.perf_counter() - started
        self._busy_seconds += elapsed
        self._samples += len(inputs)
        self.metrics.step_seconds.observe(elapsed)
        if communication is not None:
            self.metrics.communication_seconds.observe(communication)
        self.metrics.steps.inc()
        if self.step % _LOSS_READ_EVERY == 0 or self.batch + 1 == self.steps_per_epoch:
            self._publish(loss.detach())

    def _publish(self, loss: torch.Tensor) -> None:
        value = float(loss)
        rate = self.samples_per_second()
        self.metrics.loss.set(value)
        self.metrics.samples_per_second.set(rate)
        self.metrics.progress_ratio.set(self.step / self.total_steps if self.total_steps else 1.0)
        if self.reporter is not None:
            epoch = min(self.epoch + 1, self.total_epochs)  # 1-based: the epoch under way, or the last one
            self.reporter.update(self.step, self.total_steps, epoch, value, rate * self.process.workers)

    def summary(self) -> dict:
        """Throughput of the whole job for the result: samples of all workers per wall second."""
        total = self._samples * self.process.workers
        return {
            "samplesPerSecond": round(total / self.wall_seconds, 1) if self.wall_seconds else 0.0,
            "stepSamplesPerSecond": round(self.samples_per_second() * self.process.workers, 1),
            "seconds": round(self.wall_seconds, 3),
            "resumedFromStep": self.resumed_from,
        }

    def samples_per_second(self) -> float:
        """This worker's training throughput, counting only time spent in training steps."""
        return self._samples / self._busy_seconds if self._busy_seconds else 0.0

    def _checkpoint(self) -> None:
        """Gather every worker's random state; the lead adds the optimizer state and writes."""
        states: list = [None] * self.process.workers
        dist.all_gather_object(states, rng_state(), group=self.strategy.group)
        if not self.process.is_lead:
            return
        snapshot = {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "rng": states,
            "metrics": self.last_eval,
            **self.strategy.checkpoint_state(),
        }
        self.writer.submit(snapshot)

    def _stop(self) -> None:
        """Save this step and leave: the gang was asked to stop (preemption, drain, restart)."""
        if self.checkpointing:  # while fine-tuning a pruned model, a restart repeats the pruning instead
            self._checkpoint()
        self.close()
        self.strategy.stop()
        raise Preempted(f"stopped by SIGTERM after step {self.step}"
                        + ("; checkpoint written" if self.checkpointing else "; fine-tuning restarts from pruning"))

    def close(self) -> None:
        """Wait for the last checkpoint to reach the disk."""
        self.writer.close()


class StopVote:
    """Whether any worker wants to stop, agreed by all workers at the same step.

    Each step starts a MAX all-reduce of this worker's wish (CPU, gloo, in the background) and reads
    the one started a step earlier, so the vote never makes a step wait on the network; every worker
    reads the same round, so all stop after the same step. With one worker there is nothing to agree.
    """

    def __init__(self, process: Process, group: dist.ProcessGroup | None):
        self.alone = process.workers == 1
        if not self.alone and process.backend != "gloo":  # NCCL groups want device tensors and a sync
            group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_seconds()))
        self.group = group
        self._flag: torch.Tensor | None = None
        self._work = None

    def stop(self, wish: bool) -> bool:
        if self.alone:
            return wish
        if self.settle():
            return True
        self._flag = torch.tensor([int(wish)], dtype=torch.int32)
        self._work = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return False

    def settle(self) -> bool:
        """Finish the round in flight; whether it voted to stop."""
        if self._work is None:
            return False
        self._work.wait()
        self._work = None
        return bool(self._flag.item())


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
