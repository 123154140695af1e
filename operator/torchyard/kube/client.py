"""A thin, typed wrapper over the Kubernetes client for what the operator does.

API exceptions are translated here, once: a conflict or a missing object that another actor
raced us to is not an error (the next reconcile sees the new state); a 5xx or a timeout is
temporary; a 4xx that retrying cannot fix is permanent and names the object.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from torchyard import labels
from torchyard.api import trainingjob as tj

log = logging.getLogger(__name__)


def load_config() -> None:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # --- TrainingJobs -----------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict | None:
        with translated(f"get TrainingJob {namespace}/{name}"):
            try:
                return self.custom.get_namespaced_custom_object(tj.GROUP, tj.VERSION, namespace, tj.PLURAL, name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def list_jobs(self, namespace: str | None) -> list[dict]:
        with translated("list TrainingJobs"):
            if namespace:
                out = self.custom.list_namespaced_custom_object(tj.GROUP, tj.VERSION, namespace, tj.PLURAL)
            else:
                out = self.custom.list_cluster_custom_object(tj.GROUP, tj.VERSION, tj.PLURAL)
        return out.get("items", [])

    def patch_job_status(self, namespace: str, name: str, status: dict) -> None:
        with translated(f"patch status of TrainingJob {namespace}/{name}"), ignoring(404):
            self.custom.patch_namespaced_custom_object_status(
                tj.GROUP, tj.VERSION, namespace, tj.PLURAL, name, {"status": status}
            )

    def delete_job(self, namespace: str, name: str) -> None:
        with translated(f"delete TrainingJob {namespace}/{name}"), ignoring(404):
            self.custom.delete_namespaced_custom_object(
                tj.GROUP, tj.VERSION, namespace, tj.PLURAL, name, propagation_policy="Background"
            )

    # --- pods and services ----------------------------------------------------------------------

    def list_job_pods(self, namespace: str, job_name: str) -> list[dict]:
        with translated(f"list pods of {namespace}/{job_name}"):
            pods = self.core.list_namespaced_pod(namespace, label_selector=labels.job_selector(job_name))
        return [self.api.sanitize_for_serialization(p) for p in pods.items]

    def create_pod(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create pod {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.core.create_namespaced_pod(meta["namespace"], manifest)

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        grace = 0 if force else None
        with translated(f"delete pod {namespace}/{name}"), ignoring(404):
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace)

    def service_exists(self, namespace: str, name: str) -> bool:
        with translated(f"get service {namespace}/{name}"):
            try:
                self.core.read_namespaced_service(name, namespace)
                return True
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise

    def create_service(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        with translated(f"create service {meta['namespace']}/{meta['name']}"), ignoring(409):
            self.core.create_namespaced_service(meta["namespace"], manifest)


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
                self.core.create_namespaced_event(meta["namespace"], event)
        except kopf.PermanentError as exc:  # an event is worth a log line, never a failed reconcile
            log.warning("%s", exc)


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
        if not isinstance(exc, ApiException):
            return False
        detail = _reason(exc)
        if exc.status in (409, 429) or exc.status is None or exc.status >= 500:
            raise kopf.TemporaryError(f"{self.what}: {detail}", delay=2) from exc
        raise kopf.PermanentError(f"{self.what}: {detail}") from exc


def _reason(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason}"
