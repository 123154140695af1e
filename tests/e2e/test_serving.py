"""Serving for real, in the documented flow of examples/serving-1..4: v1 is trained onto a shared
claim and served by a ModelDeployment; a client pod in the cluster sends Open Inference Protocol v2
requests through the stable Service.

4. The Service answers with correct predictions for known digits.
5. A retrained, better version passes the gate and takes traffic; a worse one is refused.
6. The active version's containers are killed (their processes, not a readiness flag): traffic
   moves to the warm standby while a client loops requests through the Service, which counts the
   failed requests and the time from the kill to the standby's first answer; once the killed
   version recovers it serves again, and `torchyard rollback` moves traffic back to v1.

Training v1 (and v2) is shared by the module's tests: each costs a minute or two of the node's two
CPUs, and every test checks what it needs of the state it finds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e_kit import (LOOP, PREDICT, Resources, assert_succeeded, condition, example, explain_md, get,
                     json_lines, md_status, mv_status, pod_log, read_or_none, run_client, selected_version,
                     start_client, wait, wait_client, wait_job, wait_registered,
                     wait_serving)

MODEL = "digits"  # the examples' model and ModelDeployment name
SETTLE_SECONDS = 5  # the failover client stops once the standby has answered this long


def infer_url(installed) -> str:
    return f"http://{MODEL}.{installed.namespace}.svc/v2/models/{MODEL}/infer"


def train(installed, res: Resources, job: dict) -> dict:
    res.create(job)
    name = job["metadata"]["name"]
    status = wait_job(installed, name)
    assert_succeeded(installed, name, status)
    return wait_registered(installed, name)


@pytest.fixture(scope="module")
def serving(installed):
    """serving-1 (claim and ModelDeployment) and serving-2 (v1 trained), with v1 serving."""
    res = Resources(installed)
    res.model(MODEL)
    try:
        claim = example("serving-1-deployment.yaml", "PersistentVolumeClaim")
        if installed.runtime == "kind":  # its local-path provisioner has no ReadWriteMany; one node needs none
            claim["spec"]["accessModes"] = ["ReadWriteOnce"]
        res.create(claim)
        res.create(example("serving-1-deployment.yaml", "ModelDeployment"))
        status = train(installed, res, example("serving-2-train.yaml"))
        assert status["result"]["modelVersion"] == f"{MODEL}-v1", status["result"]
        wait_serving(installed, MODEL, MODEL, 1)
        yield res
    finally:
        res.cleanup()


@pytest.fixture(scope="module")
def promoted_v2(installed, serving):
    """serving-3: v2 trained, promoted by the gate and serving, v1 its warm standby."""
    status = train(installed, serving, example("serving-3-retrain.yaml"))
    assert status["result"]["modelVersion"] == f"{MODEL}-v2", status["result"]
    wait_serving(installed, MODEL, MODEL, 2)
    return status


def predict(installed, res, rows: int = 100) -> list[dict]:
    return run_client(installed, res, "e2e-predict", PREDICT, infer_url(installed), str(rows))


def test_the_service_answers_known_digits_correctly(installed, serving):
    active = md_status(installed, MODEL)["activeVersion"]
    lines = predict(installed, serving)
    batch = next(line for line in lines if line["kind"] == "batch")
    assert (batch["model_name"], batch["model_version"], batch["id"]) == (MODEL, str(active), "e2e")
    assert batch["output_shape"] == [100, 10]
    correct = sum(p == e for p, e in zip(batch["predicted"], batch["expected"]))
    singles = [line for line in lines if line["kind"] == "single"]
    right = [line["expected"] for line in singles if line["predicted"] == line["expected"]]
    print(f"v{active}: {correct}/100 digits right in one batch; alone, right for digits {right}")
    assert correct >= 90, f"only {correct} of 100 known digits predicted right: {batch}"
    assert len(singles) == 10 and len(right) >= 9, f"single-digit answers: {singles}"
    metadata = next(line for line in lines if line["kind"] == "metadata")
    digest = get(installed, "ModelVersion", f"{MODEL}-v{active}")["spec"]["artifact"]["sha256"]
    assert metadata["versions"] == [str(active)] and metadata["sha256"] == digest, metadata


def test_a_better_version_takes_traffic_and_a_worse_one_is_refused(installed, serving, promoted_v2):
    v1 = get(installed, "ModelVersion", f"{MODEL}-v1")["spec"]["metrics"]["accuracy"]
    v2 = promoted_v2["result"]["metrics"]["accuracy"]
    print(f"accuracy: v1 {v1}, v2 {v2}")
    history = md_status(installed, MODEL).get("history") or []
    assert any((h["from"], h["to"], h["reason"]) == (1, 2, "promotion") for h in history), history
    assert wait(lambda: mv_status(installed, f"{MODEL}-v1").get("phase") == "Standby", "v1 Standby", 60)
    assert mv_status(installed, f"{MODEL}-v2").get("phase") == "Active"
    batch = next(line for line in predict(installed, serving, rows=20) if line["kind"] == "batch")
    assert batch["model_version"] == "2", f"the Service still answers from v{batch['model_version']}"

    worse = example("serving-3-retrain.yaml")
    worse["metadata"]["name"] = "digits-worse"
    worse["spec"]["trainer"].update(model={"name": "mlp", "hiddenSizes": [2]}, epochs=1)
    status = train(installed, serving, worse)
    v3 = status["result"]["modelVersion"]
    accuracy = status["result"]["metrics"]["accuracy"]
    assert accuracy < v2 - 0.05, f"the crafted worse version is not worse: {accuracy} against v2's {v2}"
    rejected = wait(lambda: (s := mv_status(installed, v3)).get("phase") == "Rejected" and s, f"{v3} Rejected", 120,
                    explain=lambda: explain_md(installed, MODEL, MODEL))
    assert rejected["reason"] == "GateRejected", rejected
    entry = (md_status(installed, MODEL).get("history") or [{}])[-1]
    assert (entry.get("to"), entry.get("reason")) == (int(v3.rsplit("-v", 1)[1]), "gate-rejected"), entry
    assert selected_version(installed, MODEL) == 2
    deployment = read_or_none(lambda: installed.apps.read_namespaced_deployment(v3, installed.namespace))
    assert deployment is None, f"the rejected {v3} was deployed"


def test_killing_the_active_version_fails_over_and_rollback_moves_traffic_back(
        installed, serving, promoted_v2, kill_container):
    wait_ready_pods(installed, 1)  # the warm standby
    wait_ready_pods(installed, 2)
    client = start_client(installed, serving, "e2e-loop", LOOP, infer_url(installed), "120", str(SETTLE_SECONDS))
    ready = wait(lambda: next((line for line in json_lines(pod_log(installed, client)) if line.get("event")), None),
                 "the looping client's first answer", 180, interval=1, explain=lambda: pod_log(installed, client))
    assert (ready["event"], ready["outcome"]) == ("ready", "v2"), ready
    time.sleep(2)  # some answers from v2 first
    killed_at = min(kill_container(p.metadata.name, "server") for p in version_pods(installed, 2))
    lines = wait_client(installed, client, timeout=240)

    runs = [line for line in lines if line.get("event") == "run"]
    failed = sum(r["count"] for r in runs if r["outcome"].startswith("error"))
    first_v1 = next((r["first"] for r in runs if r["outcome"] == "v1"), None)
    errors = sorted({r["outcome"] for r in runs if r["outcome"].startswith("error")})
    print(f"failover: {failed} failed requests of {sum(r['count'] for r in runs)}; first answer from the standby "
          f"{first_v1 - killed_at:.2f}s after the kill" if first_v1 else f"failover: no answer from v1; runs {runs}")
    print(f"failover: errors seen: {errors}")
    assert first_v1 is not None, f"traffic never reached the standby v1: {runs}\n{explain_md(installed, MODEL, MODEL)}"
    assert not any(r["outcome"].startswith("error") and r["last"] < killed_at for r in runs), f"errors before the kill: {runs}"
    history = md_status(installed, MODEL).get("history") or []
    failover = [h for h in history if (h["from"], h["to"], h["reason"]) == (2, 1, "failover")]
    assert failover, f"no failover 2 -> 1 in the history: {history}"
    print(f"failover: operator's switchLatencySeconds {failover[-1].get('switchLatencySeconds')}")

    # The killed containers restart; once v2 is ready again for the grace period it serves again.
    wait_serving(installed, MODEL, MODEL, 2, timeout=300)
    assert (md_status(installed, MODEL)["history"][-1]["reason"]) == "failback"

    done = torchyard(installed, "rollback", MODEL, "-n", installed.namespace, "--wait", "120")
    assert done.returncode == 0, f"torchyard rollback failed: {done.stdout}{done.stderr}"
    assert selected_version(installed, MODEL) == 1 and "v1 serves" in done.stdout, done.stdout
    entry = md_status(installed, MODEL)["history"][-1]
    assert (entry["from"], entry["to"], entry["reason"]) == (2, 1, "manual"), entry
    print(f"rollback: {done.stdout.strip().splitlines()[-1]}; operator's switchLatencySeconds "
          f"{entry.get('switchLatencySeconds')}")
    batch = next(line for line in predict(installed, serving, rows=20) if line["kind"] == "batch")
    assert batch["model_version"] == "1", f"after the rollback the Service answers from v{batch['model_version']}"
    assert condition(md_status(installed, MODEL), "Available").get("status") == "True"


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
