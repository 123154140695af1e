"""The operator under test, as a subprocess holding only its own ServiceAccount's rights.

The chart's ServiceAccount and RBAC are rendered with `helm template` and applied; the operator
then gets a kubeconfig with nothing but a token of that ServiceAccount, so a permission the chart
lacks fails the test that needs it, as it would fail a user's install.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .cluster import REPO_ROOT, Cluster, helm, tool
from .waits import wait_for

SYSTEM_NAMESPACE = "torchyard-system"
RELEASE = "torchyard"
SERVICE_ACCOUNT = "torchyard"  # the chart's default: the release's full name
CHART = REPO_ROOT / "charts" / "torchyard"
RBAC_TEMPLATES = ["templates/serviceaccount.yaml", "templates/rbac.yaml"]


def install_rbac(cluster: Cluster, *values: str) -> None:
    """Apply the chart's ServiceAccount, ClusterRole and ClusterRoleBinding (nothing else), rendered
    with the chart's defaults and the `key=value` settings in `values` (helm's --set)."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}))
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    args = [helm(), "template", RELEASE, str(CHART), "--namespace", SYSTEM_NAMESPACE,
            "--kube-version", version]
    for template in RBAC_TEMPLATES:
        args += ["--show-only", template]
    for value in values:
        args += ["--set", value]
    rendered = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if rendered.returncode != 0:
        raise AssertionError(f"helm template failed: {rendered.stderr.strip()}")
    cluster.kubectl("apply", "-f", "-", input=rendered.stdout)


def token_kubeconfig(cluster: Cluster, path: Path, duration: str = "2h") -> Path:
    """A kubeconfig for the same server whose only credential is the ServiceAccount's token."""
    token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE,
                            f"--duration={duration}").stdout.strip()
    view = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "--flatten",
                                      "-o", "json").stdout)
    server = view["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "under-test", "cluster": server}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "under-test", "user": SERVICE_ACCOUNT}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class OperatorProcess:
    """`torchyard operator` started as a subprocess; its output goes to a log file."""

    def __init__(self, kubeconfig: Path, namespace: str, port: int, log_path: Path,
                 extra_args: tuple[str, ...] = ()):
        self.kubeconfig, self.namespace, self.port = kubeconfig, namespace, port
        self.log_path, self.extra_args = log_path, extra_args
        self.url = f"http://127.0.0.1:{port}"
        self._popen: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [tool("torchyard"), "operator", "--namespace", self.namespace, "--standalone",
                "--http-host", "127.0.0.1", "--http-port", str(self.port), *self.extra_args]

    def start(self, timeout: float = 60) -> "OperatorProcess":
        """Start it and wait until GET /healthz answers 200; fail with its log if it exits first."""
        # Pods are told to report progress to this operator; tests stand in for them on loopback.
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1",
               "TORCHYARD_PROGRESS_URL_BASE": self.url}
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
        wait_for(self._started, f"operator /healthz at {self.url}", timeout, interval=0.3)
        return self

    def _started(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            raise AssertionError(f"operator exited with {self._popen.returncode}:\n{self.logs()[-4000:]}")
        return self.healthy()

    def healthy(self) -> bool:
        """GET /healthz answers 200."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self, grace: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-work, without a chance to clean up."""
        if self.running:
            self._popen.kill()
            self._popen.wait()

    def restart(self, timeout: float = 60) -> "OperatorProcess":
        self.stop()
        return self.start(timeout)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

