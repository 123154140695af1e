"""A parameter-server process: holds one shard of the parameters and its optimizer.

One receiving thread per worker blocks on that worker's next header (a receive from a known peer
fails at once when the peer's connection drops, which a receive from any source would not) and
queues each gradient bucket as it lands; the main thread handles them one at a time, so the shard,
its optimizer and the replies need no locks. Sync mode steps and answers bucket by bucket: once
every active worker's gradients for a bucket are in, it averages them (summed in worker order, so
the result is reproducible), steps that bucket and sends it back, while the workers' backward
passes still produce the earlier layers' buckets. Async mode applies each whole push as it comes
and holds back the reply to a worker that is more than ``maxStaleness`` updates ahead of the
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
from torchyard_trainer.ps_optimizer import ShardOptimizer

log = logging.getLogger(__name__)

_LOST = -1
_SECONDARY = "pair closure"  # gloo's error on the other links after one receive timed out
_LOSS_SETTLE_SECONDS = 0.5


@dataclass
class _Message:
    worker: int
    op: int
    step: int = 0
    payload: torch.Tensor | None = None  # a push's whole flat gradient, filled up to ``bucket``
    bucket: int = 0  # a push: the bucket that has just landed in ``payload``
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
        self.param = self._reply_buffer[:-1]  # a view: a step updates the reply in place
        self.optimizer = ShardOptimizer(self.param, self.buckets, optimizer)
        # One message per bucket (an empty shard: one, the flag alone), as the push came in.
        self._replies = [self._reply_buffer[a:b] for a, b in wire.reply_ranges(self.buckets, values.numel())]
        self.mode = mode
        self.workers = workers
        self.metrics = metrics
        self.timeout = timeout
        self.updates = 0
        self._step_seconds = 0.0  # the current Sync step's, summed over its buckets
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
                state = {"optimizer": self.optimizer.state_dict(), "updates": self.updates}  # whole-shard layout
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
                    self._receive_push(worker, step)
                    continue
                self._inbox.put(_Message(worker, op, step))
                if op in wire.FINAL_OPS:
                    return
        except Exception as exc:  # any failure of the link means the worker is lost to this job
            self._inbox.put(_Message(worker, _LOST, error=str(exc).splitlines()[0][:300]))

    def _receive_push(self, worker: int, step: int) -> None:
        """Receive a push's buckets, all posted at once so the worker's sends never wait on this
        thread, and queue each as it lands. An empty shard has no bucket: its push is one message."""
        payload = torch.empty(self.param.numel())
        works = [dist.irecv(payload[b.start:b.end], src=worker, tag=wire.TAG_GRADIENTS) for b in self.buckets]
        for index, work in enumerate(works):
            wire.wait(work, self.timeout)
            self._inbox.put(_Message(worker, wire.OP_PUSH, step, payload, index))
        if not works:
            self._inbox.put(_Message(worker, wire.OP_PUSH, step, payload, 0))

    def _on_push(self, message: _Message, active: set, pending: dict, held: set) -> None:
        if self.mode.mode == "Sync":
            pending.setdefault(message.bucket, {})[message.worker] = message.payload
        elif message.bucket == len(self._replies) - 1:  # the whole push is in
            self._apply(message.payload)
            self.applied[message.worker] += 1
            held.add(message.worker)
        self._settle(active, pending, held)

    def _settle(self, active: set, pending: dict, held: set) -> None:
        """Apply and answer each Sync bucket every active worker has pushed, or release Async workers
        back within the staleness bound. Sync buckets complete in bucket order: every worker sends
        them in that order and waits for the whole answer before its next push."""
        for bucket in sorted(b for b, pushes in pending.items() if pushes and set(pushes) >= active):
            self._apply_bucket(bucket, pending.pop(bucket))
        if held:
            slowest = min((self.applied[w] for w in active), default=0)
            ready = sorted(w for w in held if self.applied[w] - slowest <= self.mode.max_staleness)
            held.difference_update(ready)
            self._reply(ready)

    def _apply_bucket(self, bucket: int, pushes: dict[int, torch.Tensor]) -> None:
        """Step ``bucket`` with the mean of every worker's gradients for it and send it to them."""
        start = time.perf_counter()
        order = sorted(pushes)
        span = self.optimizer.buckets[bucket]
        total = pushes[order[0]][span.start:span.end]
        for worker in order[1:]:
            total += pushes[worker][span.start:span.end]
        self.optimizer.step(bucket, total.div_(len(order)))
        self._step_seconds += time.perf_counter() - start
        self._reply(order, [bucket])
        if bucket == len(self._replies) - 1:
            self._count_update(self._step_seconds)
            self._step_seconds = 0.0

    def _apply(self, gradient: torch.Tensor) -> None:
        start = time.perf_counter()
        self.optimizer.step_all(gradient)
        self._count_update(time.perf_counter() - start)

    def _count_update(self, seconds: float) -> None:
        self.updates += 1
        self.metrics.step_seconds.observe(seconds)
        self.metrics.steps.inc()

    def _reply(self, workers: list[int], buckets: list[int] | None = None) -> None:
        """Send ``workers`` the parameters of ``buckets`` (default: all), each bucket one message."""
        if not workers:
            return
        start = time.perf_counter()
        self._reply_buffer[-1] = 1.0 if shutdown.requested() else 0.0
        messages = [self._replies[b] for b in (range(len(self._replies)) if buckets is None else buckets)]
        works = [dist.isend(m, dst=w, tag=wire.TAG_PARAMETERS) for m in messages for w in workers]
        for work in works:
            wire.wait(work, self.timeout)
        self.metrics.communication_seconds.observe(time.perf_counter() - start)
