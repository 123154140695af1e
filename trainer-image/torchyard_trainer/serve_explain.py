"""Explanations: per-feature attributions of a served model's output, by Integrated Gradients.

Integrated Gradients attributes the change of one output, from a baseline input x' to the input x,
to the input's features: feature i gets (x_i - x'_i) times the average gradient of that output
along the straight path from x' to x. The average is an integral, computed here by Gauss-Legendre
quadrature over ``steps`` points with torch autograd. The attributions add up to the output's
change (the method's completeness property) up to the quadrature's error, which every answer
reports per row as ``convergence_delta`` so a client can see whether more steps are needed.

A request is an inference request plus optional ``parameters``: ``target`` (the output index to
explain; default the predicted class, or output 0 of a regression model), ``baseline`` (``"zeros"``,
one number for every feature, or a full input row) and ``steps``. docs/serving.md documents it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchyard_trainer.serve_model import DATATYPE, ModelService, RequestError, parse_input, parse_json

METHOD = "integrated_gradients"
INTEGRATION = "gauss_legendre"
DEFAULT_STEPS = 50
MAX_STEPS = 1024
ROWS_PER_PASS = 4096  # points differentiated in one forward and backward pass, bounding memory
ATTRIBUTIONS, TARGET, DELTA = "attributions", "target", "convergence_delta"


@dataclass(frozen=True)
class Settings:
    """How to explain: which output, from which baseline, over how many points."""

    baseline: torch.Tensor  # one input row
    baseline_name: Any  # as the response names it: "zeros", a number, or the row as a flat list
    target: int | None  # None: the predicted class (classification) or output 0
    steps: int


def _bad(message: str) -> RequestError:
    return RequestError(400, "bad_input", message)


def parse_settings(request: dict, input_shape: list[int], num_outputs: int) -> Settings:
    """The explain parameters of a request, each checked and named in any refusal."""
    params = request.get("parameters", {})
    if not isinstance(params, dict):
        raise _bad("parameters must be an object")
    steps = params.get("steps", DEFAULT_STEPS)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise _bad(f"parameters.steps must be an integer from 1 to {MAX_STEPS}, got {json_text(steps)}")
    target = params.get("target")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool)
                               or not 0 <= target < num_outputs):
        raise _bad(f"parameters.target must be an output index from 0 to {num_outputs - 1}, got {json_text(target)}")
    baseline, name = _baseline(params.get("baseline", "zeros"), input_shape)
    return Settings(baseline=baseline, baseline_name=name, target=target, steps=steps)


def _baseline(value: Any, input_shape: list[int]) -> tuple[torch.Tensor, Any]:
    if value == "zeros":
        return torch.zeros(input_shape), "zeros"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return torch.full(input_shape, float(value)), float(value)
    if isinstance(value, list):
        spec = {"name": "input", "datatype": DATATYPE, "shape": [1, *input_shape], "data": value}
        try:
            row = parse_input({"inputs": [spec]}, input_shape, max_batch=1)[0]
        except RequestError as exc:
            raise _bad("parameters.baseline: " + exc.message.replace("inputs[0].", "")) from None
        return row, row.reshape(-1).tolist()
    raise _bad(f"parameters.baseline must be \"zeros\", a number or an input row of shape {input_shape}, "
               f"got {json_text(value)}")


def json_text(value: Any) -> str:
    return json.dumps(value)[:40]


def quadrature(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre points and weights on [0, 1]; the weights add up to 1."""
    points, weights = np.polynomial.legendre.leggauss(steps)
    return torch.tensor((points + 1) / 2, dtype=torch.float32), torch.tensor(weights / 2, dtype=torch.float32)


def integrated_gradients(module, inputs: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
                         steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(attributions shaped like ``inputs``, convergence delta per row) for output ``target[row]``."""
    alphas, weights = quadrature(steps)
    difference = inputs - baseline
    average_gradient = torch.zeros_like(inputs)
    rows = inputs.shape[0]
    per_pass = max(1, ROWS_PER_PASS // rows)
    expand = (-1,) + (1,) * inputs.dim()
    for start in range(0, steps, per_pass):
        a, w = alphas[start:start + per_pass], weights[start:start + per_pass]
        points = (baseline + a.view(expand) * difference).reshape(-1, *inputs.shape[1:]).requires_grad_(True)
        chosen = module(points).gather(1, target.repeat(len(a)).unsqueeze(1)).sum()
        (gradient,) = torch.autograd.grad(chosen, points)
        average_gradient += (gradient.view(len(a), *inputs.shape) * w.view(expand)).sum(dim=0)
    attributions = difference * average_gradient
    with torch.no_grad():
        ends = module(torch.cat([inputs, baseline.expand_as(inputs)]))
    change = ends[:rows].gather(1, target.unsqueeze(1)) - ends[rows:].gather(1, target.unsqueeze(1))
    return attributions.detach(), attributions.detach().reshape(rows, -1).sum(dim=1) - change.squeeze(1)


def _targets(module, inputs: torch.Tensor, target: int | None, task: str) -> torch.Tensor:
    """The output each row's explanation is about: the one asked for, else the predicted class, else 0."""
    if target is None and task == "classification":
        with torch.no_grad():
            return module(inputs).argmax(dim=1)
    return torch.full((inputs.shape[0],), target or 0, dtype=torch.long)


def explain(service: ModelService, body: bytes, max_batch: int) -> dict:
    """Answer one explain request body (runs many passes: call it off the event loop)."""
    artifact = service.artifact()
    request = parse_json(body)
    config = artifact.config
    inputs = parse_input(request, config["inputShape"], max_batch)
    settings = parse_settings(request, config["inputShape"], config["numOutputs"])
    target = _targets(artifact.module, inputs, settings.target, config["task"])
    with torch.enable_grad():
        attributions, delta = integrated_gradients(artifact.module, inputs, settings.baseline, target, settings.steps)
    response: dict[str, Any] = {
        "model_name": service.name,
        "model_version": service.version,
        "outputs": [
            {"name": ATTRIBUTIONS, "datatype": DATATYPE, "shape": list(attributions.shape),
             "data": attributions.reshape(-1).tolist()},
            {"name": TARGET, "datatype": "INT64", "shape": [len(target)], "data": target.tolist()},
            {"name": DELTA, "datatype": DATATYPE, "shape": [len(delta)], "data": delta.tolist()},
        ],
        "parameters": {"method": METHOD, "integration": INTEGRATION, "steps": settings.steps,
                       "baseline": settings.baseline_name},
    }
    if "id" in request:
        response["id"] = request["id"]
    return response
