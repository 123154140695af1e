"""Serving for real, in the documented flow of examples/serving-1..4: a first version is trained onto a shared
claim and served by a ModelDeployment; a client pod in the cluster sends Open Inference Protocol v2
requests through the stable Service.

Version numbers are never reused in a namespace, so the tests read the numbers the jobs registered.

4. The Service answers with correct predictions for known digits.
5. A retrained, better version passes the gate and takes traffic; a worse one is refused.
6. The active version's containers are killed (their processes, not a readiness flag): traffic
   moves to the warm standby while a client loops requests through the Service, which counts the
   failed requests and the time from the kill to the standby's first answer; once the killed
   version recovers it serves again, and `torchyard rollback` moves traffic back to the first.

Training v1 (and v2) is shared by the module's tests: each costs a minute or two of the node's two
CPUs, and every test checks what it needs of the state it finds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_kit import (LOOP, PREDICT, Resources, assert_succeeded, condition, example, explain_md, figure, get,
                     json_lines, md_status, mv_status, pod_log, read_or_none, run_client, selected_version,
                     start_client, wait, wait_client, wait_job, wait_registered, wait_serving)

MODEL = "digits"  # the examples' model and ModelDeployment name
SETTLE_SECONDS = 5  # the failover client stops once the standby has answered this long


def infer_url(installed) -> str:
    return f"http://{MODEL}.{installed.namespace}.svc/v2/models/{MODEL}/infer"


def train(installed, res: Resources, job: dict) -> tuple[dict, int]:
    """Train `job`; its status and the number of the ModelVersion it registered (numbers are never
    reused in a namespace, so they are read, not assumed)."""
    res.create(job)
    name = job["metadata"]["name"]
    status = wait_job(installed, name)
    assert_succeeded(installed, name, status)
    status = wait_registered(installed, name)
    return status, get(installed, "ModelVersion", status["result"]["modelVersion"])["spec"]["version"]


@dataclass
class Serving:
    res: Resources
    first: int  # the version serving-2 registered
    second: int | None = None  # the one serving-3 registered, once trained
    status: dict | None = None  # serving-3's job status


@pytest.fixture(scope="module")
def serving(installed):
    """serving-1 (claim and ModelDeployment) and serving-2 (the first version trained), it serving."""
    res = Resources(installed)
    res.model(MODEL)
    try:
        claim = example("serving-1-deployment.yaml", "PersistentVolumeClaim")
        if installed.runtime == "kind":  # its local-path provisioner has no ReadWriteMany; one node needs none
            claim["spec"]["accessModes"] = ["ReadWriteOnce"]
        res.create(claim)
        res.create(example("serving-1-deployment.yaml", "ModelDeployment"))
        _, first = train(installed, res, example("serving-2-train.yaml"))
        wait_serving(installed, MODEL, MODEL, first)
        yield Serving(res, first)
    finally:
        res.cleanup()


@pytest.fixture(scope="module")
def promoted(installed, serving) -> Serving:
    """serving-3: a second version trained, promoted by the gate and serving, the first its warm standby."""
    if serving.second is None:
        serving.status, serving.second = train(installed, serving.res, example("serving-3-retrain.yaml"))
        wait_serving(installed, MODEL, MODEL, serving.second)
    return serving


def predict(installed, res, rows: int = 100) -> list[dict]:
    return run_client(installed, res, "e2e-predict", PREDICT, infer_url(installed), str(rows))


def test_the_service_answers_known_digits_correctly(installed, serving):
    active = md_status(installed, MODEL)["activeVersion"]
    lines = predict(installed, serving.res)
    batch = next(line for line in lines if line["kind"] == "batch")
    assert (batch["model_name"], batch["model_version"], batch["id"]) == (MODEL, str(active), "e2e")
    assert batch["output_shape"] == [100, 10]
    correct = sum(p == e for p, e in zip(batch["predicted"], batch["expected"]))
    singles = [line for line in lines if line["kind"] == "single"]
    right = [line["expected"] for line in singles if line["predicted"] == line["expected"]]
    figure(f"v{active}: {correct}/100 digits right in one batch; alone, right for digits {right}")
    assert correct >= 90, f"only {correct} of 100 known digits predicted right: {batch}"
    assert len(singles) == 10 and len(right) >= 9, f"single-digit answers: {singles}"
    metadata = next(line for line in lines if line["kind"] == "metadata")
    digest = get(installed, "ModelVersion", f"{MODEL}-v{active}")["spec"]["artifact"]["sha256"]
    assert metadata["versions"] == [str(active)] and metadata["sha256"] == digest, metadata


def test_a_better_version_takes_traffic_and_a_worse_one_is_refused(installed, promoted):
    first, second = promoted.first, promoted.second
    old = get(installed, "ModelVersion", f"{MODEL}-v{first}")["spec"]["metrics"]["accuracy"]
    new = promoted.status["result"]["metrics"]["accuracy"]
    figure(f"accuracy: v{first} {old}, v{second} {new}")
    history = md_status(installed, MODEL).get("history") or []
    assert any((h.get("from"), h["to"], h["reason"]) == (first, second, "promotion") for h in history), history
    assert wait(lambda: mv_status(installed, f"{MODEL}-v{first}").get("phase") == "Standby", f"v{first} Standby", 60)
    assert mv_status(installed, f"{MODEL}-v{second}").get("phase") == "Active"
    batch = next(line for line in predict(installed, promoted.res, rows=20) if line["kind"] == "batch")
    assert batch["model_version"] == str(second), f"the Service still answers from v{batch['model_version']}"

    worse = example("serving-3-retrain.yaml")
    worse["metadata"]["name"] = "digits-worse"
    worse["spec"]["trainer"].update(model={"name": "mlp", "hiddenSizes": [2]}, epochs=1)
    status, third = train(installed, promoted.res, worse)
    accuracy = status["result"]["metrics"]["accuracy"]
    assert accuracy < new - 0.05, f"the crafted worse version is not worse: {accuracy} against v{second}'s {new}"
    rejected = wait(lambda: (s := mv_status(installed, f"{MODEL}-v{third}")).get("phase") == "Rejected" and s,
                    f"v{third} Rejected", 120, explain=lambda: explain_md(installed, MODEL, MODEL))
    assert rejected["reason"] == "GateRejected", rejected
    entry = (md_status(installed, MODEL).get("history") or [{}])[-1]
    assert (entry.get("from"), entry.get("to"), entry.get("reason")) == (second, third, "gate-rejected"), entry
    assert selected_version(installed, MODEL) == second
    deployment = read_or_none(lambda: installed.apps.read_namespaced_deployment(f"{MODEL}-v{third}", installed.namespace))
    assert deployment is None, f"the rejected v{third} was deployed"


def test_killing_the_active_version_fails_over_and_rollback_moves_traffic_back(installed, promoted, kill_container):
    first, second = promoted.first, promoted.second
    wait_ready_pods(installed, first)  # the warm standby
    wait_ready_pods(installed, second)
    client = start_client(installed, promoted.res, "e2e-loop", LOOP, infer_url(installed), "120", str(SETTLE_SECONDS))
    ready = wait(lambda: next((line for line in json_lines(pod_log(installed, client)) if line.get("event")), None),
                 "the looping client's first answer", 180, interval=1, explain=lambda: pod_log(installed, client))
    assert (ready["event"], ready["outcome"]) == ("ready", f"v{second}"), ready
    time.sleep(2)  # some answers from the active version first
    killed_at = min(kill_container(p.metadata.name, "server") for p in version_pods(installed, second))
    lines = wait_client(installed, client, timeout=240)

    runs = [line for line in lines if line.get("event") == "run"]
    report_failover(runs, killed_at, first)
    assert any(r["outcome"] == f"v{first}" for r in runs), (
        f"traffic never reached the standby v{first}: {runs}\n{explain_md(installed, MODEL, MODEL)}")
    assert not any(r["outcome"].startswith("error") and r["last"] < killed_at for r in runs), f"errors before the kill: {runs}"
    history = md_status(installed, MODEL).get("history") or []
    failover = [h for h in history if (h.get("from"), h["to"], h["reason"]) == (second, first, "failover")]
    assert failover, f"no failover v{second} -> v{first} in the history: {history}"
    figure(f"failover: operator's switchLatencySeconds {failover[-1].get('switchLatencySeconds')}")

    # The killed containers restart; once ready again for the grace period their version serves again.
    wait_serving(installed, MODEL, MODEL, second, timeout=300)
    assert md_status(installed, MODEL)["history"][-1]["reason"] == "failback"

    done = torchyard(installed, "rollback", MODEL, "-n", installed.namespace, "--wait", "120")
    assert done.returncode == 0, f"torchyard rollback failed: {done.stdout}{done.stderr}"
    assert selected_version(installed, MODEL) == first and f"v{first} serves" in done.stdout, done.stdout
    entry = md_status(installed, MODEL)["history"][-1]
    assert (entry.get("from"), entry["to"], entry["reason"]) == (second, first, "manual"), entry
    figure(f"rollback: {done.stdout.strip().splitlines()[-1]}; operator's switchLatencySeconds "
          f"{entry.get('switchLatencySeconds')}")
    batch = next(line for line in predict(installed, promoted.res, rows=20) if line["kind"] == "batch")
    assert batch["model_version"] == str(first), f"after the rollback the Service answers from v{batch['model_version']}"
    assert condition(md_status(installed, MODEL), "Available").get("status") == "True"


def report_failover(runs: list[dict], killed_at: float, standby: int) -> None:
    """Print what the looping client saw: requests failed, and when the standby first answered."""
    errors = [r for r in runs if r["outcome"].startswith("error")]
    answered = next((r["first"] for r in runs if r["outcome"] == f"v{standby}"), None)
    figure(f"failover: {sum(r['count'] for r in errors)} failed requests of {sum(r['count'] for r in runs)}; "
          + (f"first answer from the standby {answered - killed_at:.2f}s after the kill" if answered else "no answer from it"))
    if errors:
        figure(f"failover: errors seen: {sorted({r['outcome'] for r in errors})}; "
              f"the last {max(r['last'] for r in errors) - killed_at:.2f}s after the kill")


def version_pods(installed, version: int) -> list:
    pods = installed.core.list_namespaced_pod(
        installed.namespace, label_selector=f"torchyard.dev/model={MODEL},torchyard.dev/version={version}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def wait_ready_pods(installed, version: int) -> None:
    def ready():
        pods = version_pods(installed, version)
        return pods and all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods)
    wait(ready, f"every pod of v{version} Ready", 180, explain=lambda: explain_md(installed, MODEL, MODEL))


def torchyard(installed, *args: str) -> subprocess.CompletedProcess:
    """The `torchyard` CLI as the user runs it, with the admin's kubeconfig."""
    return subprocess.run([str(Path(sys.executable).parent / "torchyard"), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "KUBECONFIG": installed.kubeconfig})
