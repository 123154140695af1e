"""What the watches delivered for serving, so a ModelDeployment's pass reads no API for what it observes.

The serving counterpart of kube/cache.py. kopf watches ModelDeployments, ModelVersions, and the
Deployments, pods and Services the operator made for them (labelled with their ModelDeployment);
each event lands here (newest resourceVersion wins) before the ModelDeployment's key is queued.
`CachedServingKube` answers the serving pass's reads from here and sends every write to the API
server as `Kube` does.

The operator's own writes go into the cache from the API server's answer at once (a switched
selector, a scaled Deployment, a status), so the next pass never acts on the world from before
them: all the objects the serving path writes have fixed names, so a lagging watch could only
make it write the same thing twice, and with the answer in the cache it does not. Two reads still
go to the API server: a pass that finds no Service of its own asks whether one of the model's name
exists (someone else's is never in this cache, and must never be taken over), and a pass that has
yet to choose a first version lists the ModelVersions (`list_model_versions_now`).
"""

from __future__ import annotations

import copy
import threading

from torchyard import labels as keys
from torchyard.api import modeldeployment as md_api
from torchyard.api import modelversion as mv_api
from torchyard.kube.cache import _key, _meta, _picked, _prune, _store, _version
from torchyard.kube.client import MERGE_PATCH, STRATEGIC_PATCH, Kube, ignoring, path, status_patch_body, translated

MODEL_DEPLOYMENTS, MODEL_VERSIONS, DEPLOYMENTS, PODS, SERVICES = (
    "modeldeployments", "modelversions", "deployments", "pods", "services")
SORTS = (MODEL_DEPLOYMENTS, MODEL_VERSIONS, DEPLOYMENTS, PODS, SERVICES)
OWNED = f"{mv_api.DEPLOYMENT_LABEL},{keys.MANAGED_BY}={keys.MANAGER}"
# What a pass reads of a pod (reconcile/health.py, golden.py): a status change elsewhere needs no pass.
POD_STATUS = ("phase", "podIP", "conditions", "containerStatuses")
Key = tuple[str, str]


def slim(sort: str, obj: dict) -> dict:
    """What the cache keeps of an object: what a pass reads of it."""
    meta = _meta(obj)
    if sort == PODS:
        return {"metadata": meta, "status": _picked(obj.get("status") or {}, POD_STATUS)}
    if sort == DEPLOYMENTS:  # only the pods count for health, never the Deployment's status
        return {"metadata": meta, "spec": {"replicas": (obj.get("spec") or {}).get("replicas")}}
    return {**obj, "metadata": meta}


def matches(obj: dict, selector: str) -> bool:
    """An equality label selector ("a=b,c=d", a bare key asks only that it is present)."""
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        name, _, value = term.partition("=")
        if name not in labels or ("=" in term and labels[name] != value):
            return False
    return True


class ServingCache:
    def __init__(self):
        self._lock = threading.Lock()
        self._tables: dict[str, dict[Key, dict]] = {sort: {} for sort in SORTS}
        # (sort, namespace, name) -> the resourceVersion of its deletion: a listing taken before the
        # deletion but applied after it must not bring the object back (as in kube/cache.py).
        self._gone: dict[tuple[str, str, str], int] = {}

    def seen(self, sort: str, obj: dict, deleted: bool = False) -> bool:
        """An object as a watch (or the operator's own write) showed it; whether what a pass reads changed."""
        key = _key(obj)
        mark = (sort, *key)
        with self._lock:
            if deleted:
                self._gone[mark] = max(_version(obj), self._gone.get(mark, 0))
            elif _version(obj) <= self._gone.get(mark, -1):
                return False
            return _store(self._tables[sort], key, slim(sort, obj), deleted)

    def relist(self, namespace: str | None, listings: dict[str, tuple[list[dict], int]]) -> None:
        """Full listings (each with its resourceVersion) replace what a watch may have missed."""
        for sort, (items, _) in listings.items():
            for obj in items:
                self.seen(sort, obj)
        in_scope = (lambda key: True) if namespace is None else (lambda key: key[0] == namespace)
        with self._lock:
            for sort, (items, version) in listings.items():
                _prune(self._tables[sort], in_scope, {_key(o) for o in items}, version)
                for mark in [m for m, v in self._gone.items() if m[0] == sort and in_scope(m[1:]) and v <= version]:
                    del self._gone[mark]

    def get(self, sort: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self._tables[sort].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def items(self, sort: str, namespace: str | None, selector: str = "") -> list[dict]:
        with self._lock:
            found = [o for (ns, _), o in self._tables[sort].items()
                     if (namespace is None or ns == namespace) and matches(o, selector)]
        return copy.deepcopy(found)

    def keys(self, sort: str) -> list[Key]:
        with self._lock:
            return sorted(self._tables[sort])

    def deployments_of_model(self, namespace: str, model: str) -> list[Key]:
        """The ModelDeployments in `namespace` that serve `model`."""
        with self._lock:
            return sorted(k for k, o in self._tables[MODEL_DEPLOYMENTS].items()
                          if k[0] == namespace and (o.get("spec") or {}).get("modelName") == model)


class CachedServingKube(Kube):
    """`Kube` whose serving reads come from the watches, and whose serving writes go into the
    cache from the API server's answers."""

    def __init__(self, cache: ServingCache, api_client=None):
        super().__init__(api_client)
        self.cache = cache

    def relist(self, namespace: str | None) -> None:
        """List every kind the serving pass reads into the cache: its seed at start, and a rare
        repair of what a broken watch may have missed."""
        with translated(f"list ModelDeployments and what serves them in {namespace or 'all namespaces'}"):
            listings = {sort: self._listing(sort, namespace) for sort in SORTS}
        self.cache.relist(namespace, {s: (out["items"], int(out["metadata"]["resourceVersion"]))
                                      for s, out in listings.items()})

    def _listing(self, sort: str, namespace: str | None) -> dict:
        if sort in (MODEL_DEPLOYMENTS, MODEL_VERSIONS):
            api = md_api if sort == MODEL_DEPLOYMENTS else mv_api
            return self.request("GET", path(api.GROUP, api.VERSION, api.PLURAL, namespace))
        group = "apps" if sort == DEPLOYMENTS else ""
        return self.request("GET", path(group, "v1", sort, namespace), query={"labelSelector": OWNED})

    # Reads: the watch cache.

    def get_model_deployment(self, namespace: str, name: str) -> dict | None:
        return self.cache.get(MODEL_DEPLOYMENTS, namespace, name)

    def list_model_deployments(self, namespace: str | None) -> list[dict]:
        return self.cache.items(MODEL_DEPLOYMENTS, namespace)

    def list_model_versions(self, namespace: str, label_selector: str) -> list[dict]:
        return self.cache.items(MODEL_VERSIONS, namespace, label_selector)

    def list_model_versions_now(self, namespace: str) -> list[dict]:
        """The ModelVersions as the API server has them now (and into the cache)."""
        items = super().list_model_versions(namespace, "")
        for item in items:
            self.cache.seen(MODEL_VERSIONS, item)
        return items

    def list_deployments(self, namespace: str, label_selector: str) -> list[dict]:
        return self.cache.items(DEPLOYMENTS, namespace, label_selector)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict]:
        return self.cache.items(PODS, namespace, label_selector)

    def get_service(self, namespace: str, name: str) -> dict | None:
        """The operator's own Service from the cache; else the API server says whether someone
        else's has the name (the only read a pass makes)."""
        return self.cache.get(SERVICES, namespace, name) or super().get_service(namespace, name)

    # Writes: the API server's answer goes into the cache at once.

    def patch_model_deployment_status(self, namespace: str, name: str, status: dict) -> None:
        with translated(f"patch status of ModelDeployment {namespace}/{name}"), ignoring(404):
            self.cache.seen(MODEL_DEPLOYMENTS, self.request(
                "PATCH", path(md_api.GROUP, md_api.VERSION, md_api.PLURAL, namespace, name, "status"),
                {"status": status}, content_type=MERGE_PATCH))

    def patch_model_version_status(self, namespace: str, name: str, status: dict,
                                   resource_version: str | None = None) -> None:
        with translated(f"patch status of ModelVersion {namespace}/{name}"), ignoring(404):
            self.cache.seen(MODEL_VERSIONS, self.request(
                "PATCH", path(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL, namespace, name, "status"),
                status_patch_body(status, resource_version), content_type=MERGE_PATCH))

    def create_deployment(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create Deployment {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.cache.seen(DEPLOYMENTS, self.request("POST", path("apps", "v1", DEPLOYMENTS, meta["namespace"]),
                                                      manifest))

    def patch_deployment(self, namespace: str, name: str, patch: dict) -> None:
        with translated(f"patch Deployment {namespace}/{name}"), ignoring(404):
            self.cache.seen(DEPLOYMENTS, self.request("PATCH", path("apps", "v1", DEPLOYMENTS, namespace, name), patch,
                                                      content_type=STRATEGIC_PATCH))

    def delete_deployment(self, namespace: str, name: str) -> None:
        super().delete_deployment(namespace, name)
        gone = self.cache.get(DEPLOYMENTS, namespace, name)
        if gone is not None:
            self.cache.seen(DEPLOYMENTS, gone, deleted=True)

    def create_service(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create service {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.cache.seen(SERVICES, self.request("POST", path("", "v1", SERVICES, meta["namespace"]), manifest))

    def patch_service(self, namespace: str, name: str, patch: dict) -> None:
        with translated(f"patch service {namespace}/{name}"):
            self.cache.seen(SERVICES, self.request("PATCH", path("", "v1", SERVICES, namespace, name), patch,
                                                   content_type=STRATEGIC_PATCH))
