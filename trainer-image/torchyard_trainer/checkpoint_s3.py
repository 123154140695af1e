"""Checkpoints under an ``s3://`` location, each published by a manifest put after its data.

S3 has no rename, so the data of a checkpoint cannot appear under its name all at once the way a
file renamed into place does. Instead ``<name>`` is uploaded first and ``<name>.manifest.json``
(the data's SHA-256 and size) after it: a checkpoint counts only once its manifest exists and the
data it reads back hashes to the manifest's digest. An upload cut short (the pod killed, the store
gone) leaves data without a manifest, which no reader takes and the next save removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Callable

from torchyard_trainer import objstore

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"


def _open(uri: str) -> tuple[objstore.ObjectStore, objstore.Location]:
    return objstore.ObjectStore.from_environ(), objstore.parse_uri(uri)


def manifest(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "sizeBytes": len(data)}


def save(uri: str, name: str, data: bytes, keep: int, pattern: re.Pattern) -> str:
    """Upload ``data`` as checkpoint ``name``, publish it, then keep only the newest ``keep``
    (of the names ``pattern`` matches)."""
    store, location = _open(uri)
    store.put(location.bucket, location.key(name), data)
    store.put(location.bucket, location.key(name + MANIFEST_SUFFIX), json.dumps(manifest(data)).encode())
    _prune(store, location, keep, pattern)
    return name


def _names(store: objstore.ObjectStore, location: objstore.Location) -> set[str]:
    prefix = location.key("")
    return {key[len(prefix):] for key in store.list(location.bucket, prefix) if "/" not in key[len(prefix):]}


def _published(names: set[str], pattern: re.Pattern) -> list[str]:
    """Checkpoint names with a manifest, newest first (names sort by step)."""
    return sorted((n for n in names if pattern.match(n) and n + MANIFEST_SUFFIX in names), reverse=True)


def _prune(store: objstore.ObjectStore, location: objstore.Location, keep: int, pattern: re.Pattern) -> None:
    names = _names(store, location)
    published = _published(names, pattern)
    for old in published[keep:]:
        store.delete(location.bucket, location.key(old + MANIFEST_SUFFIX))  # unpublish before removing
        store.delete(location.bucket, location.key(old))
    unpublished = {n for n in names if not n.endswith(MANIFEST_SUFFIX)} - set(published)
    for leftover in sorted(unpublished):  # uploads cut short; only the lead writes, one at a time
        store.delete(location.bucket, location.key(leftover))


def complete(uri: str, pattern: re.Pattern) -> list[tuple[str, Callable[[], bytes | None]]]:
    """Each published checkpoint's name and a reader of its verified bytes, newest first."""
    store, location = _open(uri)
    return [(name, lambda name=name: _read(store, location, name))
            for name in _published(_names(store, location), pattern)]


def _read(store: objstore.ObjectStore, location: objstore.Location, name: str) -> bytes | None:
    """The checkpoint's bytes, or None (logged) when they are gone or do not match the manifest."""
    try:
        expected = json.loads(store.get(location.bucket, location.key(name + MANIFEST_SUFFIX)))
        data = store.get(location.bucket, location.key(name))
    except (objstore.ObjectStoreError, ValueError) as exc:
        log.warning("checkpoint %s/%s unreadable, skipped: %s", location, name, exc)
        return None
    if manifest(data) != {k: expected.get(k) for k in ("sha256", "sizeBytes")}:
        log.warning("checkpoint %s/%s does not match its manifest, skipped", location, name)
        return None
    return data
