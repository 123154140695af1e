"""Optimizers by name, built the same way by DDP workers and by parameter servers.

SGD, Adam and AdamW update every element independently, which is what lets a parameter server
optimize its shard as one flat tensor and still match DDP's per-tensor updates.
"""

from __future__ import annotations

from typing import Iterable

import torch

from torchyard_trainer.config import OptimizerConfig


def build_optimizer(params: Iterable[torch.Tensor], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """``momentum`` applies to sgd only; ``weightDecay`` to all three (decoupled for adamw)."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")
