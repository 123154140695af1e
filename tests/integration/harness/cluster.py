"""A handle on the cluster under test: its kubeconfig, kubectl, and Python API clients."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[3]
CLUSTER_SCRIPT = REPO_ROOT / "hack" / "local-cluster.py"


class KubectlError(AssertionError):
    """kubectl exited non-zero where the test expected success."""


def tool(name: str) -> str:
    """A command-line tool from the virtualenv running the tests, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: run `make venv`")
    return found


def local_cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run hack/local-cluster.py (up, down, status, kubeconfig, which) and capture its output."""
    return subprocess.run([sys.executable, str(CLUSTER_SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout)


def helm() -> str:
    """The helm binary: $HELM, the one built into the cache, or helm on PATH."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    cached = local_cluster("which", "helm")
    if cached.returncode == 0:
        return cached.stdout.strip()
    found = shutil.which("helm")
    if not found:
        raise FileNotFoundError("helm not found: run hack/build-control-plane.sh (or set HELM)")
    return found


class Cluster:
    """The cluster the integration tests run against, reached through one kubeconfig."""

    def __init__(self, kubeconfig: Path | str, local: bool):
        self.kubeconfig = str(kubeconfig)
        self.local = local  # started by hack/local-cluster.py: kwok nodes, faults can be injected
        self._kubectl = tool("kubectl")

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; with `check`, a failure raises with kubectl's stderr."""
        result = subprocess.run([self._kubectl, *args], input=input, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, "KUBECONFIG": self.kubeconfig})
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    @functools.cached_property
    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=self.kubeconfig)

    @functools.cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @functools.cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @functools.cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @functools.cached_property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    def close(self) -> None:
        if "api" in self.__dict__:
            self.api.close()
