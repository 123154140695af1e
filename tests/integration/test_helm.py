"""`helm install`, `helm upgrade` and `helm uninstall` of charts/torchyard on a real API server.

The chart's Deployment is created for real (kwok plays its pods, so no image runs); the operator
then runs here as a subprocess with exactly what the Deployment would give it: the container's
arguments and environment (the progress key read from the chart's Secret) and a token of the
chart's ServiceAccount. So a right the chart lacks, an argument the CLI refuses or a setting the
environment gets wrong fails here as it would in a user's cluster.

Each test installs its own release (unique names) into its own namespace, so tests sharing the
cluster never meet; the CRDs come from the `crds` fixture and Helm leaves them alone.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from conftest import OPERATORS, _free_port
from harness.cluster import REPO_ROOT, Cluster, helm, tool
from harness.operator import OperatorProcess
from harness.waits import read_or_none, wait_for

CHART = REPO_ROOT / "charts" / "torchyard"
GROUP, VERSION = "torchyard.dev", "v1alpha1"


class Release:
    """One Helm release of the chart, driven with the cluster's admin kubeconfig."""

    def __init__(self, cluster: Cluster, name: str, namespace: str):
        self.cluster, self.name, self.namespace = cluster, name, namespace
        self.fullname = f"{name}-torchyard"

    def helm(self, *args: str, values: dict | None = None) -> str:
        cmd = [helm(), *args, "--kubeconfig", self.cluster.kubeconfig, "--namespace", self.namespace]
        if values is not None:
            cmd += ["-f", "-"]
        result = subprocess.run(cmd, input=yaml.safe_dump(values) if values else None, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
        return result.stdout

    def install(self, values: dict) -> str:
        return self.helm("install", self.name, str(CHART), "--wait", "--timeout", "120s", values=values)

    def upgrade(self, values: dict) -> str:
        return self.helm("upgrade", self.name, str(CHART), "--reuse-values", "--wait", "--timeout", "120s",
                         values=values)

    def uninstall(self) -> str:
        return self.helm("uninstall", self.name, "--wait", "--timeout", "120s", "--ignore-not-found")

    def deployment(self):
        return self.cluster.apps.read_namespaced_deployment(self.fullname, self.namespace)

    def secret_key(self) -> bytes:
        secret = self.cluster.core.read_namespaced_secret(f"{self.fullname}-progress", self.namespace)
        return base64.b64decode(secret.data["progress-key"])

    def operator_command(self) -> tuple[list[str], dict[str, str]]:
        """The operator container's arguments and environment, secret references resolved."""
        container = self.deployment().spec.template.spec.containers[0]
        env = {}
        for var in container.env:
            if var.value_from is not None:
                ref = var.value_from.secret_key_ref
                data = self.cluster.core.read_namespaced_secret(ref.name, self.namespace).data
                env[var.name] = base64.b64decode(data[ref.key]).decode()
            else:
                env[var.name] = var.value
        return list(container.args), env

    def token_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig holding only a token of the chart's ServiceAccount."""
        token = self.cluster.kubectl("create", "token", self.fullname, "-n", self.namespace,
                                     "--duration=1h").stdout.strip()
        view = json.loads(self.cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "chart",
                  "clusters": [{"name": "c", "cluster": view["clusters"][0]["cluster"]}],
                  "users": [{"name": "sa", "user": {"token": token}}],
                  "contexts": [{"name": "chart", "context": {"cluster": "c", "user": "sa"}}]}
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


class ChartOperator(OperatorProcess):
    """`torchyard <the Deployment's args>`, listening on loopback instead of the pod's port."""

    def __init__(self, kubeconfig: Path, args: list[str], log_path: Path):
        super().__init__(kubeconfig, "", _free_port(), log_path)
        self.args = args

    def argv(self) -> list[str]:
        return [tool("torchyard"), *self.args, "--http-host", "127.0.0.1", "--http-port", str(self.port)]


@pytest.fixture
def start_operator(request, tmp_path, monkeypatch):
    """Start the operator as the release's Deployment describes it; stopped after the test."""
    started: list[OperatorProcess] = []
    request.node.stash[OPERATORS] = started

    def start(release: Release, *extra: str) -> ChartOperator:
        args, env = release.operator_command()
        for key, value in env.items():  # TORCHYARD_PROGRESS_URL_BASE is set to loopback on start
            monkeypatch.setenv(key, value)
        index = len(started)
        kubeconfig = release.token_kubeconfig(tmp_path / f"chart-{index}.kubeconfig")
        proc = ChartOperator(kubeconfig, [*args, *extra], tmp_path / f"chart-operator-{index}.log")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def release(cluster, crds, namespace):
    """A release of the chart in the test's namespace, uninstalled after the test however it ends
    (its ClusterRoles would otherwise outlive the namespace)."""
    handle = Release(cluster, f"ty{namespace[-5:]}", namespace)
    yield handle
    handle.uninstall()


@pytest.fixture
def other_namespace(cluster):
    """A second fresh namespace, for jobs outside the release's namespace."""
    body = {"metadata": {"generateName": "helm-jobs-", "labels": {"torchyard.dev/test": "true"}}}
    name = cluster.core.create_namespace(body).metadata.name
    wait_for(lambda: read_or_none(lambda: cluster.core.read_namespaced_service_account("default", name)),
             f"the default ServiceAccount in {name}", timeout=30)
    yield name
    cluster.core.delete_namespace(name, propagation_policy="Background")


def submit(cluster: Cluster, namespace: str, name: str, gpus: int = 0) -> None:
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
           "spec": {"strategy": "AllReduce", "worker": {"replicas": 2, "gpus": gpus},
                    "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", job)


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    obj = read_or_none(lambda: cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                           "trainingjobs", name))
    return ((obj or {}).get("status") or {}).get("phase")


def post_progress(url: str, pod_env: dict[str, str], step: int) -> int:
    path = pod_env["TORCHYARD_PROGRESS_URL"].split("/v1/", 1)[1]
    body = json.dumps({"step": step, "totalSteps": 100, "epoch": 0, "loss": 1.0, "percent": float(step)}).encode()
    request = urllib.request.Request(f"{url}/v1/{path}", data=body, method="POST", headers={
        "Authorization": f"Bearer {pod_env['TORCHYARD_PROGRESS_TOKEN']}", "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def pod_env(cluster: Cluster, namespace: str, pod: str) -> dict[str, str]:
    spec = cluster.core.read_namespaced_pod(pod, namespace).spec
    return {e.name: e.value for e in spec.containers[0].env if e.value is not None}


def test_install_upgrade_uninstall_with_the_operator_under_the_charts_account(
        cluster, namespace, release, start_operator):
    release.install({"trainer": {"image": {"tag": "helm-test"}}})
    deployment = release.deployment()
    assert deployment.status.ready_replicas == 1
    key = release.secret_key()

    operator = start_operator(release, f"--namespace={namespace}")
    submit(cluster, namespace, "gpu", gpus=1)
    wait_for(lambda: phase(cluster, namespace, "gpu") == "Running", "the job Running", timeout=60)
    worker = cluster.core.read_namespaced_pod("gpu-worker-0", namespace).spec
    assert worker.containers[0].image == "torchyard/trainer:helm-test"
    assert [t.to_dict() for t in worker.tolerations if t.key == "nvidia.com/gpu"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "value": None,
         "toleration_seconds": None}]
    env = pod_env(cluster, namespace, "gpu-worker-0")
    assert post_progress(operator.url, env, 10) == 202

    release.upgrade({"logLevel": "DEBUG"})
    assert "--log-level=DEBUG" in release.deployment().spec.template.spec.containers[0].args
    assert release.deployment().metadata.generation > deployment.metadata.generation
    assert release.secret_key() == key, "an upgrade must keep the progress key"
    operator.stop()
    upgraded = start_operator(release, f"--namespace={namespace}")
    # A token handed to a pod before the upgrade is still accepted by the upgraded operator (which
    # answers 404 until its first pass has seen the job; a changed key would answer 403).
    answer = wait_for(lambda: (code := post_progress(upgraded.url, env, 20)) != 404 and code,
                      "the upgraded operator to know the job", timeout=30)
    assert answer == 202
    submit(cluster, namespace, "after")
    wait_for(lambda: phase(cluster, namespace, "after") == "Running", "a job Running after the upgrade", timeout=60)

    upgraded.stop()
    release.uninstall()
    assert read_or_none(lambda: cluster.apps.read_namespaced_deployment(release.fullname, namespace)) is None
    assert read_or_none(lambda: cluster.core.read_namespaced_secret(f"{release.fullname}-progress", namespace)) is None
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    assert read_or_none(lambda: rbac.read_cluster_role(f"{release.fullname}-operator")) is None
    assert read_or_none(lambda: rbac.read_cluster_role_binding(f"{release.fullname}-operator")) is None
    # CRDs, and the jobs users created, outlive the release.
    assert phase(cluster, namespace, "gpu") == "Running"


def can(as_operator: Cluster, verb: str, resource: str, namespace: str | None) -> bool:
    attributes = {"verb": verb, "resource": resource, "namespace": namespace or ""}
    review = {"spec": {"resourceAttributes": attributes}}
    return client.AuthorizationV1Api(as_operator.api).create_self_subject_access_review(review).status.allowed


def acting(proc: OperatorProcess) -> bool:
    """Whether kopf's peering last let this replica act (each starts paused until it knows its peers)."""
    said = [line for line in proc.logs().splitlines() if "kopf._core.engines.peering" in line]
    return bool(said) and "Resuming operations" in said[-1]


def test_namespaced_replicas_peer_and_stay_in_their_namespaces(
        cluster, namespace, release, other_namespace, start_operator, tmp_path):
    release.install({"replicaCount": 2, "watchNamespaces": [other_namespace]})
    assert release.deployment().status.ready_replicas == 2

    as_operator = Cluster(release.token_kubeconfig(tmp_path / "sa.kubeconfig"), local=cluster.local)
    assert can(as_operator, "create", "pods", other_namespace)
    assert not can(as_operator, "create", "pods", namespace), "a namespace it does not watch"
    assert not can(as_operator, "list", "pods", None), "pods across the cluster"
    as_operator.close()

    first, second = start_operator(release), start_operator(release)
    peering = release.fullname

    def peers() -> dict:
        obj = cluster.custom.get_namespaced_custom_object("kopf.dev", "v1", other_namespace, "kopfpeerings", peering)
        return obj.get("status") or {}

    wait_for(lambda: len(peers()) == 2, "both replicas in the KopfPeering", timeout=30)
    wait_for(lambda: [acting(first), acting(second)].count(True) == 1, "exactly one replica acting", timeout=30)
    assert not any("Possibly conflicting operators" in p.logs() for p in (first, second)), "tied replicas"

    submit(cluster, other_namespace, "peered")
    wait_for(lambda: phase(cluster, other_namespace, "peered") == "Running", "the job Running", timeout=60)
