"""The model artifact: the one directory a training run leaves behind and a model server loads.

Layout (docs/artifact.md is the user-facing description)::

    model.pt         TorchScript of the final model in eval mode; torch.jit.load is all a server needs
    state_dict.pt    plain state dict, to rebuild an eager module (fine-tuning, distillation teacher)
    config.json      architecture, inputShape, numOutputs, task, classes
    metadata.json    modelName, createdAt, torchVersion, metrics, metric, sha256, sizeBytes,
                     parameters, nonzeroParameters, lineage

The digest is the sha256 of model.pt, state_dict.pt and config.json, in that order. The directory
is written beside its final place and renamed into it, so a reader never sees half an artifact.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from torchyard_trainer import objstore
from torchyard_trainer.compression import finalized_copy

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
STATE_FILE = "state_dict.pt"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
# The files the digest covers, in the order their bytes are hashed.
DIGEST_FILES = (MODEL_FILE, STATE_FILE, CONFIG_FILE)
CONFIG_KEYS = ("architecture", "inputShape", "numOutputs", "task", "classes")
TASKS = ("classification", "regression")
LINEAGE_DEFAULTS = {"job": None, "namespace": None, "attempt": 0, "teacher": None, "compression": None}


class ArtifactError(Exception):
    """An artifact is missing a file, or a file cannot be read as what the format says it is."""


@dataclass
class LoadedArtifact:
    """A loaded artifact: the TorchScript module (eval mode, CPU) with its config and metadata."""

    module: torch.jit.ScriptModule
    config: dict
    metadata: dict
    path: Path


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # TorchScript is deprecated upstream but remains the format a plain server can load; the
    # warning would otherwise appear in every training and serving log.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        yield


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module, without a DistributedDataParallel wrapper."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def validate_config(config: dict) -> dict:
    """Check that ``config`` carries everything a loader needs; return a normalised copy."""
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"artifact config lacks {', '.join(missing)}")
    if config["task"] not in TASKS:
        raise ValueError(f"artifact config task {config['task']!r} is not one of {', '.join(TASKS)}")
    shape = [int(d) for d in config["inputShape"]]
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"artifact config inputShape {config['inputShape']!r} must be positive sizes")
    normalised = dict(config)
    normalised["inputShape"] = shape
    normalised["numOutputs"] = int(config["numOutputs"])
    return normalised


def _export(model: nn.Module, input_shape: list[int]) -> torch.jit.ScriptModule:
    """TorchScript by scripting, or by tracing a zero input where the model cannot be scripted."""
    with _quiet_jit():
        try:
            return torch.jit.script(model)
        except Exception as exc:  # scripting rejects much valid Python; tracing handles the rest
            log.info("torch.jit.script failed (%s); tracing with a zero input instead", exc)
        with torch.no_grad():
            return torch.jit.trace(model, torch.zeros(1, *input_shape))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _fsync_tree(directory: Path) -> None:
    for child in directory.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (the entry, not only the data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_parameters(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in params)
    return total, nonzero


def _check_export(model: nn.Module, scripted: torch.jit.ScriptModule, config: dict) -> None:
    """The export must answer a zero input as the model does, in the shape config.json promises.

    This is the same self-check a model server runs before it reports ready, done here so that a
    broken artifact fails the training run instead of the deployment.
    """
    example = torch.zeros(1, *config["inputShape"])
    with torch.no_grad():
        expected = model(example)
        if not isinstance(expected, torch.Tensor) or tuple(expected.shape) != (1, config["numOutputs"]):
            got = list(expected.shape) if isinstance(expected, torch.Tensor) else type(expected).__name__
            raise ValueError(f"model returns {got} for one input; config numOutputs promises [1, {config['numOutputs']}]")
        try:
            actual = scripted(example)
        except Exception as exc:
            raise ArtifactError(f"exported {MODEL_FILE} fails on a zero input: {exc}") from None
    if not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5):
        raise ArtifactError(f"exported {MODEL_FILE} disagrees with the model on a zero input")


def _write_files(model: nn.Module, staging: Path, config: dict) -> None:
    scripted = _export(model, config["inputShape"])
    _check_export(model, scripted, config)
    with _quiet_jit():
        torch.jit.save(scripted, str(staging / MODEL_FILE))
    torch.save(model.state_dict(), staging / STATE_FILE)
    _write_json(staging / CONFIG_FILE, config)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing an existing artifact there.

    A non-empty directory cannot be replaced by one rename, so the old one is first renamed
    aside, then removed once the new one is in place; a failure puts the old one back.
    """
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    fsync_directory(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_artifact(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    config: dict,
    metrics: dict,
    metric: str,
    lineage: dict,
    model_name: str,
) -> dict:
    """Write ``model`` as an artifact at ``directory`` and return its metadata.

    The model is copied to the CPU in eval mode and any pruning masks are made permanent on the
    copy, so the caller's module (and its training state) is left untouched. ``directory`` may be
    an ``s3://`` location: the artifact is written locally, then uploaded with metadata.json last.
    """
    if objstore.is_uri(str(directory)):
        with tempfile.TemporaryDirectory() as local:
            metadata = save_artifact(model, Path(local) / "artifact", config=config, metrics=metrics, metric=metric,
                                     lineage=lineage, model_name=model_name)
            objstore.upload_directory(objstore.ObjectStore.from_environ(), Path(local) / "artifact",
                                      objstore.parse_uri(str(directory)), last=METADATA_FILE)
        return metadata
    config = validate_config(config)
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    export = finalized_copy(_unwrap(model)).cpu().eval()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_files(export, staging, config)
        total, nonzero = _count_parameters(export)
        metadata = {
            "modelName": model_name,
            "createdAt": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "torchVersion": torch.__version__,
            "metrics": dict(metrics),
            "metric": metric,
            "sha256": artifact_digest(staging),
            "sizeBytes": (staging / MODEL_FILE).stat().st_size,
            "parameters": total,
            "nonzeroParameters": nonzero,
            "lineage": {**LINEAGE_DEFAULTS, **lineage},
        }
        _write_json(staging / METADATA_FILE, metadata)
        _fsync_tree(staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote model artifact %s (sha256 %s)", target, metadata["sha256"])
    return metadata


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"artifact {directory} has no {name}")
    return path


def _read_json(directory: Path, name: str) -> dict:
    path = _require(directory, name)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact {directory}: {name} is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"artifact {directory}: {name} must hold a JSON object")
    return value


def read_config(directory: str | os.PathLike) -> dict:
    """The artifact's config.json, checked for the keys a loader needs."""
    directory = Path(directory)
    raw = _read_json(directory, CONFIG_FILE)
    try:
        return validate_config(raw)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"artifact {directory}: {CONFIG_FILE}: {exc}") from None


def read_metadata(directory: str | os.PathLike) -> dict:
    """The artifact's metadata.json."""
    return _read_json(Path(directory), METADATA_FILE)


def artifact_digest(directory: str | os.PathLike) -> str:
    """sha256 (hex) of model.pt, state_dict.pt and config.json, in that order."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in DIGEST_FILES:
        path = _require(directory, name)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def verify_artifact(directory: str | os.PathLike, expected: str | None = None) -> bool:
    """True when the files hash to the digest in metadata.json (and to ``expected``, if given).

    A missing or unreadable file raises :class:`ArtifactError`; changed bytes return False.
    """
    recorded = read_metadata(directory).get("sha256")
    actual = artifact_digest(directory)
    if actual != recorded:
        log.warning("artifact %s: digest %s differs from metadata.json's %s", directory, actual, recorded)
        return False
    if expected is not None and actual != expected:
        log.warning("artifact %s: digest %s differs from the expected %s", directory, actual, expected)
        return False
    return True


def load_artifact(directory: str | os.PathLike, *, map_location: str = "cpu") -> LoadedArtifact:
    """Load the TorchScript module, config and metadata of the artifact at ``directory``."""
    directory = Path(directory)
    config = read_config(directory)
    metadata = read_metadata(directory)
    model_path = _require(directory, MODEL_FILE)
    try:
        with _quiet_jit():
            module = torch.jit.load(str(model_path), map_location=map_location)
    except Exception as exc:
        raise ArtifactError(f"artifact {directory}: {MODEL_FILE} is not loadable TorchScript: {exc}") from None
    module.eval()
    return LoadedArtifact(module=module, config=config, metadata=metadata, path=directory)


BuildFn = Callable[[dict, tuple, int], nn.Module]


def load_state_model(
    directory: str | os.PathLike, build_fn: BuildFn, *, map_location: str = "cpu"
) -> nn.Module:
    """An eager module rebuilt from config.json's architecture with state_dict.pt's weights.

    ``build_fn(architecture, input_shape, num_outputs)`` is the trainer's model builder; the
    result is in eval mode, ready to serve as a distillation teacher or to be fine-tuned.
    """
    directory = Path(directory)
    config = read_config(directory)
    state_path = _require(directory, STATE_FILE)
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"artifact {directory}: {STATE_FILE} is not a readable state dict: {exc}") from None
    module = build_fn(config["architecture"], tuple(config["inputShape"]), config["numOutputs"])
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"artifact {directory}: {STATE_FILE} does not fit the architecture in {CONFIG_FILE}: {exc}"
        ) from None
    return module.eval()
