"""8. Every metric the chart's Grafana dashboard queries is exported with data, scraped from inside
the cluster as Prometheus would: a training process's endpoint while it trains, a model server's
through its Service, and the operator's through the chart's Service.

Some series only exist once something happened, so this test makes each happen: a job trains and
is served (time to running, phase counts, a promotion), a worse version is refused by the gate, a
job restarts after a failed first attempt, a bad inference request is answered 400, and a reconcile
fails (a ResourceQuota forbids the job's pod, as a full namespace would).

With TORCHYARD_E2E_HOST_PROMETHEUS=1, a real Prometheus (the pinned build) runs on the host
meanwhile and finds the training and model-server pods through Kubernetes service discovery,
selected as the chart's PodMonitors select them; every query of the dashboard's training and
serving rows must then return data labelled with the job, the model and its version. hack/e2e.sh
turns it on (the host reaches the local node's pods); on kind it stays off unless set."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
import time

import pytest

from e2e_kit import (PREDICT, ROOT, SCRAPE, Resources, assert_succeeded, example, explain_job, get, mv_status,
                     run_client, start_client, wait, wait_client, wait_job, wait_pod_running, wait_registered,
                     wait_serving,
                     with_claim)

NAME = "e2e-metrics"  # the model and its ModelDeployment
JOB = "e2e-metrics-train"

# argv: the model's URL. One inference request whose shape does not fit the model, and one
# explanation of a digit; prints each answer's status.
MORE_TRAFFIC = r'''
import json, sys, urllib.error, urllib.request
from sklearn.datasets import load_digits
def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return {"status": answer.status, "body": json.load(answer)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode()}
bad = post(sys.argv[1] + "/infer", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
print(json.dumps({"kind": "bad", **bad}))
row = [float(v) for v in load_digits().data[0]]
explained = post(sys.argv[1] + "/explain", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}],
                                             "parameters": {"steps": 16}})
print(json.dumps({"kind": "explain", **explained}))
'''


def dashboard_series() -> set[str]:
    """Every series name the dashboard's queries read, by the dashboard unit test's own parser."""
    unit = str(ROOT / "tests" / "unit")
    sys.path.insert(0, unit)
    try:
        spec = importlib.util.spec_from_file_location("e2e_dashboard_queries", f"{unit}/test_dashboard.py")
        board = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(board)
    finally:
        sys.path.remove(unit)
    return {name for _, expr in board.expressions(board.dashboard()) for name in board.parse(expr)[0]}


def samples(text: str) -> dict[str, list[str]]:
    """{series name: its sample lines} of a Prometheus exposition."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            out.setdefault(line.split("{", 1)[0].split(" ", 1)[0], []).append(line)
    return out


SCRAPE_SECONDS = 2


HOST_PROMETHEUS = "TORCHYARD_E2E_HOST_PROMETHEUS"  # 1: also check the dashboard through a Prometheus on the host


@pytest.fixture
def host_prometheus(installed, tmp_path):
    """Prometheus on the host scraping the watched namespace's pods as the chart's PodMonitors
    would (pods are reachable from the host); stopped afterwards. Opt-in (HOST_PROMETHEUS=1)
    until it has passed on a real node."""
    if os.environ.get(HOST_PROMETHEUS) != "1":
        print(f"metrics: the host Prometheus check is off ({HOST_PROMETHEUS}=1 turns it on)")
        yield None
        return
    kit = import_integration_harness()
    monitors = kit.chart_pod_monitors(kit_helm())
    configs = [kit.pod_monitor_scrape_config(m, installed.kubeconfig, [installed.namespace], f"{SCRAPE_SECONDS}s")
               for m in monitors]
    prom = kit.Prometheus(tmp_path / "prometheus", configs, interval=f"{SCRAPE_SECONDS}s").start()
    yield prom, kit
    prom.stop()


def import_integration_harness():
    """tests/integration/harness/prometheus.py: the Prometheus process and the dashboard's queries."""
    integration = str(ROOT / "tests" / "integration")
    if integration not in sys.path:
        sys.path.insert(0, integration)
    from harness import prometheus

    return prometheus


def kit_helm() -> str:
    from harness.cluster import helm

    return helm()


@pytest.fixture
def resources(installed):
    res = Resources(installed)
    yield res
    res.cleanup()


def training_job(claim: str) -> dict:
    """examples/digits-ddp.yaml training model NAME. The job has a name of its own: a job's headless
    Service is named after the job, the model's Service after the model."""
    job = with_claim(example("digits-ddp.yaml"), claim)
    job["metadata"]["name"] = JOB
    job["spec"]["modelName"] = NAME
    job["spec"]["trainer"]["epochs"] = 60  # long enough to be scraped while it trains
    return job


def restarting_job() -> dict:
    """One worker whose first attempt fails (a user error, exit 3) and whose second succeeds."""
    return {"apiVersion": "torchyard.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"{NAME}-restart"},
            "spec": {"strategy": "AllReduce",
                     "worker": {"replicas": 1, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                                "template": {"command": ["sh", "-c", 'test "$TORCHYARD_ATTEMPT" != 0 || exit 3']}},
                     "runPolicy": {"restartPolicy": "OnFailure", "backoffLimit": 2}}}


def model_deployment(claim: str) -> dict:
    md = with_claim(example("serving-1-deployment.yaml", "ModelDeployment"), claim)
    md["metadata"]["name"] = NAME
    md["spec"].update(modelName=NAME, replicas=1)
    md["spec"]["server"]["batching"] = {"maxBatchSize": 8}  # the batcher's series count passes
    return md


def worse_version(trained: dict) -> dict:
    """What the registry would make of a much worse training run: the gate refuses it unserved."""
    spec = copy.deepcopy(trained["spec"])
    version = spec["version"] + 1
    spec.update(version=version, metrics={**spec["metrics"], "accuracy": 0.1}, mainMetric={"name": "accuracy", "value": 0.1})
    return {"apiVersion": "torchyard.dev/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": f"{NAME}-v{version}", "labels": {"torchyard.dev/model": NAME}}, "spec": spec}


def test_every_metric_the_dashboard_queries_has_data(installed, resources, host_prometheus):
    started = time.time()
    wanted = dashboard_series()
    trainer_series = sorted(n for n in wanted if n.startswith("torchyard_trainer_"))
    assert trainer_series, f"the dashboard queries no trainer metric: {sorted(wanted)}"
    ns = installed.namespace
    claim = resources.claim(f"{NAME}-data")
    resources.model(NAME)

    # A training process, scraped while it trains: the scraper starts first and polls.
    target = {"name": "trainer", "url": f"http://{JOB}-worker-0.{JOB}.{ns}.svc:9090/metrics",
              "require": trainer_series, "timeout": 500}
    scraper = start_client(installed, resources, "e2e-scrape-trainer", SCRAPE, json.dumps([target]))
    wait_pod_running(installed, scraper)
    resources.create(training_job(claim))
    scraped = {"trainer": wait_client(installed, scraper, timeout=600)[0]}
    assert scraped["trainer"]["ok"], (f"the trainer's endpoint lacked {scraped['trainer']['missing']}\n"
                                      f"{scraped['trainer']['text'][-2000:]}\n{explain_job(installed, JOB)}")
    status = wait_job(installed, JOB)
    assert_succeeded(installed, JOB, status)
    trained = get(installed, "ModelVersion", wait_registered(installed, JOB)["result"]["modelVersion"])

    # Served, with a worse version refused, a job restarted and a reconcile failed.
    resources.create(model_deployment(claim))
    wait_serving(installed, NAME, NAME, trained["spec"]["version"])
    worse = resources.create(worse_version(trained))["metadata"]["name"]
    wait(lambda: mv_status(installed, worse).get("phase") == "Rejected", f"{worse} Rejected", 120)
    resources.create(restarting_job())
    restarted = wait_job(installed, f"{NAME}-restart", timeout=300)
    assert_succeeded(installed, f"{NAME}-restart", restarted)
    assert restarted.get("restarts", 0) >= 1 or restarted.get("attempt", 0) >= 1, restarted
    fail_a_reconcile(installed, resources)

    # The model server and the operator, from inside the cluster.
    url = f"http://{NAME}.{ns}.svc/v2/models/{NAME}"
    run_client(installed, resources, "e2e-traffic", PREDICT, url + "/infer", "10")
    answers = {line["kind"]: line for line in run_client(installed, resources, "e2e-more-traffic", MORE_TRAFFIC, url)}
    assert answers["bad"]["status"] == 400 and answers["explain"]["status"] == 200, answers
    operator_series = sorted(wanted & operator_declared())
    server_series = sorted(wanted - set(trainer_series) - set(operator_series))
    targets = [{"name": "server", "url": f"http://{NAME}.{ns}.svc/metrics", "require": server_series, "timeout": 60},
               {"name": "operator", "url": operator_url(installed), "require": operator_series, "timeout": 60}]
    for line in run_client(installed, resources, "e2e-scrape", SCRAPE, json.dumps(targets)):
        scraped[line["name"]] = line

    found = {}
    for name, line in scraped.items():
        for series, lines in samples(line["text"]).items():
            found.setdefault(series, []).extend(lines)
    missing = sorted(wanted - set(found))
    print(f"metrics: {len(wanted)} series the dashboard reads, scraped from {sorted(scraped)}")
    assert missing == [], f"the dashboard reads series nobody exports with data: {missing}"
    ready = [line for line in found["torchyard_model_ready"] if f'model_name="{NAME}"' in line]
    assert ready and all(line.endswith(" 1.0") for line in ready), ready
    if host_prometheus is not None:
        assert_pod_queries_have_data(*host_prometheus, started, ns, str(trained["spec"]["version"]))


def assert_pod_queries_have_data(prom, kit, started: float, namespace: str, version: str) -> None:
    """Every query of the dashboard's training and serving rows, asked of the host's Prometheus
    over the test's span, returns numbers labelled with the job, the model and its version."""
    time.sleep(3 * SCRAPE_SECONDS)  # the last requests scraped
    variables = {"namespace": namespace, "trainingjob": JOB, "model": NAME,
                 "__rate_interval": f"{4 * SCRAPE_SECONDS}s"}
    queries = [q for q in kit.dashboard_queries() if q.row.endswith(("(trainer processes)", "(model servers)"))]
    assert queries, "the dashboard has no training or serving row"
    found = {f"{q.panel} / {q.legend}": kit.with_data(prom.query_range(q.resolved(variables), started, time.time(),
                                                                        SCRAPE_SECONDS)) for q in queries}
    empty = sorted(name for name, series in found.items() if not series)
    targets = [(t["scrapePool"], t["labels"].get("pod"), t["health"]) for t in prom.targets()]
    assert not empty, f"dashboard queries without data from the pods: {empty}\ntargets: {targets}"
    for name, series in found.items():
        for labels in (s["metric"] for s in series):
            if "rank" in labels:
                assert labels["job"] == JOB and labels["model_name"] == NAME, (name, labels)
                assert labels["model_version"].startswith(f"{JOB}-"), (name, labels)  # the run's name
            elif "model_version" in labels:
                assert (labels["model_name"], labels["model_version"]) == (NAME, version), (name, labels)
    print(f"metrics: {len(queries)} training and serving queries answered by a Prometheus on the host")


def operator_declared() -> set[str]:
    """Every series name the operator's registry exports (the rest are the trainer's and the server's)."""
    from torchyard.metrics import REGISTRY

    return set().union(*REGISTRY._collector_to_names.values())  # noqa: SLF001  as tests/unit/test_metrics_docs.py


def operator_url(installed) -> str:
    service = installed.core.read_namespaced_service(installed.release, installed.release_namespace)
    port = next(p.port for p in service.spec.ports if p.name == "http")
    return f"http://{installed.release}.{installed.release_namespace}.svc:{port}/metrics"


def fail_a_reconcile(installed, resources) -> None:
    """A quota that admits no more pods makes the operator's pod creation fail (403): one
    reconcile error, as a full namespace would cause. The quota and the job go again at once."""
    quota = resources.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": f"{NAME}-no-pods"},
                              "spec": {"hard": {"pods": "0"}}})
    name = quota.metadata.name
    wait(lambda: (installed.core.read_namespaced_resource_quota(name, installed.namespace).status.hard or {}),
         "the quota in force", 60, interval=1)
    blocked = restarting_job()
    blocked["metadata"]["name"] = f"{NAME}-blocked"
    resources.create(blocked)
    try:
        wait(lambda: 'kind="TrainingJob"' in "".join(
            line for line in installed.service_get("/metrics").splitlines()
            if line.startswith("torchyard_reconcile_errors_total")), "a failed TrainingJob reconcile counted", 120,
            explain=lambda: explain_job(installed, f"{NAME}-blocked"))
    finally:
        resources.delete("TrainingJob", f"{NAME}-blocked")
        resources.delete("ResourceQuota", name)
