"""Gang mode: the Workload and pod link the adapter builds, the spec field, and the decisions
that depend on it (reconcile/decide.py)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
from kubernetes import client

from jobs import ALLREDUCE_CPU, NOW, PARAMETER_SERVER, UID, job, pod
from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import parse_training_job
from torchyard.builders import gang
from torchyard.builders.pods import build_pods
from torchyard.kube.client import Kube, Refused
from torchyard.reconcile.decide import GANG_NOT_SCHEDULABLE, GANG_UNAVAILABLE, Observed, decide
from torchyard.settings import Settings

SCHEDULER_SAYS = "0/4 nodes are available: 2 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."


def observe(*pods, served=True):
    return Observed(pods=tuple(pods), service_exists=True, now=NOW, gang_api_served=served)


def running_condition(plan) -> dict:
    return next(c for c in plan.status["conditions"] if c["type"] == "Running")


def test_workload_is_one_gang_of_every_pod_owned_by_the_job():
    workload = gang.build_workload(job(PARAMETER_SERVER, gangScheduling=True))
    assert workload == {
        "apiVersion": "scheduling.k8s.io/v1alpha1",
        "kind": "Workload",
        "metadata": {
            "name": "ps",
            "namespace": "ml",
            "labels": {"torchyard.dev/job-name": "ps", "app.kubernetes.io/managed-by": "torchyard"},
            "ownerReferences": [{"apiVersion": "torchyard.dev/v1alpha1", "kind": "TrainingJob", "name": "ps",
                                 "uid": UID, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "controllerRef": {"apiGroup": "torchyard.dev", "kind": "TrainingJob", "name": "ps"},
            # 2 parameter servers and 3 workers: the gang is all five, placed together or not at all.
            "podGroups": [{"name": "gang", "policy": {"gang": {"minCount": 5}}}],
        },
    }


def test_every_pod_of_a_gang_job_names_the_workload_and_its_group():
    pods = build_pods(job(PARAMETER_SERVER, gangScheduling=True), 0, Settings())
    assert [p["spec"]["workloadRef"] for p in pods] == [{"name": "ps", "podGroup": "gang"}] * 5


def test_pods_of_a_job_without_gang_mode_name_no_workload():
    assert all("workloadRef" not in p["spec"] for p in build_pods(job(PARAMETER_SERVER), 0, Settings()))


def test_gang_mode_is_off_unless_asked_for():
    assert job().spec.run_policy.gang_scheduling is False
    assert job(gangScheduling=True).spec.run_policy.gang_scheduling is True


def test_a_gang_mode_that_is_not_a_boolean_is_refused_naming_the_field():
    obj = copy.deepcopy(ALLREDUCE_CPU)
    obj["spec"]["runPolicy"] = {"gangScheduling": "yes"}
    with pytest.raises(SpecError) as err:
        parse_training_job(obj)
    assert err.value.field == "spec.runPolicy.gangScheduling"


@pytest.mark.parametrize("change, same", [
    (lambda w: w, True),
    (lambda w: w["spec"]["podGroups"][0]["policy"]["gang"].update(minCount=3), False),  # replicas changed
    (lambda w: w["spec"].update(podGroups=[{"name": "gang", "policy": {"basic": {}}}]), False),
])
def test_a_workload_describing_another_gang_is_not_the_same(change, same):
    desired = gang.build_workload(job(gangScheduling=True))
    existing = copy.deepcopy(desired)
    change(existing)
    assert gang.same_gang(existing, desired) is same


def test_a_workload_of_an_older_job_of_the_same_name_is_not_owned():
    workload = gang.build_workload(job(gangScheduling=True))
    assert gang.owned_by(workload, job(gangScheduling=True))
    older = copy.deepcopy(workload)
    older["metadata"]["ownerReferences"][0]["uid"] = "another-uid"
    assert not gang.owned_by(older, job(gangScheduling=True))


def test_a_gang_job_creates_its_workload_with_its_pods():
    plan = decide(job(gangScheduling=True), {}, observe())
    assert plan.create_workload
    assert plan.create_pods == [("worker", 0), ("worker", 1)]


def test_no_workload_when_no_pod_is_created_or_gang_mode_is_off():
    assert not decide(job(gangScheduling=True), {}, observe(pod("worker", 0), pod("worker", 1))).create_workload
    assert not decide(job(), {}, observe()).create_workload


def test_a_gang_job_on_a_cluster_without_the_gang_api_waits_and_says_what_is_missing():
    plan = decide(job(gangScheduling=True), {}, observe(served=False))
    assert plan.create_pods == [] and not plan.create_workload
    assert plan.status["phase"] == "Pending"
    running = running_condition(plan)
    assert (running["status"], running["reason"]) == ("False", GANG_UNAVAILABLE)
    assert "scheduling.k8s.io/v1alpha1" in running["message"] and "GangScheduling" in running["message"]
    assert plan.events == [("Warning", GANG_UNAVAILABLE, running["message"])]


def test_a_gang_that_does_not_fit_says_so_with_the_schedulers_message():
    waiting, blocked = pod("worker", 0, "Pending"), pod("worker", 1, "Pending", unschedulable=SCHEDULER_SAYS)
    plan = decide(job(gangScheduling=True), {}, observe(waiting, blocked))
    running = running_condition(plan)
    assert (running["status"], running["reason"]) == ("False", GANG_NOT_SCHEDULABLE)
    assert "digits-worker-1 does not fit: " + SCHEDULER_SAYS in running["message"]
    assert "2 pods of the gang together or not at all" in running["message"]


def test_without_gang_mode_an_unplaced_pod_is_plain_unschedulable():
    plan = decide(job(), {}, observe(pod("worker", 0), pod("worker", 1, "Pending", unschedulable=SCHEDULER_SAYS)))
    assert running_condition(plan)["reason"] == "Unschedulable"


class Discovery:
    """The one discovery call `Kube.serves` makes, answered (status, APIResourceList) from a list."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, method, url, headers=None, body=None, post_params=None, **_):
        self.calls.append(f"{method} {url.split('://')[-1].split('/', 1)[-1]}")
        status, answer = self.answers.pop(0)
        data = json.dumps(answer).encode()
        return SimpleNamespace(status=status, reason="answer", data=data, headers={}, read=lambda: data)


def kube_with(discovery) -> Kube:
    kube = Kube(client.ApiClient())
    kube.api.call_api = discovery
    return kube


def listing(*names):
    return 200, {"kind": "APIResourceList", "resources": [{"name": n} for n in names]}


@pytest.mark.parametrize("answer, served", [
    ((404, {"kind": "Status", "code": 404}), False),  # the group version is not served at all
    (listing("priorityclasses"), False),  # served, but without workloads
    (listing("workloads"), True),
])
def test_the_gang_api_is_served_only_when_discovery_lists_workloads(answer, served):
    kube = kube_with(Discovery(answer))
    assert kube.serves(gang.GROUP, gang.VERSION, gang.PLURAL) is served


def test_discovery_is_asked_once_for_many_passes():
    discovery = Discovery(listing("workloads"))
    kube = kube_with(discovery)
    assert all(kube.serves(gang.GROUP, gang.VERSION, gang.PLURAL) for _ in range(3))
    assert discovery.calls == ["GET apis/scheduling.k8s.io/v1alpha1"]


def sent_pods(status: int, body: bytes = b"{}"):
    """A Kube whose requests are recorded and answered with `status`."""
    kube, sent = Kube(client.ApiClient()), []

    def call_api(method, url, headers=None, body_=None, post_params=None, **_):
        sent.append((method, url, body_))
        return SimpleNamespace(status=status, reason="answer", data=body, headers={}, read=lambda: body)

    kube.api.call_api = call_api
    return kube, sent


def test_a_gang_pod_is_sent_with_its_workload_ref_although_the_clients_models_lack_it():
    pod = build_pods(job(gangScheduling=True), 0, Settings())[0]
    kube, sent = sent_pods(201)
    kube.create_pod(pod)
    [(method, url, body)] = sent
    assert (method, url.split("://")[-1].split("/", 1)[-1]) == ("POST", "api/v1/namespaces/ml/pods")
    assert body["spec"]["workloadRef"] == {"name": "digits", "podGroup": "gang"}


def test_a_refused_gang_pod_is_refused_with_the_api_servers_words():
    kube, _ = sent_pods(422, b'{"message": "spec.workloadRef.podGroup: Invalid value"}')
    with pytest.raises(Refused, match="spec.workloadRef.podGroup: Invalid value"):
        kube.create_pod(build_pods(job(gangScheduling=True), 0, Settings())[0])
