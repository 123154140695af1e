"""Sending gradients to the parameter servers while the backward pass is still running.

Backward produces gradients from the last layer to the first. Each server's shard is cut into
buckets in that order (:meth:`ShardPlan.buckets`); a hook on every parameter counts the gradients
still missing from its bucket, and the moment a bucket is complete it is flattened and sent, while
autograd goes on with the earlier layers. Buckets leave in the order the server receives them: one
that completes early waits for those before it. After backward, buckets whose parameters got no
gradient (unused in this step) are sent as zeros, as a full push would have sent them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from torchyard_trainer import ps_protocol as wire


class BucketPusher:
    """Pushes ``params``' gradients to every server, bucket by bucket, during ``loss.backward()``."""

    def __init__(self, plan: wire.ShardPlan, params: list[torch.Tensor]):
        self.params = params
        self.buckets = {s: plan.buckets(s) for s in range(plan.servers)}
        self._owned = {s: plan.owned(s) for s in range(plan.servers)}
        self._home: dict[int, tuple[int, int]] = {}  # parameter index -> (server, bucket)
        for s, buckets in self.buckets.items():
            for b, bucket in enumerate(buckets):
                for position in bucket.positions:
                    self._home[self._owned[s][position]] = (s, b)
        self._missing: dict[tuple[int, int], int] = {}
        self._next = dict.fromkeys(self.buckets, 0)
        self._sends: list = []
        self._payloads: list[torch.Tensor] = []  # kept alive until the next step's sends replace them
        self._open = False
        for index, param in enumerate(params):
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(lambda _, i=index: self._on_gradient(i))

    def push(self, loss: torch.Tensor) -> list:
        """Backward with the pushes inside it; returns the sends still in flight."""
        self._missing = {(s, b): len(bucket.positions) for s, buckets in self.buckets.items()
                         for b, bucket in enumerate(buckets)}
        self._next = dict.fromkeys(self.buckets, 0)
        self._sends, self._payloads = [], []
        self._open = True
        try:
            loss.backward()
        finally:
            self._open = False
        for key in self._missing:
            self._missing[key] = 0
        for s in self.buckets:
            self._send_ready(s)
        return self._sends

    def _on_gradient(self, index: int) -> None:
        if not self._open:  # a backward pass outside a training step (none is expected) sends nothing
            return
        server, bucket = self._home[index]
        self._missing[server, bucket] -= 1
        self._send_ready(server)

    def _send_ready(self, server: int) -> None:
        buckets = self.buckets[server]
        while self._next[server] < len(buckets) and self._missing[server, self._next[server]] == 0:
            bucket = buckets[self._next[server]]
            params = [self.params[self._owned[server][p]] for p in bucket.positions]
            grads = wire.flatten([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
            self._payloads.append(grads)
            self._sends.append(dist.isend(grads, dst=server, tag=wire.TAG_GRADIENTS))
            self._next[server] += 1
