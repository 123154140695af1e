"""kwok's stages and the fake nodes: two CPU nodes and two GPU nodes.

kwok's own "fast" stages drive the lifecycle: nodes become Ready and keep a Lease, every pod
scheduled to a kwok node becomes Running and Ready at once, pods owned by a Job complete with exit
code 0, and a deleted pod is removed. Any other pod stays Running until a test changes its status
(tests/integration/harness/faults.py). The "node-not-ready" chaos stage lets a test make a node
report NotReady by labelling it.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from .components import KWOK_MANAGED_LABEL

STAGE_CRD = "crd/bases/kwok.x-k8s.io_stages.yaml"
STAGES = [
    "stage/node/fast/node-initialize.yaml",
    "stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "stage/node/chaos/node-not-ready.yaml",
    "stage/pod/fast/pod-ready.yaml",
    "stage/pod/fast/pod-complete.yaml",
    "stage/pod/fast/pod-delete.yaml",
]
GPU_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "fake-h100",
              "nvidia.com/gpu.count": "4"}
CPU_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110"}
GPU_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "4"}
NODES = [("kwok-cpu-0", False), ("kwok-cpu-1", False), ("kwok-gpu-0", True), ("kwok-gpu-1", True)]
# As on real GPU pools (and what the NVIDIA device plugin's users set): only pods that tolerate
# it land on a GPU node, so CPU pods never take a GPU node's room.
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def node_manifest(name: str, gpu: bool) -> dict:
    """A Node as a kubelet would register it; kwok fills in conditions, addresses and the Lease."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "type": "kwok", KWOK_MANAGED_LABEL: "true",
              **(GPU_LABELS if gpu else {})}
    capacity = GPU_CAPACITY if gpu else CPU_CAPACITY
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        # No kwok taint: CPU test pods need no toleration. GPU nodes carry the GPU taint.
        "spec": {"taints": [GPU_TAINT]} if gpu else {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


class Kubectl:
    """Runs kubectl against one kubeconfig; failures raise with kubectl's own message."""

    def __init__(self, binary: str, kubeconfig: Path):
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args],
                                input=input, capture_output=True, text=True, timeout=180)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


def wait_for_condition(kubectl: Kubectl, *args: str, timeout: float = 90) -> None:
    """`kubectl wait`, retried: it fails at once, instead of waiting, while the object has no
    conditions at all yet (a CRD just applied, a node kwok has not picked up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl("wait", *args, f"--timeout={max(1, int(deadline - time.monotonic()))}s")
            return
        except RuntimeError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def apply_stages(kubectl: Kubectl, kustomize_dir: Path) -> None:
    """The Stage CRD first (kwok refuses to start without stages), then the stages themselves."""
    kubectl("apply", "--server-side", "-f", str(kustomize_dir / STAGE_CRD))
    wait_for_condition(kubectl, "--for=condition=Established", "crd/stages.kwok.x-k8s.io", timeout=60)
    for stage in STAGES:
        kubectl("apply", "--server-side", "-f", str(kustomize_dir / stage))


def create_nodes(kubectl: Kubectl) -> None:
    items = [node_manifest(name, gpu) for name, gpu in NODES]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_for_condition(kubectl, "--for=condition=Ready", "node", "-l", f"{KWOK_MANAGED_LABEL}=true", timeout=90)
