"""The serving watch cache: what a ModelDeployment's pass observes without asking the API server."""

from __future__ import annotations

import json
from types import SimpleNamespace

from torchyard.kube.serving_cache import DEPLOYMENTS, MODEL_DEPLOYMENTS, PODS, SERVICES, CachedServingKube, ServingCache

MD_LABEL = "torchyard.dev/model-deployment"


def pod(name: str, rv: int, ready: bool, md: str = "digits", version: int = 1, **status) -> dict:
    return {"metadata": {"name": name, "namespace": "ml", "resourceVersion": str(rv),
                         "labels": {MD_LABEL: md, "torchyard.dev/version": str(version)}, "managedFields": [{}]},
            "spec": {"nodeName": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}], **status}}


def deployment(rv: int, replicas: int, **status) -> dict:
    return {"metadata": {"name": "digits-v1", "namespace": "ml", "resourceVersion": str(rv), "labels": {MD_LABEL: "digits"}},
            "spec": {"replicas": replicas}, "status": status}


def test_a_pod_turning_not_ready_is_a_change_and_a_status_field_no_pass_reads_is_not():
    cache = ServingCache()
    assert cache.seen(PODS, pod("a", 1, True))
    assert not cache.seen(PODS, pod("a", 2, True, hostIP="10.0.0.9"))
    assert cache.seen(PODS, pod("a", 3, False))
    kept = cache.items(PODS, "ml", f"{MD_LABEL}=digits")
    assert [p["status"]["conditions"][0]["status"] for p in kept] == ["False"]
    assert "managedFields" not in kept[0]["metadata"]


def test_a_deployments_status_never_costs_a_pass_but_its_scale_does():
    cache = ServingCache()
    assert cache.seen(DEPLOYMENTS, deployment(1, 1))
    assert not cache.seen(DEPLOYMENTS, deployment(2, 1, readyReplicas=1))
    assert cache.seen(DEPLOYMENTS, deployment(3, 0))


def test_an_older_version_never_replaces_a_newer_one():
    cache = ServingCache()
    cache.seen(PODS, pod("a", 5, False))
    assert not cache.seen(PODS, pod("a", 4, True))
    assert cache.get(PODS, "ml", "a")["metadata"]["resourceVersion"] == "5"


def test_a_listing_older_than_a_deletion_does_not_bring_the_object_back_and_a_listing_prunes():
    cache = ServingCache()
    cache.seen(PODS, pod("a", 1, True))
    cache.seen(PODS, pod("b", 2, True))
    cache.seen(PODS, pod("a", 3, True), deleted=True)
    cache.relist("ml", {PODS: ([pod("a", 1, True)], 2)})  # taken before the deletion
    assert cache.items(PODS, "ml") == []  # a is deleted, b is not in the listing
    cache.relist("ml", {PODS: ([pod("a", 9, True)], 10)})  # created again since
    assert [p["metadata"]["name"] for p in cache.items(PODS, "ml")] == ["a"]


def test_selectors_and_the_model_deployments_of_a_model():
    cache = ServingCache()
    cache.seen(PODS, pod("a", 1, True, md="digits"))
    cache.seen(PODS, pod("b", 2, True, md="letters"))
    assert [p["metadata"]["name"] for p in cache.items(PODS, "ml", f"{MD_LABEL}=letters")] == ["b"]
    assert len(cache.items(PODS, "ml", MD_LABEL)) == 2 and cache.items(PODS, "other", MD_LABEL) == []
    for name, model in (("digits", "mnist"), ("digits-2", "mnist"), ("letters", "emnist")):
        cache.seen(MODEL_DEPLOYMENTS, {"metadata": {"name": name, "namespace": "ml", "resourceVersion": "1"},
                                       "spec": {"modelName": model}})
    assert cache.deployments_of_model("ml", "mnist") == [("ml", "digits"), ("ml", "digits-2")]
    assert cache.keys(MODEL_DEPLOYMENTS) == [("ml", "digits"), ("ml", "digits-2"), ("ml", "letters")]


def switching_server(sent: list):
    """The API server's side of a selector switch: the patched Service, at a newer resourceVersion;
    no read (the Service is in the cache)."""

    def call_api(method, url, headers=None, body=None, post_params=None, **_):
        assert method == "PATCH", f"the Service is in the cache: no {method} {url}"
        sent.append((url.split("/api/v1/", 1)[1], headers["Content-Type"]))
        data = json.dumps({"metadata": {"name": "digits", "namespace": "ml", "resourceVersion": "7",
                                        "labels": {MD_LABEL: "digits"}}, **body}).encode()
        return SimpleNamespace(status=200, reason="OK", data=data, headers={}, read=lambda: data)

    return call_api


def test_a_switch_is_in_the_cache_at_once_and_the_watch_echo_of_an_older_view_does_not_undo_it():
    cache = ServingCache()
    old = {"metadata": {"name": "digits", "namespace": "ml", "resourceVersion": "5", "labels": {MD_LABEL: "digits"}},
           "spec": {"selector": {"torchyard.dev/version": "2"}}}
    cache.seen(SERVICES, old)
    kube, sent = CachedServingKube(cache), []
    kube.api.call_api = switching_server(sent)
    kube.patch_service("ml", "digits", {"spec": {"selector": {"torchyard.dev/version": "1"}}})
    assert sent == [("namespaces/ml/services/digits", "application/strategic-merge-patch+json")]
    assert kube.get_service("ml", "digits")["spec"]["selector"]["torchyard.dev/version"] == "1"
    assert not cache.seen(SERVICES, old)  # a watch event from before the switch, arriving late
    assert kube.get_service("ml", "digits")["spec"]["selector"]["torchyard.dev/version"] == "1"
