"""A parameter server's optimizer: one optimizer parameter per gradient bucket of its shard.

In Sync mode a server steps each bucket as soon as every worker's gradients for it are in, so the
update of the last layers travels back while the workers still run backward on the first ones.
SGD, Adam and AdamW act on every value independently and keep their state per parameter, so
stepping the buckets one at a time makes the update that stepping the whole shard at once makes.
Checkpoints keep the whole-shard layout (one parameter holding the shard) whatever the buckets, so
checkpoints written before the shard was bucketed load as they are, and so would those written
with other bucket sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from torchyard_trainer import ps_protocol as wire
from torchyard_trainer.config import OptimizerConfig
from torchyard_trainer.optim import build_optimizer


class ShardOptimizer:
    """Steps the buckets of ``flat`` (a server's shard, updated in place) alone or all together."""

    def __init__(self, flat: torch.Tensor, buckets: list[wire.Bucket], config: OptimizerConfig):
        self.buckets = buckets or [wire.Bucket((), 0, flat.numel())]  # an empty shard: one empty parameter
        self.params = [nn.Parameter(flat[b.start:b.end]) for b in self.buckets]  # views of the shard
        self.optimizer = build_optimizer(self.params, config)

    def step(self, bucket: int, gradient: torch.Tensor) -> None:
        """Update bucket ``bucket`` with ``gradient`` (its values only); the others keep theirs."""
        self._step({bucket: gradient})

    def step_all(self, gradient: torch.Tensor) -> None:
        """Update the whole shard with ``gradient`` (flat, the shard's length)."""
        self._step({i: gradient[b.start:b.end] for i, b in enumerate(self.buckets)})

    def _step(self, gradients: dict[int, torch.Tensor]) -> None:
        for i, gradient in gradients.items():
            self.params[i].grad = gradient
        self.optimizer.step()  # parameters without a gradient are left alone, their state too
        for i in gradients:
            self.params[i].grad = None

    def state_dict(self) -> dict:
        """The optimizer state as one parameter holding the whole shard (the checkpoint layout)."""
        state = self.optimizer.state_dict()
        order = sorted(range(len(self.buckets)), key=lambda i: self.buckets[i].start)
        per_bucket = [state["state"].get(i, {}) for i in order]
        merged = {key: _join([s[key] for s in per_bucket]) for key in per_bucket[0]}
        group = {**state["param_groups"][0], "params": [0]}
        return {"state": {0: merged} if merged else {}, "param_groups": [group]}

    def load_state_dict(self, whole: dict) -> None:
        """Take a state in the checkpoint layout (:meth:`state_dict`) and cut it into the buckets."""
        if len(whole["param_groups"]) != 1 or len(whole["param_groups"][0]["params"]) != 1:
            raise ValueError("a parameter server's optimizer state must hold one parameter, its whole shard; "
                             f"got {[len(g['params']) for g in whole['param_groups']]} per group")
        merged = whole["state"].get(whole["param_groups"][0]["params"][0], {})
        state = {i: {key: _cut(value, b) for key, value in merged.items()} for i, b in enumerate(self.buckets)}
        group = {**whole["param_groups"][0], "params": list(range(len(self.buckets)))}
        self.optimizer.load_state_dict({"state": state if merged else {}, "param_groups": [group]})


def _join(values: list):
    """One whole-shard value from the buckets' (in shard order): per-value tensors are joined,
    anything else (a step count) is the same in every bucket."""
    if isinstance(values[0], torch.Tensor) and values[0].dim() > 0:
        return torch.cat(values)
    return values[0]


def _cut(value, bucket: wire.Bucket):
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value[bucket.start:bucket.end].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value
