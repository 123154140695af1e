"""The final result a trainer process leaves at ``TORCHYARD_RESULT_PATH``.

In a pod that path is the container's termination message, which the kubelet cuts at 4096 bytes
and the operator reads without any extra permission. The JSON written here always fits: optional
detail is dropped, then messages are shortened, before a byte over the limit is written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BYTES = 4096
# Dropped first, in this order, when a result would not fit.
_OPTIONAL_KEYS = ("training", "compression")


def _encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def fit(payload: dict, limit: int = MAX_BYTES) -> bytes:
    """``payload`` as JSON of at most ``limit`` bytes, losing optional detail first."""
    payload = dict(payload)
    data = _encode(payload)
    for key in _OPTIONAL_KEYS:
        if len(data) < limit:
            return data
        if key in payload:
            payload[key] = None
            data = _encode(payload)
    if len(data) >= limit and "error" in payload:
        error = dict(payload["error"])
        error["message"] = str(error.get("message", ""))[: limit // 2] + "..."
        payload["error"] = error
        data = _encode(payload)
    if len(data) >= limit:
        raise ValueError(f"result of {len(data)} bytes does not fit in {limit}")
    return data


def write_result(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path``; a result that cannot be written is logged, not raised."""
    try:
        data = fit(payload)
        target = Path(path)
        if target.parent and not target.parent.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)
            handle.flush()
            try:
                os.fsync(handle.fileno())
            except OSError:  # some special files (a pipe, a tty) cannot be synced; the bytes are out
                pass
    except (OSError, ValueError) as exc:
        log.error("could not write the result to %s: %s", path, exc)


def error_payload(field: str | None, message: str) -> dict:
    """The result of a failed run: which setting is wrong (if one is) and why."""
    return {"error": {"field": field, "message": message}}
