"""kwok nodes a benchmark adds for its own pods, and removes after.

The local cluster's default nodes hold a few hundred pods; a burst of hundreds of jobs needs
more. These nodes are big, managed by the cluster's kwok (its label), and tainted, so only pods
that tolerate the taint (the benchmark's) land there.
"""

from __future__ import annotations

import subprocess
import time
import uuid

NODE_LABEL = "torchyard.dev/bench"
KWOK_MANAGED_LABEL = "torchyard.dev/kwok-managed"  # hack/localcluster/components.py
PODS_PER_NODE = 500


def node_manifest(name: str) -> dict:
    capacity = {"cpu": "1000", "memory": "4Ti", "pods": str(PODS_PER_NODE)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "type": "kwok", KWOK_MANAGED_LABEL: "true", NODE_LABEL: "true"},
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"taints": [{"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity}}


def add_nodes(core, pods: int, timeout: float = 90) -> list[str]:
    """Enough nodes for `pods` pods (with room for a round still being deleted), once Ready. Their
    names are this run's own, so two benchmarks on one cluster do not collide."""
    run = uuid.uuid4().hex[:6]
    names = [f"kwok-bench-{run}-{i}" for i in range(2 * pods // PODS_PER_NODE + 1)]
    for name in names:
        core.create_node(node_manifest(name))
    deadline = time.monotonic() + timeout
    while not all(_ready(core, name) for name in names):
        if time.monotonic() > deadline:
            raise TimeoutError("kwok did not make the benchmark's nodes Ready")
        time.sleep(0.5)
    return names


def _ready(core, name: str) -> bool:
    conditions = core.read_node(name).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def remove_nodes(core, names: list[str]) -> None:
    for name in names:
        core.delete_node(name)


class Kubectl:
    """kubectl against one kubeconfig; a failure raises with kubectl's own message."""

    def __init__(self, binary: str, kubeconfig: str):
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout
