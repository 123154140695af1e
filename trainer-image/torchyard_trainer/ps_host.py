"""A parameter-server process: holds one shard of the parameters and its optimizer.

One receiving thread per worker blocks on that worker's next header (a receive from a known peer
fails at once when the peer's connection drops, which a receive from any source would not) and
queues the decoded message; the main thread applies them one at a time, so the shard, its
optimizer and the replies need no locks. Sync mode averages one push from every active worker per
step, summed in worker order so the result is reproducible; Async mode applies each push as it
comes and holds back the reply to a worker that is more than ``maxStaleness`` updates ahead of the
slowest active worker. The server returns once every worker has said done, and raises
:class:`PeerLost` when a worker disconnects or stays silent past the timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from torchyard_trainer import ps_protocol as wire
from torchyard_trainer import shutdown
from torchyard_trainer.config import OptimizerConfig, ParameterServerConfig
from torchyard_trainer.errors import PeerLost
from torchyard_trainer.metrics import TrainerMetrics
from torchyard_trainer.optim import build_optimizer

log = logging.getLogger(__name__)

_LOST = -1
_SECONDARY = "pair closure"  # gloo's error on the other links after one receive timed out
_LOSS_SETTLE_SECONDS = 0.5


@dataclass
class _Message:
    worker: int
    op: int
    step: int = 0
    payload: torch.Tensor | None = None
    error: str = ""


class ShardHost:
    """The state and the message loop of parameter server ``index``."""

    def __init__(self, index: int, plan: wire.ShardPlan, model: nn.Module, optimizer: OptimizerConfig,
                 mode: ParameterServerConfig, workers: list[int], metrics: TrainerMetrics, timeout: float):
        self.index = index
        self.names = [name for name, _ in model.named_parameters()]
        self.owned = plan.owned(index)
        self.buckets = plan.buckets(index)
        params = [p for _, p in model.named_parameters()]
        self.shapes = [params[i].shape for i in self.owned]
        values = wire.flatten([params[i] for i in self.owned])
        self._reply_buffer = torch.cat([values, torch.zeros(1)])  # the shard, then the stop flag
        self.param = nn.Parameter(self._reply_buffer[:-1])  # a view: a step updates the reply in place
        self.optimizer = build_optimizer([self.param], optimizer)
        self.mode = mode
        self.workers = workers
        self.metrics = metrics
        self.timeout = timeout
        self.updates = 0
        self.applied = {w: 0 for w in workers}
        self.stopped = False  # a worker stopped early: the gang was asked to stop
        self._inbox: queue.Queue[_Message] = queue.Queue()

    def load(self, checkpoint: dict) -> None:
        """Take this shard's parameters and optimizer state from a lead worker's checkpoint."""
        model_state = checkpoint["model"]
        with torch.no_grad():
            self.param.copy_(wire.flatten([model_state[self.names[i]] for i in self.owned]))
        shard = checkpoint["shards"][self.index]
        self.optimizer.load_state_dict(shard["optimizer"])
        self.updates = shard["updates"]

    def run(self) -> None:
        """Serve until every worker is done or has stopped; after SIGTERM, until the workers have
        checkpointed and stopped (they learn of it from the flag in each reply)."""
        with shutdown.deferred():
            self._serve()

    def _serve(self) -> None:
        log.info("parameter server %d: %d tensors, %d values, %s mode, workers %s",
                 self.index, len(self.owned), self.param.numel(), self.mode.mode, self.workers)
        threads = [threading.Thread(target=self._receive, args=(w,), name=f"recv-{w}", daemon=True)
                   for w in self.workers]
        for thread in threads:
            thread.start()
        active, pending, held = set(self.workers), {}, set()
        while active:
            message = self._next()
            if message.op == wire.OP_PUSH:
                self._on_push(message, active, pending, held)
            elif message.op == wire.OP_PULL:
                self._reply([message.worker])
            elif message.op == wire.OP_STATE:
                state = {"optimizer": self.optimizer.state_dict(), "updates": self.updates}
                dist.send_object_list([state], dst=message.worker)
            elif message.op in wire.FINAL_OPS:
                self.stopped = self.stopped or message.op == wire.OP_STOP
                active.discard(message.worker)
                self._settle(active, pending, held)
        for thread in threads:
            thread.join(timeout=self.timeout)
        log.info("parameter server %d: all workers done after %d updates", self.index, self.updates)

    def _next(self) -> _Message:
        try:
            message = self._inbox.get(timeout=self.timeout + 5)
        except queue.Empty:
            raise PeerLost(f"no message from any worker for {self.timeout:.0f}s") from None
        if message.op == _LOST:
            raise PeerLost(self._explain_loss(message))
        return message

    def _explain_loss(self, first: _Message) -> str:
        """Name the lost worker(s). A receive that times out closes every link of the process,
        so the other receivers fail moments later with a secondary error; the cause is listed first."""
        lost = [first]
        deadline = time.monotonic() + _LOSS_SETTLE_SECONDS
        while time.monotonic() < deadline:
            try:
                message = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.op == _LOST:
                lost.append(message)
        lost.sort(key=lambda m: _SECONDARY in m.error)
        return "; ".join(f"worker rank {m.worker} is gone: {m.error}" for m in lost)

    def _receive(self, worker: int) -> None:
        """Decode ``worker``'s messages into the inbox until it is done or gone."""
        try:
            while True:
                head = torch.zeros(wire.HEADER_SIZE, dtype=torch.int64)
                wire.wait(dist.irecv(head, src=worker, tag=wire.TAG_HEADER), self.timeout)
                op, step = int(head[0]), int(head[1])
                payload = None
                if op == wire.OP_PUSH:
                    payload = torch.empty(self.param.numel())
                    for bucket in self.buckets:
                        chunk = payload[bucket.start:bucket.end]
                        wire.wait(dist.irecv(chunk, src=worker, tag=wire.TAG_GRADIENTS), self.timeout)
                self._inbox.put(_Message(worker, op, step, payload))
                if op in wire.FINAL_OPS:
                    return
        except Exception as exc:  # any failure of the link means the worker is lost to this job
            self._inbox.put(_Message(worker, _LOST, error=str(exc).splitlines()[0][:300]))

    def _on_push(self, message: _Message, active: set, pending: dict, held: set) -> None:
        if self.mode.mode == "Sync":
            pending[message.worker] = message.payload
        else:
            self._apply(message.payload)
            self.applied[message.worker] += 1
            held.add(message.worker)
        self._settle(active, pending, held)

    def _settle(self, active: set, pending: dict, held: set) -> None:
        """Apply a complete Sync step, or release Async workers back within the staleness bound."""
        if pending and set(pending) >= active:
            order = sorted(pending)
            total = pending[order[0]]
            for worker in order[1:]:
                total += pending[worker]
            self._apply(total.div_(len(order)))
            pending.clear()
            self._reply(order)
        if held:
            slowest = min((self.applied[w] for w in active), default=0)
            ready = sorted(w for w in held if self.applied[w] - slowest <= self.mode.max_staleness)
            held.difference_update(ready)
            self._reply(ready)

    def _apply(self, gradient: torch.Tensor) -> None:
        start = time.perf_counter()
        self.param.grad = gradient
        self.optimizer.step()
        self.param.grad = None
        self.updates += 1
        self.metrics.step_seconds.observe(time.perf_counter() - start)
        self.metrics.steps.inc()

    def _reply(self, workers: list[int]) -> None:
        if not workers:
            return
        start = time.perf_counter()
        self._reply_buffer[-1] = 1.0 if shutdown.requested() else 0.0
        works = [dist.isend(self._reply_buffer, dst=w, tag=wire.TAG_PARAMETERS) for w in workers]
        for work in works:
            wire.wait(work, self.timeout)
        self.metrics.communication_seconds.observe(time.perf_counter() - start)
