"""A real S3-compatible server for tests: versitygw (Apache-2.0) over a local directory, on 127.0.0.1.

The binary is built once from its Go module into the cache directory (as the control plane's
binaries are) or taken from $TORCHYARD_VERSITYGW. Without it and without Go, tests that need it
skip with one line saying so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from torchyard_trainer.objstore import ObjectStore, ObjectStoreError

VERSION = "v1.8.0"
MODULE = "github.com/versity/versitygw/cmd/versitygw"
ACCESS, SECRET = "torchyard-test", "torchyard-test-secret-key"
BUCKET = "models"


def binary() -> Path:
    """The versitygw binary, built into the cache on first use."""
    if os.environ.get("TORCHYARD_VERSITYGW"):
        return Path(os.environ["TORCHYARD_VERSITYGW"])
    directory = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchyard" / "bin"
    target = directory / f"versitygw-{VERSION}" / "versitygw"
    if target.exists():
        return target
    if shutil.which("go") is None:
        pytest.skip(f"no S3 server: versitygw {VERSION} is not built and Go is not installed to build it")
    staging = target.parent.with_name(target.parent.name + ".tmp")
    subprocess.run(["go", "install", f"{MODULE}@{VERSION}"], check=True, timeout=1800,
                   env={**os.environ, "GOBIN": str(staging), "GOFLAGS": "-trimpath"})
    shutil.rmtree(target.parent, ignore_errors=True)
    staging.rename(target.parent)
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """versitygw serving ``root`` through the posix backend, with one bucket created."""

    def __init__(self, root: Path):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        data = root / "data"
        data.mkdir(parents=True)
        self.log = root / "versitygw.log"
        self.proc = subprocess.Popen(
            [str(binary()), "--access", ACCESS, "--secret", SECRET, "--port", f"127.0.0.1:{self.port}",
             "posix", str(data)], stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.store = ObjectStore(self.endpoint, ACCESS, SECRET)
        self._wait()
        self.store.create_bucket(BUCKET)

    @property
    def environ(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_REGION": "us-east-1"}

    def _wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"versitygw exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                self.store.list(BUCKET, "")
                return
            except ObjectStoreError as exc:
                if "does not exist" in str(exc) or "NoSuchBucket" in str(exc):
                    return  # answering, with the bucket not created yet
            time.sleep(0.1)
        raise RuntimeError(f"versitygw not answering within {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
