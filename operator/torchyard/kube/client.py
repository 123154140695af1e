"""A thin, typed wrapper over the Kubernetes client for what the operator does.

API exceptions are translated here, once: a conflict or a missing object that another actor
raced us to is not an error (the next reconcile sees the new state); a 5xx or a timeout is
temporary; a 4xx that retrying cannot fix is permanent and names the object. So is a request
that got no answer at all (a connection reset, a timeout): every call has a timeout, so a dropped
connection cannot hold a job's reconcile, and every trigger folded into it, forever.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone

import kopf
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from torchyard import labels
from torchyard.api import trainingjob as tj
from torchyard.api import modeldeployment as md_api
from torchyard.api import modelversion as mv_api
from torchyard.builders import gang

log = logging.getLogger(__name__)
# How the authorizer words a denial ("pods is forbidden: User "x" cannot create resource ..."),
# unlike admission's refusals of an object ("violates PodSecurity ...").
RBAC_DENIED = re.compile(r'User ".*" cannot \w+ resource')

JSON = "application/json"
# How patches are sent: a merge patch for custom resources and their status, a strategic merge
# patch for built-in kinds (it merges lists by their keys, as kubectl does).
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = (5.0, 30.0)  # seconds to connect, seconds to wait for an answer
DISCOVERY_SECONDS = 60.0  # how long an answer of `serves` is trusted
# Connections kept open to the API server: enough for every reconcile worker and every write a
# pass sends at once (torchyard.fanout); a request beyond the pool opens a connection and drops it.
POOL_CONNECTIONS = 64


def load_config() -> None:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def status_patch_body(status: dict, resource_version: str | None = None) -> dict:
    """A merge patch of `status`; with `resource_version`, a precondition: the API server answers
    409 (Conflict) if the object changed since that version."""
    body: dict = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def path(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The API server's path of a collection or an object ("" is the core group)."""
    parts = [f"/apis/{group}/{version}" if group else f"/api/{version}"]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts += [part for part in (plural, name, subresource) if part]
    return "/".join(parts)


class Kube:
    """Every call is a plain HTTP request through the client's `ApiClient` (its configuration,
    authentication, connection pool): the client's typed API classes would load some 280 generated
    models, ~25 MiB held for the operator's life, only to turn answers back into dicts."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or client.ApiClient(_pooled(client.Configuration.get_default_copy()))
        _default_timeout(self.api)
        self._served: dict[tuple[str, str, str], tuple[bool, float]] = {}  # serves(): answer, until

    def request(self, method: str, url: str, body: dict | None = None, query: dict | None = None,
                content_type: str = JSON, read: bool = True) -> dict | None:
        """Send one request; the answer's JSON as dicts (None unless `read`: a write whose answer
        the watch brings anyway). A non-2xx answer raises the client's ApiException, as its typed
        calls do, for `translated` to name."""
        query_params = [(key, value) for key, value in (query or {}).items() if value is not None]
        request = self.api.param_serialize(method, url, query_params=query_params, body=body,
                                           header_params={"Content-Type": content_type, "Accept": JSON},
                                           auth_settings=["BearerToken"])
        response = self.api.call_api(*request)
        data = response.read()  # read to the end: the connection goes back to the pool
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=data.decode("utf-8", "replace"), data=None)
        return json.loads(data) if read else None

    # --- TrainingJobs -----------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict | None:
        with translated(f"get TrainingJob {namespace}/{name}"):
            return _or_none(lambda: self.request("GET", path(tj.GROUP, tj.VERSION, tj.PLURAL, namespace, name)))

    def list_jobs(self, namespace: str | None) -> list[dict]:
        with translated("list TrainingJobs"):
            out = self.request("GET", path(tj.GROUP, tj.VERSION, tj.PLURAL, namespace))
        return out.get("items", [])

    def patch_job_status(self, namespace: str, name: str, status: dict, resource_version: str | None = None) -> dict | None:
        """Merge `status` in. With `resource_version`, only if nobody changed the job since it was
        read: a second operator replica acting on the same view gets a conflict, not a lost update.
        Returns the job as written (None when it is gone)."""
        with translated(f"patch status of TrainingJob {namespace}/{name}"), ignoring(404):
            return self.request("PATCH", path(tj.GROUP, tj.VERSION, tj.PLURAL, namespace, name, "status"),
                                status_patch_body(status, resource_version), content_type=MERGE_PATCH)
        return None

    def delete_job(self, namespace: str, name: str) -> None:
        with translated(f"delete TrainingJob {namespace}/{name}"), ignoring(404):
            self.request("DELETE", path(tj.GROUP, tj.VERSION, tj.PLURAL, namespace, name),
                         query={"propagationPolicy": "Background"}, read=False)

    # --- pods and services ----------------------------------------------------------------------

    def list_job_pods(self, namespace: str, job_name: str) -> list[dict]:
        with translated(f"list pods of {namespace}/{job_name}"):
            return self.request("GET", path("", "v1", "pods", namespace),
                                query={"labelSelector": labels.job_selector(job_name)})["items"]

    def create_pod(self, manifest: dict) -> None:
        """Sent as built: no client model checks it, so a field of another Kubernetes release than
        the client's (a gang pod's spec.workloadRef, builders/gang.py) reaches the API server."""
        meta = manifest["metadata"]
        with translated(f"create pod {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.request("POST", path("", "v1", "pods", meta["namespace"]), manifest, read=False)

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        grace = 0 if force else None
        with translated(f"delete pod {namespace}/{name}"), ignoring(404):
            self.request("DELETE", path("", "v1", "pods", namespace, name), query={"gracePeriodSeconds": grace},
                         read=False)

    def service_exists(self, namespace: str, name: str) -> bool:
        return self.get_service(namespace, name) is not None

    def unsettled(self, namespace: str, job_name: str) -> float:
        """Seconds until reads of the job's pods and Service may stop waiting for its own writes to
        show: always 0 here, where every read goes to the API server (kube/cache.py waits)."""
        return 0.0

    def lapsed(self, namespace: str, job_name: str) -> bool:
        """Whether one of the job's own writes was expected in the watch and never shown in time:
        never here (kube/cache.py)."""
        return False

    def create_service(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create service {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.request("POST", path("", "v1", "services", meta["namespace"]), manifest, read=False)


    # --- gang scheduling: the Workload of a job in gang mode (builders/gang.py) -------------------

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves this resource (discovery, remembered for a while: a
        cluster that gains or loses an API does so at an API server restart)."""
        key, now = (group, version, plural), time.monotonic()
        known = self._served.get(key)
        if known is not None and now < known[1]:
            return known[0]
        with translated(f"discover {group}/{version}"):
            found = _or_none(lambda: self.request("GET", path(group, version, "")))
        served = found is not None and any(r.get("name") == plural for r in found.get("resources") or [])
        self._served[key] = (served, now + DISCOVERY_SECONDS)
        return served

    def create_workload(self, manifest: dict) -> dict | None:
        """Create a gang's Workload; the one already there when the name is taken (else None)."""
        meta, (group, version) = manifest["metadata"], manifest["apiVersion"].split("/")
        with translated(f"create {manifest['kind']} {meta['namespace']}/{meta['name']}"):
            try:
                self.request("POST", path(group, version, gang.PLURAL, meta["namespace"]), manifest, read=False)
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
            return _or_none(lambda: self.request("GET", path(group, version, gang.PLURAL, meta["namespace"],
                                                             meta["name"])))

    def delete_workload(self, namespace: str, name: str) -> None:
        with translated(f"delete {gang.KIND} {namespace}/{name}"), ignoring(404):
            self.request("DELETE", path(gang.GROUP, gang.VERSION, gang.PLURAL, namespace, name), read=False)

    # --- peering --------------------------------------------------------------------------------------

    def peers(self, peering: str, namespace: str | None) -> dict:
        """The status of kopf's peering object: peer id -> {priority, lastseen, lifetime}."""
        with translated(f"get kopf peering {peering}"), ignoring(404):
            plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
            return self.request("GET", path("kopf.dev", "v1", plural, namespace, peering)).get("status") or {}
        return {}

    # --- events -------------------------------------------------------------------------------------

    def emit_event(self, obj: dict, kind: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about `obj`, as `kubectl describe` shows them."""
        meta = obj["metadata"]
        now = datetime.now(timezone.utc)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "torchyard"},
            "reportingComponent": "torchyard.dev/operator",
            "reportingInstance": "torchyard",
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        try:
            with translated(f"create event for {meta['namespace']}/{meta['name']}"):
                self.request("POST", path("", "v1", "events", meta["namespace"]), event, read=False)
        except kopf.PermanentError as exc:  # an event is worth a log line, never a failed reconcile
            log.warning("%s", exc)

    # --- serving: ModelVersions, ModelDeployments, version Deployments, the stable Service ----

    # ModelVersions

    def get_model_version(self, namespace: str, name: str) -> dict | None:
        with translated(f"get ModelVersion {namespace}/{name}"):
            return _or_none(lambda: self.request("GET", path(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL, namespace,
                                                             name)))

    def list_model_versions(self, namespace: str, label_selector: str) -> list[dict]:
        with translated(f"list ModelVersions in {namespace}"):
            out = self.request("GET", path(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL, namespace),
                               query={"labelSelector": label_selector or None})
        return out.get("items", [])

    def create_model_version(self, manifest: dict) -> str | None:
        """Create it: the created object's resourceVersion; None when the name is taken (another
        registration won the version number)."""
        meta = manifest["metadata"]
        with translated(f"create ModelVersion {meta['namespace']}/{meta['name']}"):
            try:
                created = self.request("POST", path(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL, meta["namespace"]),
                                       manifest)
            except ApiException as exc:
                if exc.status == 409:
                    return None
                raise
        return str(created["metadata"]["resourceVersion"])

    def patch_model_version_status(self, namespace: str, name: str, status: dict,
                                   resource_version: str | None = None) -> None:
        """Merge `status` in; with `resource_version`, only if nobody changed the ModelVersion since
        (else Conflict)."""
        with translated(f"patch status of ModelVersion {namespace}/{name}"), ignoring(404):
            self.request("PATCH", path(mv_api.GROUP, mv_api.VERSION, mv_api.PLURAL, namespace, name, "status"),
                         status_patch_body(status, resource_version), content_type=MERGE_PATCH, read=False)

    # ModelDeployments

    def get_model_deployment(self, namespace: str, name: str) -> dict | None:
        with translated(f"get ModelDeployment {namespace}/{name}"):
            return _or_none(lambda: self.request("GET", path(md_api.GROUP, md_api.VERSION, md_api.PLURAL, namespace,
                                                             name)))

    def get_config_map(self, namespace: str, name: str) -> dict | None:
        with translated(f"get ConfigMap {namespace}/{name}"):
            return _or_none(lambda: self.request("GET", path("", "v1", "configmaps", namespace, name)))

    def create_config_map(self, manifest: dict) -> bool:
        """Create it; False when another writer created it first."""
        meta = manifest["metadata"]
        with translated(f"create ConfigMap {meta['namespace']}/{meta['name']}"):
            try:
                self.request("POST", path("", "v1", "configmaps", meta["namespace"]), manifest, read=False)
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
        return True

    def replace_config_map(self, namespace: str, name: str, manifest: dict) -> bool:
        """Replace it if its resourceVersion (in `manifest`) is still current; False when another
        writer changed it since it was read."""
        with translated(f"replace ConfigMap {namespace}/{name}"):
            try:
                self.request("PUT", path("", "v1", "configmaps", namespace, name), manifest, read=False)
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
        return True

    def list_model_deployments(self, namespace: str | None) -> list[dict]:
        with translated("list ModelDeployments"):
            out = self.request("GET", path(md_api.GROUP, md_api.VERSION, md_api.PLURAL, namespace))
        return out.get("items", [])

    def patch_model_deployment(self, namespace: str, name: str, patch: dict) -> dict:
        with translated(f"patch ModelDeployment {namespace}/{name}"):
            return self.request("PATCH", path(md_api.GROUP, md_api.VERSION, md_api.PLURAL, namespace, name), patch,
                                content_type=MERGE_PATCH)

    def patch_model_deployment_status(self, namespace: str, name: str, status: dict) -> None:
        with translated(f"patch status of ModelDeployment {namespace}/{name}"), ignoring(404):
            self.request("PATCH", path(md_api.GROUP, md_api.VERSION, md_api.PLURAL, namespace, name, "status"),
                         {"status": status}, content_type=MERGE_PATCH, read=False)

    # version Deployments and their pods

    def list_deployments(self, namespace: str, label_selector: str) -> list[dict]:
        with translated(f"list Deployments in {namespace}"):
            return self.request("GET", path("apps", "v1", "deployments", namespace),
                                query={"labelSelector": label_selector})["items"]

    def create_deployment(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create Deployment {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.request("POST", path("apps", "v1", "deployments", meta["namespace"]), manifest, read=False)

    def patch_deployment(self, namespace: str, name: str, patch: dict) -> None:
        with translated(f"patch Deployment {namespace}/{name}"), ignoring(404):
            self.request("PATCH", path("apps", "v1", "deployments", namespace, name), patch,
                         content_type=STRATEGIC_PATCH, read=False)

    def delete_deployment(self, namespace: str, name: str) -> None:
        with translated(f"delete Deployment {namespace}/{name}"), ignoring(404):
            self.request("DELETE", path("apps", "v1", "deployments", namespace, name),
                         query={"propagationPolicy": "Background"}, read=False)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict]:
        with translated(f"list pods in {namespace}"):
            return self.request("GET", path("", "v1", "pods", namespace), query={"labelSelector": label_selector})["items"]

    # the stable Service

    def get_service(self, namespace: str, name: str) -> dict | None:
        with translated(f"get service {namespace}/{name}"):
            return _or_none(lambda: self.request("GET", path("", "v1", "services", namespace, name)))

    def patch_service(self, namespace: str, name: str, patch: dict) -> None:
        with translated(f"patch service {namespace}/{name}"):
            self.request("PATCH", path("", "v1", "services", namespace, name), patch, content_type=STRATEGIC_PATCH,
                         read=False)


def _pooled(configuration: client.Configuration) -> client.Configuration:
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL_CONNECTIONS)
    return configuration


def _default_timeout(api: client.ApiClient) -> None:
    """Give every call through `api` a timeout (the client's default is to wait forever)."""
    call = api.call_api

    def call_with_timeout(*args, **kwargs):
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return call(*args, **kwargs)

    api.call_api = call_with_timeout


class ignoring:
    """Treat the given HTTP statuses as success (someone else already did it)."""

    def __init__(self, *statuses: int):
        self.statuses = statuses

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return isinstance(exc, ApiException) and exc.status in self.statuses


class translated:
    """Map API exceptions onto kopf's temporary/permanent errors, naming what was being done."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):  # no answer: reset, refused, timed out
            raise kopf.TemporaryError(f"{self.what}: {type(exc).__name__}: {exc}", delay=2) from exc
        if not isinstance(exc, ApiException):
            return False
        detail = _reason(exc)
        if exc.status == 409:
            raise Conflict(f"{self.what}: {detail}", delay=0) from exc
        if _transient(exc):
            raise kopf.TemporaryError(f"{self.what}: {detail}", delay=2) from exc
        raise Refused(self.what, exc.status, _api_message(exc)) from exc


class Conflict(kopf.TemporaryError):
    """Someone changed the object since it was read (optimistic concurrency): the next pass, on a
    fresh read, simply goes again; no sign of trouble with the API server."""


class Refused(kopf.PermanentError):
    """The API server answered a 4xx that asking again cannot change (not 409, not 429): the
    object as built is invalid or not allowed. ``message`` is the API server's own words."""

    def __init__(self, what: str, status: int, message: str):
        super().__init__(f"{what}: HTTP {status}: {message}")
        self.what = what
        self.status = status
        self.message = message


def _transient(exc: ApiException) -> bool:
    """5xx, 429, a quota that is full right now, and an authorization denial: worth asking again
    later. A restarted API server denies every request for a moment while its RBAC loads; a role
    the operator lacks is the admin's to fix, not the job's to fail for (it shows as Stalled)."""
    if exc.status == 429 or exc.status is None or exc.status >= 500:
        return True
    message = _api_message(exc)
    return exc.status == 403 and ("exceeded quota" in message or bool(RBAC_DENIED.search(message)))


def _api_message(exc: ApiException) -> str:
    """The API server's explanation (a Status object's message), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return (body.get("message") if isinstance(body, dict) else None) or str(exc.reason)


def _reason(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason}: {_api_message(exc)}"


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context (`default` when it names none)."""
    try:
        _, context = config.list_kube_config_contexts()
    except (config.ConfigException, OSError):
        return "default"
    return (context or {}).get("context", {}).get("namespace") or "default"


def _or_none(read):
    """The object, or None when the API answers 404: the one way a read treats a missing object
    (a write that finds it gone uses ``ignoring(404)``)."""
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
