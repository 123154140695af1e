"""Evaluation on the held-out split, and the loss used for training.

Metrics are computed from sums (of losses, hits, errors and counts) so that several workers can
each evaluate a slice of the split and add their sums with one all-reduce.
"""

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


def evaluation_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str,
                    device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """float64 ``[loss sum, hits or squared-error sum, absolute-error sum, count]`` over ``x``, ``y``."""
    if len(x) == 0:
        return torch.zeros(4, dtype=torch.float64)
    outputs = predict(model, x, device).double()
    y = y.cpu()
    if task == REGRESSION:
        error = outputs.reshape(y.shape) - y.double()
        per_sample = (error**2).flatten(1).mean(dim=1)
        return torch.stack([per_sample.sum(), per_sample.sum(), error.abs().flatten(1).mean(dim=1).sum(),
                            torch.tensor(float(len(y)), dtype=torch.float64)])
    loss = F.cross_entropy(outputs, y, reduction="sum")
    hits = (outputs.argmax(dim=1) == y).sum().double()
    return torch.stack([loss, hits, torch.zeros((), dtype=torch.float64), torch.tensor(float(len(y)), dtype=torch.float64)])


def metrics_from_sums(sums: torch.Tensor, task: str) -> dict[str, float]:
    """loss and accuracy (classification) or loss, mse and mae (regression)."""
    loss, second, absolute, count = (float(v) for v in sums.cpu())
    count = max(count, 1.0)
    if task == REGRESSION:
        return {"loss": loss / count, "mse": second / count, "mae": absolute / count}
    return {"loss": loss / count, "accuracy": second / count}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str,
             device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Metrics of ``model`` on all of ``x``, ``y`` in this process."""
    return metrics_from_sums(evaluation_sums(model, x, y, task, device), task)
