"""The serving events: what they queue, and what they leave alone."""

from __future__ import annotations

import asyncio

import kopf

from torchyard.handlers import modeldeployment as handlers
from torchyard.kube.serving_cache import ServingCache

MD_LABEL = "torchyard.dev/model-deployment"


class Recorder:
    def __init__(self):
        self.added, self.requests, self.forgotten = [], 0, []

    def add(self, key):
        self.added.append(key)

    def request(self):
        self.requests += 1

    def forget(self, namespace, name):
        self.forgotten.append((namespace, name))


def memo() -> kopf.Memo:
    recorder = Recorder()
    return kopf.Memo(serving_cache=ServingCache(), serving_queue=recorder, serving_relister=recorder,
                     serving=recorder)


def pod(rv: int, ready: bool, **status) -> dict:
    return {"metadata": {"name": "digits-v1-x", "namespace": "ml", "resourceVersion": str(rv),
                         "labels": {MD_LABEL: "digits"}},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}], **status}}


def md(name: str, model: str, rv: int = 1) -> dict:
    return {"metadata": {"name": name, "namespace": "ml", "resourceVersion": str(rv)}, "spec": {"modelName": model}}


def pod_event(m, kind, obj):
    asyncio.run(handlers.serving_pod_event(event={"type": kind, "object": obj}, namespace="ml",
                                           labels=obj["metadata"]["labels"], memo=m))


def test_a_pod_turning_not_ready_queues_its_model_deployment_and_a_change_no_pass_reads_does_not():
    m = memo()
    pod_event(m, "ADDED", pod(1, True))
    pod_event(m, "MODIFIED", pod(2, True, hostIP="10.0.0.1"))
    pod_event(m, "MODIFIED", pod(3, False))
    assert m.serving_queue.added == [("ml", "digits"), ("ml", "digits")]


def test_a_listing_afresh_queues_and_asks_the_cache_to_list_afresh_too():
    m = memo()
    pod_event(m, None, pod(1, True))
    pod_event(m, None, pod(1, True))
    assert m.serving_queue.added == [("ml", "digits")] * 2 and m.serving_relister.requests == 2


def test_a_model_version_queues_every_model_deployment_of_its_model():
    m = memo()
    for name, model in (("digits", "mnist"), ("digits-b", "mnist"), ("letters", "emnist")):
        m.serving_cache.seen("modeldeployments", md(name, model))
    mv = {"metadata": {"name": "mnist-v2", "namespace": "ml", "resourceVersion": "5"}, "spec": {"modelName": "mnist"}}
    asyncio.run(handlers.modelversion_event(event={"type": "ADDED", "object": mv}, namespace="ml", body=mv, memo=m))
    assert m.serving_queue.added == [("ml", "digits"), ("ml", "digits-b")]


def test_a_deleted_model_deployment_is_forgotten_and_another_of_its_model_may_take_over():
    m = memo()
    for name in ("digits", "digits-b"):
        asyncio.run(handlers.modeldeployment_event(event={"type": "ADDED", "object": md(name, "mnist")},
                                                   namespace="ml", name=name, body=md(name, "mnist"), memo=m))
    m.serving_queue.added.clear()
    gone = md("digits", "mnist", rv=2)
    asyncio.run(handlers.modeldeployment_event(event={"type": "DELETED", "object": gone}, namespace="ml",
                                               name="digits", body=gone, memo=m))
    assert m.serving.forgotten == [("ml", "digits")] and m.serving_queue.added == [("ml", "digits-b")]
