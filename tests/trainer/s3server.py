"""A real S3-compatible server for tests: versitygw (Apache-2.0) over a local directory, on 127.0.0.1
(or, for the end-to-end tier, on the real node's address, where pods reach it).

The binary is built once from its Go module by hack/build-control-plane.sh, at the version
hack/versions.env pins, into the cache directory ($TORCHYARD_CACHE/bin) with the control plane's
binaries (`make binaries`; the trainer tier asks for it), or taken from $TORCHYARD_VERSITYGW.
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

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCESS, SECRET = "torchyard-test", "torchyard-test-secret-key"
BUCKET = "models"


def binary() -> Path:
    """The versitygw binary of the pinned version, built with the other binaries when missing."""
    if os.environ.get("TORCHYARD_VERSITYGW"):
        return Path(os.environ["TORCHYARD_VERSITYGW"])
    pinned = dict(line.split("=", 1) for line in (REPO_ROOT / "hack" / "versions.env").read_text().split()
                  if "=" in line and not line.startswith("#"))
    version = os.environ.get("VERSITYGW_VERSION", pinned["VERSITYGW_VERSION"])
    cache = Path(os.environ.get("TORCHYARD_CACHE", Path.home() / ".cache" / "torchyard"))
    target = cache / "bin" / f"versitygw-{version}" / "versitygw"
    if not target.exists():
        if shutil.which("go") is None:
            pytest.skip(f"no S3 server: versitygw {version} is not built and Go is not installed to build it")
        subprocess.run(["bash", str(REPO_ROOT / "hack" / "build-control-plane.sh")], check=True,
                       stdout=subprocess.DEVNULL, timeout=3600)
    return target


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class S3Server:
    """versitygw serving ``root`` through the posix backend, with one bucket created."""

    def __init__(self, root: Path, host: str = "127.0.0.1"):
        self.port = _free_port(host)
        self.endpoint = f"http://{host}:{self.port}"
        data = root / "data"
        data.mkdir(parents=True)
        self.log = root / "versitygw.log"
        self.proc = subprocess.Popen(
            [str(binary()), "--access", ACCESS, "--secret", SECRET, "--port", f"{host}:{self.port}",
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


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A versitygw on loopback over a fresh directory, shared by the tests of one module."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()
