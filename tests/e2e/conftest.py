"""The end-to-end tier: the chart installed with real images, and real containers.

Two scripts set it up and export the environment these tests read: hack/e2e.sh (a local control
plane with one real node on this machine, TORCHYARD_E2E_RUNTIME=local) and hack/kind-e2e.sh (a
kind cluster, TORCHYARD_E2E_RUNTIME=kind). Run anywhere else they are skipped with one line saying
so. The integration tests' own fixtures (tests/integration/conftest.py) are not used here: the
operator under test is the one the chart installed, and it watches only TORCHYARD_E2E_NAMESPACE,
where every test creates (and deletes again) what it needs.

Environment:
  KUBECONFIG                        the cluster's admin kubeconfig
  TORCHYARD_E2E_RELEASE             the Helm release, TORCHYARD_E2E_RELEASE_NAMESPACE its namespace
  TORCHYARD_E2E_NAMESPACE           the namespace the installed operator watches
  TORCHYARD_E2E_IMAGE_TAG           tag of torchyard/{operator,trainer,e2e-user} in the node
  TORCHYARD_E2E_RUNTIME             local or kind: how a test reaches a container's process
  TORCHYARD_E2E_CONTAINERD          (local) the node's containerd socket
  KIND_CLUSTER_NAME                 (kind) the cluster's name
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

NEEDED = ("KUBECONFIG", "TORCHYARD_E2E_RELEASE", "TORCHYARD_E2E_RELEASE_NAMESPACE", "TORCHYARD_E2E_NAMESPACE")


@dataclass
class Installed:
    """The release under test and API clients for its cluster."""

    release: str
    release_namespace: str
    namespace: str  # the namespace the operator watches
    image_tag: str
    kubeconfig: str
    runtime: str  # "local" (a real node on this host), "kind", or "" when not said
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def image(self, name: str) -> str:
        """One of the locally built images: operator, trainer or e2e-user."""
        return f"torchyard/{name}:{self.image_tag}"

    def service_get(self, path: str) -> str:
        """GET a path of the operator's Service through the API server's service proxy."""
        return self.core.connect_get_namespaced_service_proxy_with_path(
            f"{self.release}:http", self.release_namespace, path.lstrip("/"))


def pytest_collection_modifyitems(items):
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        reason = (f"end-to-end tests run through hack/e2e.sh (make test-e2e: a real node, needs root) or "
                  f"hack/kind-e2e.sh (Docker and kind), which set {', '.join(missing)}")
        here = Path(__file__).parent
        for item in items:  # this hook sees every collected test; mark only this directory's
            if here in Path(item.fspath).parents:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def installed() -> Installed:
    kubeconfig = os.environ["KUBECONFIG"]
    api = config.new_client_from_config(config_file=kubeconfig)
    runtime = os.environ.get("TORCHYARD_E2E_RUNTIME") or ("kind" if os.environ.get("KIND_CLUSTER_NAME") else "")
    found = Installed(os.environ["TORCHYARD_E2E_RELEASE"], os.environ["TORCHYARD_E2E_RELEASE_NAMESPACE"],
                      os.environ["TORCHYARD_E2E_NAMESPACE"], os.environ.get("TORCHYARD_E2E_IMAGE_TAG", "e2e"),
                      kubeconfig, runtime, api)
    assert_nodes_healthy(found)
    yield found
    api.close()


def assert_nodes_healthy(installed: Installed) -> None:
    """A node under pressure evicts pods and garbage-collects the locally imported images: every
    test would then time out on its own; say why once instead."""
    for node in installed.core.list_node().items:
        pressure = [f"{c.type}: {c.message}" for c in node.status.conditions or []
                    if c.type.endswith("Pressure") and c.status == "True"]
        assert not pressure, f"node {node.metadata.name} is under pressure, pods would be evicted: {pressure}"
        names = {n.split("/", 1)[-1] if n.startswith("docker.io/") else n
                 for image in node.status.images or [] for n in image.names or []}
        missing = [installed.image(i) for i in ("operator", "trainer") if installed.image(i) not in names]
        assert not missing, f"node {node.metadata.name} lacks the images {missing} (pods use imagePullPolicy Never)"


@pytest.fixture
def kill_container(installed):
    """kill_container(pod, container) -> the time of the kill; see container_kill."""
    return lambda pod, container: container_kill(installed, pod, container)


def container_kill(installed: Installed, pod: str, container: str) -> float:
    """SIGKILL the main process of a running container, as the OOM killer or a crash would end it
    (the kubelet sees the process die; nothing is deleted through the API). Returns the time of the
    kill (time.time(): pods on the node share this host's clock)."""
    container_id = running_container_id(installed, pod, container)
    if installed.runtime == "local":
        pid = _containerd_task_pid(container_id)
        os.kill(pid, signal.SIGKILL)
    elif installed.runtime == "kind":
        node = f"{os.environ.get('KIND_CLUSTER_NAME', 'torchyard-e2e')}-control-plane"
        info = json.loads(_run(["docker", "exec", node, "crictl", "inspect", container_id]))
        _run(["docker", "exec", node, "kill", "-KILL", str(info["info"]["pid"])])
    else:
        pytest.skip("killing a container needs TORCHYARD_E2E_RUNTIME=local (with TORCHYARD_E2E_CONTAINERD) or kind")
    return time.time()


def running_container_id(installed: Installed, pod: str, container: str) -> str:
    obj = installed.core.read_namespaced_pod(pod, installed.namespace)
    found = [s for s in obj.status.container_statuses or [] if s.name == container]
    assert found and found[0].state.running and found[0].container_id, (
        f"container {container} of pod {pod} is not running: {found[0].state if found else 'no status'}")
    return found[0].container_id.split("://", 1)[-1]


def _containerd_task_pid(container_id: str) -> int:
    address = os.environ.get("TORCHYARD_E2E_CONTAINERD")
    if not address:
        pytest.skip("TORCHYARD_E2E_RUNTIME=local needs TORCHYARD_E2E_CONTAINERD, the node's containerd socket")
    listing = _run(["ctr", "--address", address, "--namespace", "k8s.io", "tasks", "ls"])
    for line in listing.splitlines()[1:]:  # TASK PID STATUS
        fields = line.split()
        if len(fields) >= 3 and fields[0] == container_id and fields[2] == "RUNNING":
            return int(fields[1])
    raise AssertionError(f"containerd has no running task {container_id}:\n{listing}")


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
    return done.stdout


def pytest_terminal_summary(terminalreporter):
    from e2e_kit import FIGURES

    if FIGURES:
        terminalreporter.section("figures measured by the end-to-end tests")
        for line in FIGURES:
            terminalreporter.write_line(line)
