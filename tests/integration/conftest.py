"""Fixtures of the integration tier: a real control plane, fresh namespaces, the CRDs, the
operator running with its chart's RBAC, and fault injection.

The cluster is the one $KUBECONFIG names when it is set (for example a kind cluster), otherwise
the local control plane of hack/local-cluster.py: reused when one is running, else started. It is
left running afterwards, for the next run and for other test sessions sharing it (`make
cluster-down` stops it). Tests that cannot run say so loudly; none is skipped.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
import yaml

from harness import faults as fault_helpers
from harness.cluster import REPO_ROOT, Cluster, local_cluster
from harness.operator import OperatorProcess, install_rbac, token_kubeconfig
from harness.waits import read_or_none, wait_for

CRD_DIR = REPO_ROOT / "crds"
NO_CLUSTER = """no cluster for the integration tests:
{detail}
Either start the local control plane (builds its binaries once, then starts in seconds):
    make cluster-up
or point KUBECONFIG at a disposable test cluster (e.g. a kind cluster)."""


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster():
    """The cluster under test (see the module docstring)."""
    if os.environ.get("KUBECONFIG"):
        handle = Cluster(os.environ["KUBECONFIG"], local=False)
        handle.local = bool(handle.core.list_node(label_selector=f"{fault_helpers.MANAGED_LABEL}").items)
        yield handle
        handle.close()
        return
    started = local_cluster("up", "--no-build")  # a no-op when a healthy cluster runs
    if started.returncode != 0:
        pytest.fail(NO_CLUSTER.format(detail=(started.stderr or started.stdout).strip()), pytrace=False)
    handle = Cluster(local_cluster("kubeconfig").stdout.strip(), local=True)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def crds(cluster):
    """Apply every CRD in crds/ (server-side) and wait until each is Established; their names."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    names = [doc["metadata"]["name"] for path in files for doc in yaml.safe_load_all(path.read_text())
             if doc and doc.get("kind") == "CustomResourceDefinition"]
    for path in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in names:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return names


@pytest.fixture
def namespace(cluster, request):
    """A fresh namespace named after the test, with its default ServiceAccount; deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    body = {"metadata": {"generateName": f"{slug}-", "labels": {"torchyard.dev/test": "true"}}}
    name = cluster.core.create_namespace(body).metadata.name
    wait_for(lambda: read_or_none(lambda: cluster.core.read_namespaced_service_account("default", name)),
             f"the default ServiceAccount in {name}", timeout=30)
    yield name
    cluster.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def operator_rbac(cluster, crds):
    """The chart's ServiceAccount and RBAC, applied once per session."""
    install_rbac(cluster)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def operator_factory(cluster, operator_rbac, tmp_path, request):
    """Start operators (`start(namespace, *extra_args)`) with the chart's rights; all are stopped
    after the test, and their logs are attached to a failing test's report."""
    started: list[OperatorProcess] = []
    request.node.stash[OPERATORS] = started

    def start(namespace: str, *extra_args: str, timeout: float = 60) -> OperatorProcess:
        index = len(started)
        kubeconfig = token_kubeconfig(cluster, tmp_path / f"operator-{index}.kubeconfig")
        proc = OperatorProcess(kubeconfig, namespace, _free_port(), tmp_path / f"operator-{index}.log",
                               extra_args)
        started.append(proc)
        return proc.start(timeout)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def operator(operator_factory, namespace):
    """The operator watching this test's namespace: a handle with .url, .logs(), .restart()."""
    return operator_factory(namespace)


class Faults:
    """The helpers of harness.faults bound to the cluster; nodes a test broke are repaired after it."""

    def __init__(self, core):
        self.core, self._broken_nodes = core, set()

    def __getattr__(self, name):
        helper = getattr(fault_helpers, name)
        return lambda *args, **kwargs: helper(self.core, *args, **kwargs)

    def node_not_ready(self, node, **kwargs):
        self._broken_nodes.add(node)
        return fault_helpers.node_not_ready(self.core, node, **kwargs)

    def node_lost(self, node, **kwargs):
        self._broken_nodes.add(node)
        return fault_helpers.node_lost(self.core, node, **kwargs)

    def repair(self):
        for node in sorted(self._broken_nodes):
            fault_helpers.node_ready(self.core, node)


@pytest.fixture
def faults(cluster):
    """Fault injection (harness/faults.py); needs the local cluster's kwok nodes."""
    if not cluster.local:
        pytest.fail("fault injection needs the local control plane's kwok nodes (make cluster-up)",
                    pytrace=False)
    helper = Faults(cluster.core)
    yield helper
    helper.repair()


OPERATORS = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the operator's log to the report of a test that failed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for index, proc in enumerate(item.stash.get(OPERATORS, [])):
            report.sections.append((f"operator {index} log ({proc.log_path})", proc.logs()[-20000:]))
