"""The models the bundled trainer builds: an MLP, a small CNN, or the user's own module.

Every model is wrapped in :class:`Standardized`, which carries the training split's per-feature
mean and standard deviation as buffers. The exported model therefore takes raw inputs (digits'
0..16 pixel values, a CSV's columns as they are), and a server needs no preprocessing step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchyard_trainer.config import ROOT
from torchyard_trainer.errors import UserError
from torchyard_trainer.hooks import load_callable

FIELD = f"{ROOT}.model"


class Standardized(nn.Module):
    """``net((x - mean) / std)``, with mean and std fixed from the training data."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(input_shape))
        self.register_buffer("std", torch.ones(input_shape))
        self.net = net

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class MLP(nn.Module):
    """Flatten, then Linear + ReLU (+ dropout) per hidden size, then a Linear output layer."""

    def __init__(self, in_features: int, hidden_sizes: list[int], num_outputs: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class SmallCNN(nn.Module):
    """3x3 convolutions with ReLU, 2x2 max-pooling while the image is at least 4 pixels wide."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], num_outputs: int, dropout: float):
        super().__init__()
        self.image_shape = list(image_shape)
        layers: list[nn.Module] = []
        depth, height, width = image_shape
        for size in channels:
            layers += [nn.Conv2d(depth, size, kernel_size=3, padding=1), nn.ReLU()]
            if min(height, width) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            depth = size
        layers.append(nn.Flatten())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(depth * height * width, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape([x.shape[0]] + self.image_shape))


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) for a CNN: square vectors become 1xSxS images (digits: 1x8x8)."""
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, *input_shape)  # type: ignore[return-value]
    side = math.isqrt(input_shape[0])
    if len(input_shape) == 1 and side * side == input_shape[0]:
        return (1, side, side)
    raise UserError(f"{FIELD}.name", f"cnn needs image-like inputs (a square vector, HxW or CxHxW), got shape {list(input_shape)}")


def _user_model(reference: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    function = load_callable(reference, f"{FIELD}.module")
    try:
        model = function(tuple(input_shape), num_outputs)
    except Exception as exc:
        raise UserError(f"{FIELD}.module", f"{reference} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{FIELD}.module", f"{reference} must return a torch.nn.Module, got {type(model).__name__}")
    return model


def build_model(architecture: dict, input_shape: tuple[int, ...], num_outputs: int) -> Standardized:
    """A fresh model from the artifact-style ``architecture`` dict (``ModelConfig.architecture()``).

    This is also the ``build_fn`` that ``artifact.load_state_model`` calls to rebuild an eager
    module, so it must accept exactly what config.json records.
    """
    name = architecture.get("name", "mlp")
    dropout = float(architecture.get("dropout", 0.0))
    input_shape = tuple(int(d) for d in input_shape)
    if name == "mlp":
        in_features = math.prod(input_shape)
        net: nn.Module = MLP(in_features, list(architecture.get("hiddenSizes", [128, 64])), num_outputs, dropout)
    elif name == "cnn":
        net = SmallCNN(image_shape(input_shape), list(architecture.get("channels", [16, 32])), num_outputs, dropout)
    elif name == "module":
        net = _user_model(architecture["module"], input_shape, num_outputs)
    else:
        raise UserError(f"{FIELD}.name", f"unknown model {name!r}")
    return Standardized(net, input_shape)
