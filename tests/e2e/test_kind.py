"""The README's quick start, for real: the chart's operator image runs in the cluster, the
trainer image trains examples/digits-ddp.yaml with two DDP workers, progress reaches the job's
status through the operator's Service, and the trained model is registered."""
from __future__ import annotations

import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "torchyard.dev", "v1alpha1"


def wait(probe, what: str, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)


def test_the_operator_runs_restricted_from_its_image(installed):
    deployment = installed.apps.read_namespaced_deployment(installed.release, installed.release_namespace)
    assert deployment.status.available_replicas == 1
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    pod = installed.core.list_namespaced_pod(installed.release_namespace, label_selector=selector).items[0]
    assert pod.spec.containers[0].image == f"torchyard/operator:{installed.image_tag}"
    assert pod.status.container_statuses[0].ready and pod.status.container_statuses[0].restart_count == 0
    assert "ok" in installed.service_get("/healthz")
    assert "torchyard_reconcile_duration_seconds" in installed.service_get("/metrics")


def test_the_quick_start_example_trains_reports_progress_and_registers_its_model(installed):
    job = yaml.safe_load((ROOT / "examples" / "digits-ddp.yaml").read_text())
    name, ns = job["metadata"]["name"], installed.namespace
    installed.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "trainingjobs", job)
    seen_progress = []

    def finished():
        status = installed.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "trainingjobs", name).get("status") or {}
        if status.get("progress"):
            seen_progress.append(status["progress"])
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait(finished, f"TrainingJob {name} to finish", timeout=900, interval=3)
    assert status["phase"] == "Succeeded", status.get("lastFailure")
    assert seen_progress, "no progress report reached the job's status while it ran"
    assert status["result"]["metrics"]["accuracy"] > 0.9
    version = status["result"]["modelVersion"]
    registered = installed.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "modelversions", version)
    assert registered["spec"]["artifact"]["sha256"] == status["result"]["artifact"]["sha256"]
    metrics = installed.service_get("/metrics")
    assert f'torchyard_trainingjob_phase_transitions_total{{namespace="{ns}",phase="Succeeded"}} 1.0' in metrics
