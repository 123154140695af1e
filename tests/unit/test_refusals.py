"""What the operator does when the API server refuses what it built, or keeps failing.

A refusal (a 4xx other than 409/429) fails the job in the same pass, naming the part of the spec
and quoting the API server; a transient error is retried with backoff and, when it lasts, shown
as the Stalled condition. The in-memory API below stands in for the calls the reconcile makes;
tests/integration/test_bad_specs.py applies the same situations to a real API server.
"""

from __future__ import annotations

import copy
import json

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from jobs import ALLREDUCE_CPU, PARAMETER_SERVER
from torchyard.jobs import JobReconciler
from torchyard.kube.client import translated
from torchyard.reconcile.backoff import LASTING_SECONDS, Backoff
from torchyard.settings import Settings


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Refused")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


class FakeKube:
    """One job, its pods and Service in memory; creating a pod answers ``pod_error`` if set."""

    def __init__(self, manifest: dict, pod_error: ApiException | None = None):
        self.job = copy.deepcopy(manifest)
        self.pods: dict[str, dict] = {}
        self.service = False
        self.pod_error = pod_error
        self.events: list[tuple[str, str, str]] = []
        self.creates = 0

    def get_job(self, namespace, name):
        return copy.deepcopy(self.job)

    def list_job_pods(self, namespace, name):
        return list(self.pods.values())

    def service_exists(self, namespace, name):
        return self.service

    def create_service(self, manifest):
        self.service = True

    def create_pod(self, manifest):
        self.creates += 1
        with translated(f"create pod {manifest['metadata']['namespace']}/{manifest['metadata']['name']}"):
            if self.pod_error is not None:
                raise self.pod_error
        self.pods[manifest["metadata"]["name"]] = manifest

    def delete_pod(self, namespace, name, force=False):
        self.pods.pop(name, None)

    def patch_job_status(self, namespace, name, status, resource_version=None):
        self.job.setdefault("status", {}).update(status)

    def emit_event(self, obj, kind, reason, message):
        self.events.append((kind, reason, message))

    def list_model_versions(self, namespace, selector):
        return []


def reconciler(kube: FakeKube) -> JobReconciler:
    return JobReconciler(kube, Settings())


REFUSED = "Pod \"digits-worker-0\" is invalid: spec.containers[0].resources.limits[cpus]: Invalid value: \"cpus\""


@pytest.mark.parametrize("status", [400, 403, 422])
def test_a_refused_pod_fails_the_job_at_once_naming_the_role_and_quoting_the_api_server(status):
    kube = FakeKube(ALLREDUCE_CPU, api_error(status, REFUSED))
    reconciler(kube).reconcile("ml", "digits")
    job_status = kube.job["status"]
    assert job_status["phase"] == "Failed"
    assert job_status["message"].startswith("spec.worker was refused by the API server")
    assert REFUSED in job_status["message"] and "digits-worker-0" in job_status["message"]
    failed = next(c for c in job_status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidSpec")
    assert [(kind, reason) for kind, reason, _ in kube.events] == [("Warning", "InvalidSpec")]


def test_a_failed_job_is_not_retried():
    kube = FakeKube(ALLREDUCE_CPU, api_error(422, REFUSED))
    jobs = reconciler(kube)
    jobs.reconcile("ml", "digits")
    creates = kube.creates
    jobs.reconcile("ml", "digits")
    jobs.reconcile("ml", "digits")
    assert kube.creates == creates and len(kube.events) == 1


def test_a_refused_parameter_server_names_spec_parameter_server():
    kube = FakeKube(PARAMETER_SERVER, api_error(422, "Pod \"ps-ps-0\" is invalid"))
    reconciler(kube).reconcile("ml", "ps")
    assert kube.job["status"]["message"].startswith("spec.parameterServer was refused by the API server")


@pytest.mark.parametrize("status, message", [(500, "etcd is down"), (503, "unavailable"), (429, "slow down"),
                                             (409, "conflict"), (403, "exceeded quota: compute, requested: cpu=2"),
                                             (403, 'pods is forbidden: User "system:serviceaccount:ops:torchyard" '
                                                   'cannot create resource "pods" in API group "" in the namespace "ml"')])
def test_a_transient_error_leaves_the_job_alone_and_is_retried(status, message):
    kube = FakeKube(ALLREDUCE_CPU, api_error(status, message))
    with pytest.raises(kopf.TemporaryError):
        reconciler(kube).reconcile("ml", "digits")
    assert kube.job.get("status", {}).get("phase") != "Failed" and kube.events == []


def test_a_conflict_with_another_writer_is_retried_at_once(monkeypatch):
    monkeypatch.setattr("torchyard.reconciler.time.monotonic", lambda: 1000.0)  # no time passes
    kube = FakeKube(ALLREDUCE_CPU, api_error(409, "the object has been modified"))
    jobs = reconciler(kube)
    for _ in range(3):
        with pytest.raises(kopf.TemporaryError):
            jobs.reconcile("ml", "digits")
    assert kube.creates == 3 * 2  # every pass went, each sending both workers' creates at once


def test_backoff_doubles_up_to_a_cap_and_forgets_on_success():
    backoff = Backoff(first=2, cap=10)
    lasted = [backoff.failed("j", now) for now in (0, 2, 6, 14, 24)]
    assert lasted == [0, 2, 6, 14, 24]
    assert not backoff.due("j", 33) and backoff.due("j", 34)  # 2, 4, 8, then the cap of 10
    assert backoff.succeeded("j") and backoff.due("j", 0) and not backoff.succeeded("j")


def test_lasting_transient_errors_show_as_the_stalled_condition_until_a_pass_succeeds(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("torchyard.reconciler.time.monotonic", lambda: clock[0])
    kube = FakeKube(ALLREDUCE_CPU, api_error(503, "the server is currently unable to handle the request"))
    jobs = reconciler(kube)
    while clock[0] < 1000 + LASTING_SECONDS + 60:
        try:
            jobs.reconcile("ml", "digits")
        except kopf.TemporaryError:
            pass
        clock[0] += 1
    stalled = [c for c in kube.job["status"]["conditions"] if c["type"] == "Stalled"]
    assert stalled and stalled[0]["reason"] == "TransientAPIErrors" and "unable to handle" in stalled[0]["message"]
    assert kube.creates < 15, "retries back off instead of hammering the API server every pass"
    kube.pod_error = None
    clock[0] += 120
    jobs.reconcile("ml", "digits")
    assert [c for c in kube.job["status"]["conditions"] if c["type"] == "Stalled"] == []
    assert kube.job["status"]["phase"] == "Pending" and kube.pods


def test_a_refused_deployment_marks_the_model_deployment_invalid_and_leaves_traffic_alone():
    from serving import version
    from test_serving_reconciler import FakeKube as ServingKube, reconciler as serving_reconciler
    from torchyard.kube.client import Refused

    class Refusing(ServingKube):
        def create_deployment(self, manifest):
            raise Refused(f"create Deployment ml/{manifest['metadata']['name']}", 422,
                          "Deployment.apps \"digits-v1\" is invalid: spec.template.spec.containers[0].image: Required value")

    kube = Refusing({}, {}, [version(1)], {}, selected=None)
    serving_reconciler(kube).reconcile("ml", "digits")
    status = next(w for w in kube.writes if w[0] == "patch_model_deployment_status")[2]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "was refused by the API server" in degraded["message"] and "digits-v1" in degraded["message"]
    assert [w[2:4] for w in kube.writes if w[0] == "emit_event"] == [("Warning", "InvalidSpec")]
    assert not [w for w in kube.writes if w[0] in ("create_service", "patch_service")]
