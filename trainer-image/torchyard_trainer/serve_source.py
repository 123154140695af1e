"""Where the model server finds its artifact: a directory, or an ``s3://`` location.

Either way the artifact counts as present once ``metadata.json`` is (writers put it last), and
the server loads a local directory: an object-store artifact is first copied to a fresh directory
under the temporary directory, so the digest check covers exactly the bytes that are loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

from torchyard_trainer import objstore
from torchyard_trainer.artifact import DIGEST_FILES, METADATA_FILE


class Source(Protocol):
    def present(self) -> bool:
        """Whether the whole artifact is there to load."""

    def fetch(self) -> Path:
        """A local directory holding the artifact."""


class DirectorySource:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def present(self) -> bool:
        return (self.path / METADATA_FILE).is_file()

    def fetch(self) -> Path:
        return self.path

    def __str__(self) -> str:
        return str(self.path)


class ObjectSource:
    def __init__(self, uri: str, store: objstore.ObjectStore | None = None):
        self.location = objstore.parse_uri(uri)
        self.store = store or objstore.ObjectStore.from_environ()

    def present(self) -> bool:
        return self.store.exists(self.location.bucket, self.location.key(METADATA_FILE))

    def fetch(self) -> Path:
        target = Path(tempfile.mkdtemp(prefix="torchyard-model-"))
        return objstore.download(self.store, self.location, [*DIGEST_FILES, METADATA_FILE], target)

    def __str__(self) -> str:
        return str(self.location)


def source_for(model_dir: str | Path) -> DirectorySource | ObjectSource:
    return ObjectSource(str(model_dir)) if objstore.is_uri(str(model_dir)) else DirectorySource(model_dir)
