"""Evaluation on the held-out split, and the loss used for training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchyard_trainer.data import CLASSIFICATION, REGRESSION

EVAL_BATCH = 1024


def default_metric(task: str) -> str:
    """The headline metric when ``spec.trainer.metric`` is unset."""
    return "accuracy" if task == CLASSIFICATION else "mse"


def task_loss(task: str):
    """Mean cross-entropy for classification, mean squared error for regression."""
    if task == REGRESSION:
        return lambda outputs, inputs, targets: F.mse_loss(outputs, targets)
    return lambda outputs, inputs, targets: F.cross_entropy(outputs, targets)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Model outputs for every row of ``x``, computed in eval mode, on the CPU afterwards."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + EVAL_BATCH].to(device)).float().cpu() for i in range(0, len(x), EVAL_BATCH)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str,
             device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """loss and accuracy (classification) or loss, mse and mae (regression) on ``x``, ``y``."""
    outputs = predict(model, x, device)
    y = y.cpu()
    if task == REGRESSION:
        error = outputs.reshape(y.shape) - y
        mse = float((error**2).mean())
        return {"loss": mse, "mse": mse, "mae": float(error.abs().mean())}
    return {
        "loss": float(F.cross_entropy(outputs, y)),
        "accuracy": float((outputs.argmax(dim=1) == y).float().mean()),
    }
