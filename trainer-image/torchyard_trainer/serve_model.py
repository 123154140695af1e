"""The served model: loading and readiness, and Open Inference Protocol v2 requests to tensors.

Kept apart from the HTTP layer so every rule about what a request may contain lives in one place
and every violation becomes a :class:`RequestError` with a status, a metric reason and a message
naming what was wrong; nothing a client sends can reach torch unchecked.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchyard_trainer.artifact import ArtifactError, LoadedArtifact, load_artifact, verify_artifact
from torchyard_trainer.objstore import ObjectStoreError
from torchyard_trainer.serve_source import source_for

log = logging.getLogger(__name__)

PLATFORM = "pytorch_torchscript"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PREDICTIONS_NAME = "predictions"
DATATYPE = "FP32"
FP32_MAX = 3.4028234663852886e38


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a metric ``reason``, a message for the client."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class ModelService:
    """One artifact, served as ``name``/``version``; ready only after load, digest and self-check."""

    def __init__(self, name: str, version: str, model_dir: str | Path, expected_sha256: str | None = None):
        self.name = name
        self.version = version
        self.model_dir = str(model_dir)
        self.expected_sha256 = expected_sha256
        self.state = "waiting for the artifact"
        self._artifact: LoadedArtifact | None = None
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def mark_stopping(self) -> None:
        """Report not ready from now on, so load balancers drain this replica before it stops.

        Requests that still arrive are answered (see :meth:`artifact`)."""
        self._ready.clear()
        self.state = "stopping"

    def wait_for_artifact(self, timeout: float, stop: threading.Event) -> None:
        """Block until metadata.json exists; writers put it in place after the other files.

        An object store that cannot be reached is asked again until the deadline, whose error
        then says what it last answered.
        """
        source, deadline, last_error = source_for(self.model_dir), time.monotonic() + timeout, ""
        while True:
            try:
                if source.present():
                    return
            except ObjectStoreError as exc:
                last_error = f"; last error: {exc}"
            if stop.is_set():
                raise ArtifactError("stopped while waiting for the artifact")
            if time.monotonic() > deadline:
                raise ArtifactError(f"no artifact appeared at {source} within {timeout:g}s{last_error}")
            stop.wait(0.2)

    def load(self) -> None:
        """Fetch, load, verify the digest, run a self-check; raises on any failure."""
        self.state = "loading"
        directory = source_for(self.model_dir).fetch()
        artifact = load_artifact(directory)
        self.state = "verifying"
        if not verify_artifact(directory, expected=self.expected_sha256):
            raise ArtifactError(f"artifact {self.model_dir}: sha256 does not match its recorded digest")
        self._self_check(artifact)
        self._artifact = artifact
        self.state = "ready"
        self._ready.set()
        log.info("serving %s version %s from %s (sha256 %s)", self.name, self.version,
                 self.model_dir, artifact.metadata.get("sha256"))

    def _self_check(self, artifact: LoadedArtifact) -> None:
        self.state = "self-check"
        shape = artifact.config["inputShape"]
        try:
            with torch.inference_mode():
                out = artifact.module(torch.zeros(1, *shape))
        except Exception as exc:
            raise ArtifactError(f"self-check inference on a zero input of shape {[1, *shape]} failed: {exc}") from None
        expected = (1, artifact.config["numOutputs"])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ArtifactError(f"self-check: model returned {got}, expected a tensor of shape {list(expected)}")
        if not torch.isfinite(out).all():
            raise ArtifactError("self-check: model returned non-finite values for a zero input")

    def check_target(self, name: str, version: str | None) -> None:
        """404 unless the URL names this server's model (and version, if it names one)."""
        if name != self.name:
            raise RequestError(404, "unknown_model", f"model {name!r} is not served here; this server serves {self.name!r}")
        if version is not None and version != self.version:
            raise RequestError(404, "unknown_version",
                               f"model {name!r} has no version {version!r} here; this server serves version {self.version!r}")

    def artifact(self) -> LoadedArtifact:
        """The loaded and verified artifact; 503 until there is one.

        A stopping server still answers: readiness turns false so that no new traffic comes, but a
        request already on its way (in flight, or sent before the load balancer noticed) is served.
        """
        if self._artifact is None:
            raise RequestError(503, "not_ready", f"model {self.name!r} is not ready: {self.state}")
        return self._artifact

    def output_names(self) -> frozenset[str]:
        names = {OUTPUT_NAME}
        if self.artifact().config["task"] == "classification":
            names.add(PREDICTIONS_NAME)
        return frozenset(names)

    def metadata(self) -> dict:
        """Model metadata in the v2 shape, plus the artifact's task, classes and digest."""
        artifact = self.artifact()
        config = artifact.config
        outputs = [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, config["numOutputs"]]}]
        if config["task"] == "classification":
            outputs.append({"name": PREDICTIONS_NAME, "datatype": "INT64", "shape": [-1]})
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, *config["inputShape"]]}],
            "outputs": outputs,
            "parameters": {
                "task": config["task"],
                "classes": config["classes"],
                "sha256": artifact.metadata.get("sha256"),
                "metric": artifact.metadata.get("metric"),
                "metrics": artifact.metadata.get("metrics", {}),
            },
        }

    def infer(self, body: bytes, max_batch: int) -> dict:
        """Answer one v2 inference request body."""
        request = self.prepare(body, max_batch)
        return self.respond(request, self.forward(request.batch))

    def prepare(self, body: bytes, max_batch: int) -> "Prepared":
        """The checked request: its input batch and the outputs it wants. Refusals raise."""
        artifact = self.artifact()
        request = parse_json(body)
        batch = parse_input(request, artifact.config["inputShape"], max_batch)
        wanted = requested_outputs(request, self.output_names())
        return Prepared(request, batch, wanted)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's raw output for a batch (any number of requests' rows stacked)."""
        with torch.inference_mode():
            return self.artifact().module(batch)

    def respond(self, prepared: "Prepared", logits: torch.Tensor) -> dict:
        """The v2 response for one request's rows of output."""
        outputs = [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(logits.shape),
                    "data": logits.reshape(-1).tolist()}]
        if prepared.wants(PREDICTIONS_NAME) and self.artifact().config["task"] == "classification":
            predictions = logits.argmax(dim=1)
            outputs.append({"name": PREDICTIONS_NAME, "datatype": "INT64", "shape": list(predictions.shape),
                            "data": predictions.tolist()})
        response: dict[str, Any] = {"model_name": self.name, "model_version": self.version,
                                    "outputs": [o for o in outputs if prepared.wants(o["name"])]}
        if "id" in prepared.request:
            response["id"] = prepared.request["id"]
        return response


@dataclass(frozen=True)
class Prepared:
    """An inference request that passed every check, ready for the model."""

    request: dict
    batch: torch.Tensor
    wanted: frozenset[str]

    def wants(self, name: str) -> bool:
        return name in self.wanted


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a number JSON allows")


def parse_json(body: bytes) -> dict:
    """The request body as a JSON object; NaN and Infinity are refused like any other bad JSON."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "bad_json", "request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise RequestError(400, "bad_json", "request body must be a JSON object")
    return value


def _bad(message: str) -> RequestError:
    return RequestError(400, "bad_input", message)


def _flatten(data: Any, out: list[float], depth: int) -> None:
    """Row-major flattening of flat or nested lists, refusing anything that is not a number."""
    if isinstance(data, list):
        if depth == 0:
            raise _bad("inputs[0].data is nested deeper than its shape")
        for item in data:
            _flatten(item, out, depth - 1)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out.append(float(data))
    else:
        raise _bad(f"inputs[0].data holds {json.dumps(data)[:40]}, which is not a number")


def _check_shape(tensor_spec: dict, input_shape: list[int], max_batch: int) -> list[int]:
    shape = tensor_spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise _bad("inputs[0].shape must be a list of integers")
    if len(shape) != len(input_shape) + 1 or shape[1:] != input_shape:
        raise _bad(f"inputs[0].shape {shape} does not match [N, {', '.join(map(str, input_shape))}]")
    if not 1 <= shape[0] <= max_batch:
        raise _bad(f"inputs[0].shape batch size {shape[0]} must be between 1 and {max_batch}")
    return shape


def parse_input(request: dict, input_shape: list[int], max_batch: int) -> torch.Tensor:
    """The request's one FP32 input as a tensor of shape [N, *input_shape]."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("request has no inputs: expected \"inputs\": [{\"name\": \"input\", ...}]")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"request must have exactly one input object named {INPUT_NAME!r}, got {len(inputs)}")
    spec = inputs[0]
    if spec.get("name") != INPUT_NAME:
        raise _bad(f"inputs[0].name is {spec.get('name')!r}; this model's input is named {INPUT_NAME!r}")
    if spec.get("datatype") != DATATYPE:
        raise _bad(f"inputs[0].datatype is {spec.get('datatype')!r}; this model takes {DATATYPE}")
    shape = _check_shape(spec, input_shape, max_batch)
    if "data" not in spec:
        raise _bad("inputs[0] has no data")
    flat = _numbers(spec["data"], depth=len(shape))
    expected = math.prod(shape)
    if len(flat) != expected:
        raise _bad(f"inputs[0].data has {len(flat)} values; shape {shape} needs {expected}")
    if flat and max(max(flat), -min(flat)) > FP32_MAX:
        raise _bad("inputs[0].data holds values outside the FP32 range")
    return torch.tensor(flat, dtype=torch.float32).reshape(shape)


def _numbers(data: Any, depth: int) -> list:
    """The values of ``data`` in row-major order. A flat list of numbers, the usual case, is taken as it is."""
    if isinstance(data, list) and all(type(v) is float or type(v) is int for v in data):
        return data
    flat: list[float] = []
    _flatten(data, flat, depth)
    return flat


def requested_outputs(request: dict, names: frozenset[str]) -> frozenset[str]:
    """Names of the outputs to return: those the request lists, or all of them."""
    asked = request.get("outputs")
    if asked is None:
        return names
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise _bad("outputs must be a list of objects with a name")
    unknown = [o["name"] for o in asked if o["name"] not in names]
    if unknown:
        raise _bad(f"requested output {unknown[0]!r} does not exist; outputs are {', '.join(sorted(names))}")
    return frozenset(o["name"] for o in asked)
