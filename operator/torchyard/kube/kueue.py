"""Kueue's objects as the operator reads and writes them: the Workloads it makes for queued jobs
(created, deleted when the spec they describe changed, status patched on eviction and finish),
and what the watches of Workloads and ResourceFlavors delivered (docs/kueue.md)."""

from __future__ import annotations

import copy
import threading

from torchyard import labels as keys
from torchyard.kube.client import MERGE_PATCH, Kube, ignoring, path, translated

GROUP, VERSION, WORKLOADS, FLAVORS = "kueue.x-k8s.io", "v1beta2", "workloads", "resourceflavors"
PRIORITY_CLASSES = "workloadpriorityclasses"
# The Workloads the operator made: the watch's selector.
OWNED_SELECTOR = f"{keys.JOB_NAME},{keys.MANAGED_BY}={keys.MANAGER}"


class WorkloadStore:
    """The operator's Workloads as the watch last showed them, by (namespace, job name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], dict] = {}

    def seen(self, obj: dict, deleted: bool = False) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], (meta.get("labels") or {}).get(keys.JOB_NAME, ""))
        with self._lock:
            old = self._items.get(key)
            if deleted:
                if old is not None and old["metadata"].get("uid") == meta.get("uid"):
                    del self._items[key]
            elif old is None or _version(obj) >= _version(old):
                self._items[key] = {k: obj[k] for k in ("metadata", "spec", "status") if k in obj}

    def get(self, namespace: str, job: str) -> dict | None:
        with self._lock:
            obj = self._items.get((namespace, job))
        return copy.deepcopy(obj) if obj is not None else None


def _version(obj: dict) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class FlavorStore:
    """Kueue's ResourceFlavors as the watch last showed them, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, dict] = {}

    def seen(self, obj: dict, deleted: bool = False) -> None:
        with self._lock:
            if deleted:
                self._items.pop(obj["metadata"]["name"], None)
            else:
                self._items[obj["metadata"]["name"]] = {"metadata": obj["metadata"], "spec": obj.get("spec") or {}}

    def get(self, name: str) -> dict | None:
        with self._lock:
            obj = self._items.get(name)
        return copy.deepcopy(obj) if obj is not None else None


class KueueApi:
    """The calls to Kueue's API; errors are translated as for every other call (kube/client.py)."""

    def __init__(self, kube: Kube, store: WorkloadStore, flavors: FlavorStore):
        self.kube, self.store, self.flavors = kube, store, flavors

    def create_workload(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create Kueue Workload {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.store.seen(self.kube.request("POST", path(GROUP, VERSION, WORKLOADS, meta["namespace"]), manifest))

    def delete_workload(self, workload: dict) -> None:
        meta = workload["metadata"]
        body = {"preconditions": {"uid": meta["uid"]}, "propagationPolicy": "Background"}
        with translated(f"delete Kueue Workload {meta['namespace']}/{meta['name']}"), ignoring(404, 409):
            self.kube.request("DELETE", path(GROUP, VERSION, WORKLOADS, meta["namespace"], meta["name"]), body,
                              read=False)
            self.store.seen(workload, deleted=True)

    def patch_workload_status(self, workload: dict, status: dict) -> None:
        """Merge `status` in, only over the version this pass read (Kueue writes it too)."""
        meta = workload["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        with translated(f"patch status of Kueue Workload {meta['namespace']}/{meta['name']}"), ignoring(404):
            self.store.seen(self.kube.request("PATCH", path(GROUP, VERSION, WORKLOADS, meta["namespace"], meta["name"],
                                                            "status"), body, content_type=MERGE_PATCH))

    def priority_value(self, name: str) -> int | None:
        """The value of a WorkloadPriorityClass (None when there is none by that name); read once,
        when a Workload is made."""
        with translated(f"get Kueue WorkloadPriorityClass {name}"), ignoring(404):
            return self.kube.request("GET", path(GROUP, VERSION, PRIORITY_CLASSES, name=name)).get("value")
        return None

    def relist(self, namespace: str | None) -> None:
        """List the operator's Workloads (in `namespace`, or everywhere) and every ResourceFlavor."""
        with translated(f"list Kueue Workloads and ResourceFlavors in {namespace or 'all namespaces'}"):
            workloads = self.kube.request("GET", path(GROUP, VERSION, WORKLOADS, namespace),
                                          query={"labelSelector": OWNED_SELECTOR})
            flavors = self.kube.request("GET", path(GROUP, VERSION, FLAVORS))
        for obj in workloads.get("items", []):
            self.store.seen(obj)
        for obj in flavors.get("items", []):
            self.flavors.seen(obj)
