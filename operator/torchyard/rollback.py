"""`torchyard rollback`: serve another version of a model, by the same patch a GitOps repo would make.

It sets the ModelDeployment's spec.activeVersion and nothing else; the operator switches the
Service once that version's replicas are ready (scaling it up first if it was retired).
"""

from __future__ import annotations

import sys
import time

from torchyard.api.modelversion import version_name
from torchyard.kube.client import Kube


def find_deployment(kube: Kube, namespace: str, model: str) -> dict | None:
    """The ModelDeployment named `model`, else the one serving a model of that name."""
    obj = kube.get_model_deployment(namespace, model)
    if obj is not None:
        return obj
    return next((o for o in kube.list_model_deployments(namespace) if (o.get("spec") or {}).get("modelName") == model), None)


def rollback(kube: Kube, namespace: str, model: str, version: int | None, wait: float) -> int:
    obj = find_deployment(kube, namespace, model)
    if obj is None:
        print(f"no ModelDeployment {model!r} (or serving model {model!r}) in namespace {namespace}", file=sys.stderr)
        return 1
    name, spec, status = obj["metadata"]["name"], obj.get("spec") or {}, obj.get("status") or {}
    if version is None:
        version = status.get("previousVersion")
        if version is None:
            print(f"modeldeployment/{name} has no previous version yet; choose one with --to", file=sys.stderr)
            return 1
    target = version_name(spec["modelName"], version)
    if kube.get_model_version(namespace, target) is None:
        print(f"ModelVersion {target} does not exist in namespace {namespace}", file=sys.stderr)
        return 1
    kube.patch_model_deployment(namespace, name, {"spec": {"activeVersion": version}})
    active = status.get("activeVersion")
    print(f"modeldeployment/{name}: spec.activeVersion={version} (serving v{active} now)")
    if spec.get("policy", "LatestPassing") == "LatestPassing":
        print("  promotion of new versions waits while spec.activeVersion is set; to resume it:\n"
              f"  kubectl patch md {name} -n {namespace} --type=merge -p '{{\"spec\":{{\"activeVersion\":null}}}}'")
    return _wait(kube, namespace, name, version, wait) if wait > 0 else 0


def _wait(kube: Kube, namespace: str, name: str, version: int, timeout: float) -> int:
    started = time.monotonic()
    status: dict = {}
    while time.monotonic() - started < timeout:
        status = (kube.get_model_deployment(namespace, name) or {}).get("status") or {}
        if status.get("activeVersion") == version:
            print(f"v{version} serves (after {time.monotonic() - started:.1f}s)")
            return 0
        time.sleep(0.2)
    why = next((c.get("message") for c in status.get("conditions") or [] if c.get("type") == "Progressing"), "")
    print(f"v{version} does not serve after {timeout:.0f}s: {why}", file=sys.stderr)
    return 1
