"""What the watches already delivered, so a reconcile pass reads no API for what it observes.

kopf watches TrainingJobs, and the pods and Services the operator made; each event lands here
(newest resourceVersion wins) before its key is queued. `CachedKube` answers a pass's reads of
the job, its pods and its Service from here and sends every write to the API server as `Kube` does.

A cache lags the API server by one event. Acting on a view from before the operator's own
creates and deletes would create a pod twice or miss that it is going, so each write first records
what it expects the watch to show (as controllers' "expectations" do); until the watch shows it,
the job's pass waits (kube/client.py's reads, without a cache, never wait). An expectation the
watch has not met after `EXPECTATION_SECONDS` (a watch that lags that far) lapses, and the job's
next read of what it expected goes to the API server once, its answer kept here, so a lagging
watch does not make the operator create again what it already created. The operator's own status
writes go into the cache from the API server's answer at once.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Callable

from torchyard import labels as keys
from torchyard.api import trainingjob as tj
from torchyard.kube.client import Kube, path, translated

EXPECTATION_SECONDS = 30.0
Key = tuple[str, str]


def _version(obj: dict) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _key(obj: dict) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _meta(obj: dict) -> dict:
    return {k: v for k, v in obj["metadata"].items() if k != "managedFields"}


# What a pass reads of a pod (reconcile/observe.py: view_pod), and all the cache keeps: a pod as
# the watch delivers it is ten times that, and a thousand jobs have three thousand pods.
POD_META = ("name", "namespace", "uid", "labels", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds")
POD_STATUS = ("phase", "reason", "message")
CONTAINER_STATUS = ("name", "state", "ready", "restartCount")
# Of the pod's conditions, those a pass reads, without their times: a condition's time or one no
# pass reads (Initialized, ContainersReady) changing is no change to what a pass decides from.
POD_CONDITIONS = ("Ready", "PodScheduled")
CONDITION = ("type", "status", "reason", "message")


SERVICE_META = ("name", "resourceVersion", "deletionTimestamp")


def _picked(mapping: dict, keys: tuple[str, ...]) -> dict:
    return {k: mapping[k] for k in keys if k in mapping}


def _slim_pod(obj: dict) -> dict:
    status = obj.get("status") or {}
    kept = _picked(status, POD_STATUS)
    if "conditions" in status:
        kept["conditions"] = [_picked(c, CONDITION) for c in status["conditions"] or [] if c.get("type") in POD_CONDITIONS]
    if "containerStatuses" in status:
        kept["containerStatuses"] = [_picked(cs, CONTAINER_STATUS) for cs in status["containerStatuses"]]
    return {"metadata": _picked(obj["metadata"], POD_META), "spec": {"nodeName": (obj.get("spec") or {}).get("nodeName")},
            "status": kept}


def _as_created(pod: dict) -> bool:
    """Whether a pod (as _slim_pod keeps it) is still as its create left it: not yet scheduled, with
    no condition or container status. kopf hands over only the last of an object's events that
    come within its batch window, so the event that first shows a pod may already show it moved."""
    status = pod["status"]
    return (not pod["spec"]["nodeName"] and status.get("phase") in (None, "Pending")
            and not status.get("conditions") and not status.get("containerStatuses"))


def _job_of(pod: dict) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(keys.JOB_NAME)


class WatchCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[Key, dict] = {}
        self._pods: dict[Key, dict[str, dict]] = {}  # (namespace, job) -> pod name -> pod
        self._services: dict[Key, dict] = {}
        self._expected: dict[Key, dict[str, tuple[str, float]]] = {}  # (namespace, job) -> what -> (kind, until)
        # (namespace, job) -> what -> kind: expected, lapsed, and not shown by the watch since.
        self._lapsed: dict[Key, dict[str, str]] = {}
        # (sort, namespace, name) -> the resourceVersion of its deletion, as the watch showed it: a
        # listing taken before the deletion but applied after it must not bring the object back.
        self._gone: dict[tuple[str, str, str], int] = {}
        # Jobs whose pods or Service changed in a way the operator's own writes did not make: the
        # news a pass is due for (taken by `due`, once the watch shows all of the job's writes).
        self._news: set[Key] = set()

    # What the watches deliver. Each says whether what a pass reads changed: the echo of the
    # operator's own status write, or a pod's change in a field no pass reads, needs no pass.
    def seen_job(self, obj: dict, deleted: bool = False) -> bool:
        with self._lock:
            key = _key(obj)
            if deleted:
                self._lapsed.pop(key, None)
                self._news.discard(key)
            return self._keep(self._jobs, key, {**obj, "metadata": _meta(obj)}, deleted, ("job", *key))

    def seen_service(self, obj: dict, deleted: bool = False) -> bool:
        with self._lock:
            key = _key(obj)
            changed = self._keep(self._services, key, {"metadata": _picked(obj["metadata"], SERVICE_META)}, deleted,
                                 ("service", *key))
            if not self._check(key, f"service/{key[1]}") and changed:
                self._news.add(key)
            return changed

    def seen_pod(self, obj: dict, deleted: bool = False) -> bool:
        job = _job_of(obj)
        if job is None:
            return False
        namespace, name = _key(obj)
        kept = _slim_pod(obj)
        with self._lock:
            pods = self._pods.setdefault((namespace, job), {})
            changed = self._keep(pods, name, kept, deleted, ("pod", namespace, name))
            if not pods:
                del self._pods[(namespace, job)]
            echo = self._check((namespace, job), f"pod/{name}") and _as_created(kept)
            if changed and not echo:
                self._news.add((namespace, job))
            return changed

    def relist(self, namespace: str | None, jobs: list[dict], pods: list[dict], services: list[dict],
               versions: tuple[int, int, int]) -> None:
        """Full listings (each with its resourceVersion) replace what a watch may have missed: an
        object they do not hold is gone, unless the watch saw it after the listing was taken."""
        for seen, items in ((self.seen_job, jobs), (self.seen_pod, pods), (self.seen_service, services)):
            for obj in items:
                seen(obj)
        in_scope = (lambda key: True) if namespace is None else (lambda key: key[0] == namespace)
        with self._lock:
            _prune(self._jobs, in_scope, {_key(o) for o in jobs}, versions[0])
            listed_pods = {_key(o) for o in pods}
            for key, table in self._pods.items():
                if in_scope(key):
                    _prune(table, lambda name: True, {n for ns, n in listed_pods if ns == key[0]}, versions[1])
            _prune(self._services, in_scope, {_key(o) for o in services}, versions[2])
            # A deletion older than the listings is in them: nothing left to guard against.
            by_sort = {"job": versions[0], "pod": versions[1], "service": versions[2]}
            for mark in [m for m, v in self._gone.items() if in_scope(m[1:]) and v <= by_sort[m[0]]]:
                del self._gone[mark]

    def _keep(self, table: dict, key, obj: dict, deleted: bool, mark: tuple[str, str, str]) -> bool:
        """_store, remembering each deletion until a listing newer than it comes."""
        if deleted:
            self._gone[mark] = max(_version(obj), self._gone.get(mark, 0))
        elif _version(obj) <= self._gone.get(mark, -1):
            return False  # from a listing taken before the deletion the watch already showed
        return _store(table, key, obj, deleted)

    # What a pass reads.
    def job(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self._jobs.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def job_keys(self) -> list[Key]:
        with self._lock:
            return list(self._jobs)

    def job_of_pod(self, namespace: str, name: str) -> str:
        with self._lock:
            return next((job for (ns, job), pods in self._pods.items() if ns == namespace and name in pods), "")

    def pods(self, namespace: str, job: str) -> list[dict] | None:
        """The job's pods, or None while the watch has yet to show the operator's own writes, or
        after it failed to show one in time (then ask the API server, and `reread` its answer)."""
        with self._lock:
            if self._pending((namespace, job)) or any(w.startswith("pod/") for w in self._lapsed.get((namespace, job), ())):
                return None
            return [copy.deepcopy(p) for p in self._pods.get((namespace, job), {}).values()]

    def service_exists(self, namespace: str, name: str) -> bool | None:
        with self._lock:
            what = f"service/{name}"
            if self._pending((namespace, name), what) or what in self._lapsed.get((namespace, name), ()):
                return None
            return (namespace, name) in self._services

    def reread(self, namespace: str, job: str, sort: str, objects: list[dict]) -> None:
        """What the API server answered for the job's pods (`sort` "pod") or Service ("service")
        after an expectation lapsed: kept (newest version wins), and the lapse forgotten."""
        for obj in objects:
            (self.seen_pod if sort == "pod" else self.seen_service)(obj)
        with self._lock:
            lapsed = self._lapsed.get((namespace, job), {})
            for what in [w for w in lapsed if w.startswith(f"{sort}/")]:
                del lapsed[what]
            if not lapsed:
                self._lapsed.pop((namespace, job), None)

    def due(self, namespace: str, job: str) -> bool:
        """Whether the job's pass is due for what its pods and Service showed: something changed
        that the operator's own creates did not make (a pod or Service shown as it was created is
        no news: the pass that created it counted on it), and the watch shows all of the job's
        own writes. Taken: the next call says False until new news comes."""
        with self._lock:
            if (namespace, job) not in self._news or self._pending((namespace, job)):
                return False
            self._news.discard((namespace, job))
            return True

    def awaits(self, namespace: str, job: str) -> bool:
        """Whether the watch has yet to show some of the job's own writes: its events then queue
        no pass (the pass would only wait); the event that shows the last of them does, if
        something else changed meanwhile (`due`)."""
        with self._lock:
            return self._pending((namespace, job))

    def lapsed(self, namespace: str, job: str) -> bool:
        """Whether an expectation of the job lapsed unmet (its pass must go, and read afresh)."""
        with self._lock:
            self._pending((namespace, job))
            return bool(self._lapsed.get((namespace, job)))

    # Expectations: what the operator's own writes will make the watch show.
    def expect(self, namespace: str, job: str, what: str, kind: str) -> None:
        """`what` is "pod/<name>" or "service/<name>"; `kind` is "create" or "delete"."""
        with self._lock:
            self._expected.setdefault((namespace, job), {})[what] = (kind, self._clock() + EXPECTATION_SECONDS)

    def settle(self, namespace: str, job: str, what: str) -> None:
        """After the write: the watch may have shown its result already, or it never will."""
        with self._lock:
            self._check((namespace, job), what)

    def drop(self, namespace: str, job: str, what: str) -> None:
        """The write failed: nothing to expect."""
        with self._lock:
            expected = self._expected.get((namespace, job), {})
            expected.pop(what, None)
            if not expected:
                self._expected.pop((namespace, job), None)

    def _check(self, key: Key, what: str) -> bool:
        """Whether the event just kept shows an object the operator created, as it created it: the
        echo of its own write. (A deletion is never only an echo: once a pod is gone, or going,
        the next pass has its replacement to create.)"""
        echo = False
        for table, kind_of in ((self._expected, lambda v: v[0]), (self._lapsed, lambda v: v)):
            expected = table.get(key, {})
            if what in expected and self._shows(key, what, kind_of(expected[what])):
                echo = echo or kind_of(expected[what]) == "create"
                del expected[what]
                if not expected:
                    del table[key]
        return echo

    def _shows(self, key: Key, what: str, kind: str) -> bool:
        sort, name = what.split("/", 1)
        obj = (self._services.get((key[0], name)) if sort == "service" else self._pods.get(key, {}).get(name))
        if kind == "create":
            return obj is not None
        return obj is None or bool(obj["metadata"].get("deletionTimestamp"))

    def unsettled(self, namespace: str, job: str) -> float:
        """Seconds until the last of the job's writes in flight stops being expected; 0 when the
        watch shows them all."""
        with self._lock:
            if not self._pending((namespace, job)):
                return 0.0
            return max(until for _, until in self._expected[(namespace, job)].values()) - self._clock()

    def _pending(self, key: Key, only: str | None = None) -> bool:
        expected = self._expected.get(key)
        if not expected:
            return False
        now = self._clock()
        for what in [w for w, (_, until) in expected.items() if until <= now]:
            self._lapsed.setdefault(key, {})[what] = expected.pop(what)[0]
        if not expected:
            del self._expected[key]
        return bool(expected) if only is None else only in expected


def _store(table: dict, key, obj: dict, deleted: bool) -> bool:
    """Keep `obj` unless an older version; whether anything but the version changed."""
    old = table.get(key)
    if deleted:
        table.pop(key, None)
        return old is not None
    if old is not None and _version(obj) < _version(old):
        return False
    table[key] = obj
    return old is None or _unversioned(old) != _unversioned(obj)


def _unversioned(obj: dict) -> dict:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


def _prune(table: dict, in_scope, listed: set, version: int) -> None:
    for key in [k for k, obj in table.items() if in_scope(k) and k not in listed and _version(obj) <= version]:
        del table[key]


class CachedKube(Kube):
    """`Kube` whose reads of a job's observed state come from the watches."""

    def __init__(self, cache: WatchCache, api_client=None):
        super().__init__(api_client)
        self.cache = cache

    def relist(self, namespace: str | None) -> None:
        """List the TrainingJobs and the operator's pods and Services into the cache: its seed at
        start, and a rare repair of what a broken watch may have missed."""
        selector = f"{keys.JOB_NAME},{keys.MANAGED_BY}={keys.MANAGER}"
        scope = namespace or "all namespaces"
        with translated(f"list TrainingJobs, pods and Services in {scope}"):
            jobs = self.request("GET", path(tj.GROUP, tj.VERSION, tj.PLURAL, namespace))
            pods, services = (self.request("GET", path("", "v1", plural, namespace), query={"labelSelector": selector})
                              for plural in ("pods", "services"))
        self.cache.relist(namespace, jobs.get("items", []), pods["items"], services["items"],
                          tuple(int(listing["metadata"]["resourceVersion"]) for listing in (jobs, pods, services)))

    def get_job(self, namespace: str, name: str) -> dict | None:
        return self.cache.job(namespace, name)

    def unsettled(self, namespace: str, job_name: str) -> float:
        return self.cache.unsettled(namespace, job_name)

    def lapsed(self, namespace: str, job_name: str) -> bool:
        return self.cache.lapsed(namespace, job_name)

    def list_job_pods(self, namespace: str, job_name: str) -> list[dict]:
        pods = self.cache.pods(namespace, job_name)
        if pods is None:
            pods = super().list_job_pods(namespace, job_name)
            self.cache.reread(namespace, job_name, "pod", pods)
        return pods

    def service_exists(self, namespace: str, name: str) -> bool:
        exists = self.cache.service_exists(namespace, name)
        if exists is None:
            service = self.get_service(namespace, name)
            self.cache.reread(namespace, name, "service", [service] if service else [])
            exists = service is not None
        return exists

    def patch_job_status(self, namespace: str, name: str, status: dict, resource_version: str | None = None):
        obj = super().patch_job_status(namespace, name, status, resource_version)
        if obj:
            self.cache.seen_job(obj)
        return obj

    def create_pod(self, manifest: dict) -> None:
        self._expecting(manifest, "pod", "create", super().create_pod, manifest)

    def create_service(self, manifest: dict) -> None:
        self._expecting(manifest, "service", "create", super().create_service, manifest)

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        job = self.cache.job_of_pod(namespace, name)
        if not job:  # read from the API server, not the cache: nothing to expect of the watch
            return super().delete_pod(namespace, name, force)
        pod = {"metadata": {"namespace": namespace, "name": name, "labels": {keys.JOB_NAME: job}}}
        self._expecting(pod, "pod", "delete", super().delete_pod, namespace, name, force)

    def _expecting(self, manifest: dict, sort: str, kind: str, write, *args) -> None:
        meta = manifest["metadata"]
        job = (meta.get("labels") or {}).get(keys.JOB_NAME) or meta["name"]
        what = f"{sort}/{meta['name']}"
        self.cache.expect(meta["namespace"], job, what, kind)
        try:
            write(*args)
        except BaseException:
            self.cache.drop(meta["namespace"], job, what)
            raise
        self.cache.settle(meta["namespace"], job, what)
