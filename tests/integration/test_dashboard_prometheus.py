"""The chart's Grafana dashboard against a real Prometheus: every query returns data for a job that ran.

Prometheus (the pinned build of hack/build-control-plane.sh) scrapes three static targets on
127.0.0.1: the operator the harness runs with the chart's RBAC, the training process of the job's
pod, and the model server of the served version. kwok starts no containers, so the test runs each
pod's own program here: the real trainer with the environment the operator gave the job's pod
(its addresses and directories moved to loopback and a temporary directory), and the real model
server with the arguments of the version's Deployment, serving the artifact that trainer wrote.
The static targets carry the `namespace` label a PodMonitor attaches; the chart's PodMonitors,
translated into Kubernetes discovery, must find the version pods.

Some series exist only once something happened, so the test makes each happen: a reconcile fails
(a quota forbids the pod), the program fails once (a restart), the job succeeds and registers its
version, which is served; a better one is promoted, a worse one refused by the gate, traffic rolled
back to the job's version, and its server answers good, bad and explain requests.
Then every expression of the dashboard, its variables set to this namespace, job and model, is
asked over the test's time span, as Grafana would draw it, and must return a number.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from torchyard_spec.contract import PodEnv
from torchyard_trainer import local

from harness.cluster import helm
from harness.prometheus import (Prometheus, Query, chart_pod_monitors, dashboard_queries, free_port,
                                pod_monitor_scrape_config, with_data)
from harness.waits import wait_for
from serving_kit import MODEL, model_deployment, model_version, patch_spec, version_phase, wait_selected

pytestmark = pytest.mark.integration

GROUP, VERSION = "torchyard.dev", "v1alpha1"
JOB = "dash"
WORKERS = 2  # two, so that gradients are exchanged: the communication panels
# Long enough to span several scrapes on a fast machine (a few seconds); minutes on a busy one.
EPOCHS = 40
SCRAPE_INTERVAL = 1  # seconds
# Grafana's $__rate_interval: four scrape intervals at least.
RATE_INTERVAL = f"{4 * SCRAPE_INTERVAL}s"


def scrape_configs(operator_port: int, trainer_ports: list[int], server_port: int, namespace: str) -> list[dict]:
    """The operator as the ServiceMonitor scrapes it, the pods as the PodMonitors do (honor_labels
    for the trainer's own `job` label; the pod's namespace as a target label)."""
    def static(name: str, ports: list[int], labels: dict | None = None, honor: bool = True) -> dict:
        return {"job_name": name, "honor_labels": honor, "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports], "labels": labels or {}}]}
    return [static("operator", [operator_port]), static("trainer", trainer_ports, {"namespace": namespace}),
            static("model-server", [server_port], {"namespace": namespace}, honor=False)]


def job_body(epochs: int) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": JOB},
            "spec": {"strategy": "AllReduce", "modelName": MODEL, "worker": {"replicas": WORKERS},
                     "runPolicy": {"backoffLimit": 3, "restartPolicy": "OnFailure"},
                     "trainer": {"model": {"name": "mlp", "hiddenSizes": [64]}, "dataset": {"name": "digits"},
                                 "epochs": epochs, "batchSize": 16}}}


def job_status(cluster, namespace: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", JOB).get("status") or {}


def operator_text(operator) -> str:
    with urllib.request.urlopen(operator.url + "/metrics", timeout=5) as response:
        return response.read().decode()


def refuse_pods_until_a_reconcile_fails(cluster, namespace: str, operator, faults) -> None:
    """A quota of no pods: the operator's pod creation is refused (403, exceeded quota), a
    reconcile error. The quota goes again once one is counted, and the pod comes."""
    cluster.core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"},
                                                              "spec": {"hard": {"pods": "0"}}})
    wait_for(lambda: cluster.core.read_namespaced_resource_quota("no-pods", namespace).status.hard,
             "the quota in force")
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", job_body(EPOCHS))
    wait_for(lambda: any(line.startswith("torchyard_reconcile_errors_total{") and 'kind="TrainingJob"' in line
                         for line in operator_text(operator).splitlines()),
             "a failed TrainingJob reconcile counted", timeout=60)
    cluster.core.delete_namespaced_resource_quota("no-pods", namespace)
    faults.wait_running(namespace, f"{JOB}-worker-0", timeout=120)


def program_env(pod, workdir: Path, metrics_port: int, master_port: int) -> dict[str, str]:
    """The contract environment the operator gave `pod`, moved onto this machine."""
    given = {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}
    env = PodEnv.from_environ(given)
    assert env.job_name == JOB and env.model_name == MODEL, env
    run = Path(env.model_dir).name  # the run's name: the trainer's model_version label
    local = replace(env, master_addr="127.0.0.1", master_port=master_port, worker_addresses=(),
                    parameter_server_addresses=(), checkpoint_dir=str(workdir / "checkpoints"),
                    model_dir=str(workdir / "models" / run), metrics_port=metrics_port,
                    progress_url="", progress_token="", result_path=str(workdir / f"result-{env.rank}.json"))
    return {**local.to_environ(), "OMP_NUM_THREADS": "1", "TORCHYARD_METRICS_BIND_ADDRESS": "127.0.0.1"}


def train_here(cluster, namespace: str, faults, workdir: Path, metrics_ports: list[int]) -> dict:
    """The real trainer, one process per pod of the job with that pod's environment; the lead
    worker's result JSON."""
    master_port = free_port()
    environs = [program_env(faults.wait_running(namespace, f"{JOB}-worker-{i}"), workdir, port, master_port)
                for i, port in enumerate(metrics_ports)]
    results = local.launch(environs, names=[f"worker-{i}" for i in range(len(environs))], timeout=600)
    assert all(r.returncode == 0 for r in results), "\n".join(line for r in results for line in r.output[-30:])
    return json.loads((workdir / "result-0.json").read_text())


def server_argv(deployment, artifact: str, port: int) -> list[str]:
    """The version's model server as its Deployment runs it (the registered digest checked), on
    127.0.0.1 over `artifact`, the local copy of the path the Deployment names."""
    container = deployment.spec.template.spec.containers[0]
    assert list(container.command[-2:]) == ["-m", "torchyard_trainer.serve"], container.command
    args, out = list(container.args), []
    while args:
        flag = args.pop(0)
        value = args.pop(0) if args and not args[0].startswith("--") else None
        out += [flag, {"--model-dir": artifact, "--port": str(port)}.get(flag, value)] if value is not None else [flag]
    return [sys.executable, "-m", "torchyard_trainer.serve", *out, "--host", "127.0.0.1", "--threads", "1"]


def post(url: str, body: dict) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def traffic(base: str) -> dict[str, list[int]]:
    """Concurrent good requests (the batcher shares passes), a bad one and an explanation."""
    from sklearn.datasets import load_digits

    rows = load_digits().data[:32].tolist()
    good = [{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]} for row in rows]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda body: post(base + "/infer", body), good))
    bad = post(base + "/infer", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    explained = post(base + "/explain", {**good[0], "parameters": {"steps": 8}})
    return {"good": codes, "bad": [bad], "explain": [explained]}


class Programs:
    """Processes the test starts here; all stopped afterwards."""

    def __init__(self):
        self.popens: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.popens.append(popen)
        return popen

    def stop(self) -> None:
        for popen in self.popens:
            popen.terminate()
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()


@pytest.fixture
def programs():
    started = Programs()
    yield started
    started.stop()


@pytest.fixture
def prometheus_for(tmp_path):
    started: list[Prometheus] = []

    def start(configs: list[dict]) -> Prometheus:
        started.append(Prometheus(tmp_path / "prometheus", configs, interval=f"{SCRAPE_INTERVAL}s").start())
        return started[-1]

    yield start
    for prom in started:
        prom.stop()


def run_the_job(cluster, namespace, operator, faults, workdir: Path, metrics_ports: list[int]) -> dict:
    """A failed reconcile, a failed first attempt, then the real trainer's run reported as the pods'."""
    refuse_pods_until_a_reconcile_fails(cluster, namespace, operator, faults)
    # The first attempt runs (the time to running is its), then its program fails.
    wait_for(lambda: job_status(cluster, namespace).get("phase") == "Running", "the first attempt running", timeout=60)
    faults.terminate_container(namespace, f"{JOB}-worker-1", exit_code=1, message="RuntimeError: first try")
    wait_for(lambda: job_status(cluster, namespace).get("attempt") == 1
             and job_status(cluster, namespace).get("phase") == "Running", "the second attempt running", timeout=60)
    result = train_here(cluster, namespace, faults, workdir, metrics_ports)
    for i in reversed(range(WORKERS)):
        faults.terminate_container(namespace, f"{JOB}-worker-{i}", exit_code=0,
                                   message=json.dumps(result) if i == 0 else None)
    wait_for(lambda: job_status(cluster, namespace).get("phase") == "Succeeded", "the job Succeeded", timeout=60)
    return result


def serve_versions(cluster, namespace, programs, workdir: Path, artifact: str, port: int) -> tuple[str, int]:
    """The job's registered version served, a better one promoted, a worse one refused by the
    gate, and a rollback to the job's version; its server started here. (Base URL, version.)"""
    registered = wait_for(lambda: job_status(cluster, namespace).get("result", {}).get("modelVersion"),
                          "the job's ModelVersion registered")
    trained = int(registered.rsplit("-v", 1)[1])
    model_deployment(cluster, namespace, gate={"maxRegression": 0.01}, server={"batching": {"maxBatchSize": 8}})
    wait_selected(cluster, namespace, trained)
    model_version(cluster, namespace, trained + 1, 0.99)
    wait_selected(cluster, namespace, trained + 1)
    model_version(cluster, namespace, trained + 2, 0.10)
    wait_for(lambda: version_phase(cluster, namespace, trained + 2) == "Rejected", "the worse version Rejected")
    patch_spec(cluster, namespace, {"activeVersion": trained})
    wait_selected(cluster, namespace, trained)
    deployment = cluster.apps.read_namespaced_deployment(f"{MODEL}-v{trained}", namespace)
    programs.start(server_argv(deployment, artifact, port), workdir / "server.log")
    base = f"http://127.0.0.1:{port}/v2/models/{MODEL}"
    wait_for(lambda: _ready(base), "the model server ready", timeout=120, interval=0.5)
    return base, trained


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def evaluate(prom: Prometheus, queries: list[Query], variables: dict[str, str], start: float) -> dict[str, list]:
    """Each query's series that hold a number over [start, now], keyed by panel and legend."""
    end = time.time()
    return {f"{q.panel} / {q.legend}": with_data(prom.query_range(q.resolved(variables), start, end, SCRAPE_INTERVAL))
            for q in queries}


def test_every_dashboard_query_returns_data_for_a_job_that_ran(cluster, namespace, operator, faults, programs,
                                                               prometheus_for, tmp_path):
    trainer_ports, server_port = [free_port() for _ in range(WORKERS)], free_port()
    discovery = [pod_monitor_scrape_config(m, cluster.kubeconfig, [namespace], f"{SCRAPE_INTERVAL}s")
                 for m in chart_pod_monitors(helm())]
    prom = prometheus_for(scrape_configs(operator.port, trainer_ports, server_port, namespace) + discovery)
    prom.wait_up("operator")
    start = time.time()

    result = run_the_job(cluster, namespace, operator, faults, tmp_path, trainer_ports)
    base, served = serve_versions(cluster, namespace, programs, tmp_path, result["artifact"]["path"], server_port)
    prom.wait_up("model-server")
    answered = traffic(base)
    assert set(answered["good"]) == {200} and answered["bad"] == [400] and answered["explain"] == [200], answered
    time.sleep(5 * SCRAPE_INTERVAL)  # scraped after the last request, with room for a rate() window

    variables = {"namespace": namespace, "trainingjob": JOB, "model": MODEL, "__rate_interval": RATE_INTERVAL}
    queries = dashboard_queries()
    found = evaluate(prom, queries, variables, start)
    empty = sorted(name for name, series in found.items() if not series)
    assert not empty, f"dashboard queries without data: {empty}\n{prom.logs()[-2000:]}"
    assert_labels_name_the_run(found, result, served)
    assert_discovery_finds_the_model_servers(prom, cluster, namespace)


def assert_discovery_finds_the_model_servers(prom: Prometheus, cluster, namespace: str) -> None:
    """The chart's PodMonitors, as Kubernetes discovery, select exactly the version pods (kwok's
    addresses answer nothing; the real-node tier scrapes them, tests/e2e/test_metrics.py)."""
    found = {t["labels"]["pod"] for t in prom.targets() if t["scrapePool"] == "torchyard-model-servers"}
    serving = {p.metadata.name for p in cluster.core.list_namespaced_pod(
        namespace, label_selector="torchyard.dev/model-deployment").items}
    assert serving and found == serving, (found, serving)


def assert_labels_name_the_run(found: dict[str, list], result: dict, served: int) -> None:
    """The trainer's series are the job's; the model servers' name the model and its version."""
    run = Path(result["artifact"]["path"]).name
    for name, series in found.items():
        for labels in (s["metric"] for s in series):
            if "rank" in labels:  # a training process's series
                assert labels["job"] == JOB, (name, labels)
            if "model_version" in labels:
                assert labels["model_name"] == MODEL and labels["model_version"] in {str(served), run}, (name, labels)
