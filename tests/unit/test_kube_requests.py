"""The operator's requests to the API server: plain HTTP through the client's ApiClient, never its
typed API classes (they load some 280 generated models, ~25 MiB held for the operator's life)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from kubernetes import client

from torchyard.kube.client import Conflict, Kube, Refused


def answering(status: int, answer: dict, sent: list):
    """A `call_api` that records each request and answers `status` with `answer`."""

    def call_api(method, url, headers=None, body=None, post_params=None, **_):
        sent.append((method, url.split("://")[-1].split("/", 1)[-1], headers["Content-Type"], body))
        data = json.dumps(answer).encode()
        return SimpleNamespace(status=status, reason="answer", data=data, headers={}, read=lambda: data)

    return call_api


def kube_answering(status: int, answer: dict) -> tuple[Kube, list]:
    kube, sent = Kube(client.ApiClient()), []
    kube.api.call_api = answering(status, answer, sent)
    return kube, sent


def test_a_job_status_is_a_merge_patch_of_the_status_subresource_with_its_precondition():
    kube, sent = kube_answering(200, {"metadata": {"name": "digits"}, "status": {"phase": "Running"}})
    written = kube.patch_job_status("ml", "digits", {"phase": "Running"}, resource_version="41")
    assert written == {"metadata": {"name": "digits"}, "status": {"phase": "Running"}}
    assert sent == [("PATCH", "apis/torchyard.dev/v1alpha1/namespaces/ml/trainingjobs/digits/status",
                     "application/merge-patch+json",
                     {"status": {"phase": "Running"}, "metadata": {"resourceVersion": "41"}})]


def test_a_built_in_kind_is_patched_by_strategic_merge_and_a_selector_goes_in_the_query():
    kube, sent = kube_answering(200, {"items": []})
    kube.patch_deployment("ml", "digits-v1", {"spec": {"replicas": 2}})
    assert kube.list_pods("ml", "torchyard.dev/model-deployment=digits") == []
    assert [(method, url, kind) for method, url, kind, _ in sent] == [
        ("PATCH", "apis/apps/v1/namespaces/ml/deployments/digits-v1", "application/strategic-merge-patch+json"),
        ("GET", "api/v1/namespaces/ml/pods?labelSelector=torchyard.dev/model-deployment%3Ddigits",
         "application/json")]


def test_a_forced_pod_delete_has_no_grace_and_a_plain_one_leaves_it_to_the_pod():
    kube, sent = kube_answering(200, {"kind": "Status"})
    kube.delete_pod("ml", "digits-worker-0", force=True)
    kube.delete_pod("ml", "digits-worker-1")
    assert [url for _, url, _, _ in sent] == ["api/v1/namespaces/ml/pods/digits-worker-0?gracePeriodSeconds=0",
                                              "api/v1/namespaces/ml/pods/digits-worker-1"]


def test_a_missing_object_reads_as_none_and_a_write_to_it_is_no_error():
    kube, _ = kube_answering(404, {"kind": "Status", "code": 404, "message": 'pods "x" not found'})
    assert kube.get_service("ml", "digits") is None
    assert kube.patch_job_status("ml", "digits", {"phase": "Running"}) is None
    kube.delete_deployment("ml", "digits-v1")


@pytest.mark.parametrize("status, error", [(409, Conflict), (422, Refused)])
def test_an_answer_that_is_no_success_is_translated_with_the_api_servers_words(status, error):
    kube, _ = kube_answering(status, {"kind": "Status", "code": status, "message": "spec.replicas: Invalid value"})
    with pytest.raises(error, match="patch ModelDeployment ml/digits: .*spec.replicas: Invalid value"):
        kube.patch_model_deployment("ml", "digits", {"spec": {"replicas": -1}})


def test_the_operator_loads_none_of_the_clients_typed_api_classes_or_models():
    # In a fresh interpreter: this one's other tests may have loaded them. kopf itself loads the
    # models of an object's metadata (three), which are not counted.
    script = textwrap.dedent("""
        import json, sys
        from types import SimpleNamespace
        import kopf
        typed = lambda: {m for m in sys.modules if m.startswith(("kubernetes.client.api.", "kubernetes.client.models."))}
        kopfs = typed()
        import torchyard.handlers.kueue, torchyard.handlers.lifecycle, torchyard.handlers.modeldeployment
        import torchyard.handlers.nodes, torchyard.handlers.trainingjob
        from torchyard.kube.cache import CachedKube, WatchCache
        from torchyard.kube.kueue import FlavorStore, KueueApi, WorkloadStore
        from torchyard.kube.serving_cache import CachedServingKube, ServingCache

        def call_api(method, url, headers=None, body=None, post_params=None, **_):
            data = json.dumps({"metadata": {"name": "digits", "namespace": "ml", "resourceVersion": "1"},
                               "items": []}).encode()
            return SimpleNamespace(status=200, reason="OK", data=data, headers={}, read=lambda: data)

        jobs, serving = CachedKube(WatchCache()), CachedServingKube(ServingCache())
        for kube in (jobs, serving):
            kube.api.call_api = call_api
            kube.relist(None)
        KueueApi(jobs, WorkloadStore(), FlavorStore()).relist("ml")
        jobs.patch_job_status("ml", "digits", {"phase": "Running"})
        print(sorted(typed() - kopfs))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr
