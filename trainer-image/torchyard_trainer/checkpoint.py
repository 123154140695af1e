"""Checkpoints in the shared checkpoint directory: written atomically, read back on restart.

One process (the lead worker) writes ``ckpt-<step>.pt`` into a temporary file beside it and
renames it into place, so a file with the final name is always complete; a crash mid-write leaves
only a temporary file, which the next start ignores and removes. On start the lead loads the newest
checkpoint that reads back and belongs to the same run settings (the fingerprint), and broadcasts it
to every process, so a directory that only the lead's pod can see is enough.

The directory may be an ``s3://`` location (see :mod:`torchyard_trainer.checkpoint_s3`): there a
checkpoint counts once its manifest, put after the data, names the data's digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from torchyard_trainer import checkpoint_s3, objstore
from torchyard_trainer.artifact import fsync_directory
from torchyard_trainer.config import TrainerConfig

log = logging.getLogger(__name__)

FORMAT = 1
KEEP = 3
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")
_REQUIRED = ("format", "fingerprint", "step", "epoch", "batch", "model", "rng")


def fingerprint(config: TrainerConfig, strategy: str, workers: int, parameter_servers: int) -> str:
    """What a checkpoint must match to be resumed: the settings that shape the run's numbers.

    ``epochs`` is left out on purpose, so a finished job can be extended by raising it.
    """
    identity = {
        "model": config.model.architecture(),
        "dataset": config.dataset.__dict__,
        "optimizer": config.optimizer.__dict__,
        "batchSize": config.batch_size,
        "seed": config.seed,
        "strategy": strategy,
        "parameterServer": config.parameter_server.__dict__ if parameter_servers else None,
        "workers": workers,
        "parameterServers": parameter_servers,
        "distillation": config.compression.distillation.__dict__ if config.compression.distillation else None,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:010d}.pt"


def save(directory: str, state: dict) -> Path:
    """Write ``state`` as the checkpoint of ``state['step']``; keep the newest few, remove older."""
    if objstore.is_uri(directory):
        name = checkpoint_s3.save(directory, _path(Path(), int(state["step"])).name, _serialize(state), KEEP, _NAME)
        log.info("checkpoint %s/%s (epoch %d, batch %d)", directory.rstrip("/"), name, state["epoch"], state["batch"])
        return Path(name)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = _path(folder, int(state["step"]))
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(folder)
    _prune(folder)
    log.info("checkpoint %s (epoch %d, batch %d)", target.name, state["epoch"], state["batch"])
    return target


class Writer:
    """Writes checkpoints in a background thread, one at a time, so training does not wait on disk.

    The caller hands over a snapshot that no longer changes (tensors copied off the live model
    and optimizer). A new write first waits for the previous one; :meth:`close` waits for the
    last, and must run before the process exits, or the newest checkpoint may be lost.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._thread: threading.Thread | None = None

    def submit(self, state: dict) -> None:
        self.close()
        self._thread = threading.Thread(target=self._write, args=(state,), name="checkpoint", daemon=True)
        self._thread.start()

    def _write(self, state: dict) -> None:
        try:
            save(self.directory, state)
        except Exception:  # a lost checkpoint costs progress on a restart, not the run itself
            log.exception("checkpoint of step %s not written", state.get("step"))

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoint files, newest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), reverse=True)


def _prune(folder: Path) -> None:
    for old in _checkpoints(folder)[KEEP:]:
        old.unlink(missing_ok=True)
    for leftover in folder.glob(".ckpt-*.tmp"):
        if leftover.stat().st_mtime < _checkpoints(folder)[0].stat().st_mtime:
            leftover.unlink(missing_ok=True)


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    return buffer.getvalue()


def _read(name: str, source: str | Path | io.BytesIO) -> dict | None:
    try:
        # Checkpoints hold python and numpy random state, which weights_only loading refuses; the
        # directory is the job's own, written only by this trainer.
        state = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as exc:
        log.warning("checkpoint %s unreadable, skipped: %s", name, exc)
        return None
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED) or state["format"] != FORMAT:
        log.warning("checkpoint %s is not a checkpoint of this trainer, skipped", name)
        return None
    return state


def _candidates(directory: str) -> Iterator[tuple[str, Callable[[], dict | None]]]:
    """Each complete checkpoint's name and a reader of it, newest first."""
    if objstore.is_uri(directory):
        for name, read in checkpoint_s3.complete(directory, _NAME):
            yield name, lambda read=read, name=name: _read_object(name, read)
        return
    for path in _checkpoints(Path(directory)):
        yield path.name, lambda path=path: _read(path.name, path)


def _read_object(name: str, read: Callable[[], bytes | None]) -> dict | None:
    data = read()
    return None if data is None else _read(name, io.BytesIO(data))


def latest(directory: str, expected_fingerprint: str) -> dict | None:
    """The newest complete checkpoint of this run in ``directory``, or None."""
    for name, read in _candidates(directory):
        state = read()
        if state is None:
            continue
        if state["fingerprint"] != expected_fingerprint:
            log.warning("checkpoint %s belongs to different run settings, skipped", name)
            continue
        return state
    return None


def restore(directory: str, expected_fingerprint: str, is_lead: bool, lead_rank: int) -> dict | None:
    """The checkpoint every process resumes from: read by the lead, broadcast to all (collective)."""
    box: list[Any] = [latest(directory, expected_fingerprint) if is_lead else None]
    dist.broadcast_object_list(box, src=lead_rank)
    state = box[0]
    if state is not None:
        log.info("resuming from step %d (epoch %d, batch %d)", state["step"], state["epoch"], state["batch"])
    return state
