"""What the serving integration tests do and read, as a user (the admin) would with kubectl.

ModelVersions are created directly, as the registry would create them after training; version
pods are started by kwok (Running and Ready at once) and made unhealthy with the fault helpers.
No test ever configures a golden request: kwok's pod IPs are fake addresses nothing may dial.
"""
from __future__ import annotations

import os
import subprocess

from harness.cluster import tool
from harness.waits import read_or_none, wait_for

GROUP, VERSION = "torchyard.dev", "v1alpha1"
MODEL = "digits"


def model_version(cluster, namespace: str, version: int, accuracy: float, model: str = MODEL) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelVersion",
        "metadata": {"name": f"{model}-v{version}", "labels": {"torchyard.dev/model": model}},
        "spec": {
            "modelName": model, "version": version,
            "artifact": {"path": f"/var/lib/torchyard/models/{model}/run-{version}", "sha256": f"{version:064x}"},
            "metrics": {"accuracy": accuracy, "loss": round(1 - accuracy, 4)}, "metric": "accuracy",
            "mainMetric": {"name": "accuracy", "value": accuracy},
        },
    }
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", body)


def model_deployment(cluster, namespace: str, name: str = MODEL, **spec) -> dict:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"modelName": MODEL, **spec}}
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", body)


def patch_spec(cluster, namespace: str, patch: dict, name: str = MODEL) -> None:
    cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name,
                                                  {"spec": patch})


def status(cluster, namespace: str, name: str = MODEL) -> dict:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    return obj.get("status") or {}


def condition(st: dict, kind: str) -> dict:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def version_phase(cluster, namespace: str, version: int, model: str = MODEL) -> str | None:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", f"{model}-v{version}")
    return (obj.get("status") or {}).get("phase")


def selected(cluster, namespace: str, model: str = MODEL) -> int | None:
    """The version the model's Service selects, or None while there is no Service."""
    service = read_or_none(lambda: cluster.core.read_namespaced_service(model, namespace))
    if service is None:
        return None
    selector = service.spec.selector or {}
    assert selector.get("torchyard.dev/model") == model, f"selector lost its model: {selector}"
    return int(selector["torchyard.dev/version"])


def wait_selected(cluster, namespace: str, version: int, timeout: float = 30) -> int:
    """Until the Service selects `version` and the status (written just after the switch) says so."""
    return wait_for(lambda: selected(cluster, namespace) == version
                    and status(cluster, namespace).get("activeVersion") == version and version,
                    f"Service {MODEL} selecting v{version}", timeout)


def replicas(cluster, namespace: str, version: int) -> int | None:
    """spec.replicas of the version's Deployment, or None when it does not exist."""
    found = read_or_none(lambda: cluster.apps.read_namespaced_deployment(f"{MODEL}-v{version}", namespace))
    return None if found is None else found.spec.replicas


def pods(cluster, namespace: str, version: int) -> list:
    items = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"torchyard.dev/model={MODEL},torchyard.dev/version={version}").items
    return [p for p in items if p.metadata.deletion_timestamp is None]


def ready(pod) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_ready(cluster, namespace: str, version: int, count: int = 1, timeout: float = 30) -> list:
    return wait_for(lambda: (found := [p for p in pods(cluster, namespace, version) if ready(p)])
                    and len(found) >= count and found, f"{count} ready pods of v{version}", timeout)


def set_ready(faults, cluster, namespace: str, version: int, value: bool) -> None:
    """Every pod of the version turns (Not)Ready, as when its readiness probe fails or passes again."""
    for pod in pods(cluster, namespace, version):
        faults.set_pod_ready(namespace, pod.metadata.name, value)


def last_history(cluster, namespace: str) -> dict:
    history = status(cluster, namespace).get("history") or []
    return history[-1] if history else {}


def events(cluster, namespace: str, name: str = MODEL) -> list[tuple[str, str]]:
    items = cluster.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.message) for e in items if e.involved_object.kind == "ModelDeployment"]


def torchyard(cluster, *args: str) -> subprocess.CompletedProcess:
    """The `torchyard` CLI as the user runs it, with the admin's kubeconfig."""
    return subprocess.run([tool("torchyard"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": cluster.kubeconfig})
