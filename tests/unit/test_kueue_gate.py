"""A queued job's Workload and what the operator does about it, as a table of Workload states
(reconcile/kueue.py, builders/workload.py): Kueue's own job integrations are the reference."""

from __future__ import annotations

import copy

import pytest

from jobs import ALLREDUCE_CPU, ALLREDUCE_GPU, NOW, PARAMETER_SERVER, UID, job
from torchyard.builders.workload import build_workload, pod_sets
from torchyard.reconcile import kueue
from torchyard.reconcile.decide import Observed, decide
from torchyard.settings import Settings

SETTINGS = Settings()
LATER = "2026-01-01T11:00:00Z"


def queued(base=ALLREDUCE_CPU, **labels):
    obj = copy.deepcopy(base)
    obj["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a", **labels}
    return obj


def parsed(obj):
    return job(obj)


def workload(tj, *conditions, admission=None, uid=UID, counts=None):
    wl = build_workload(tj, SETTINGS)
    wl["metadata"].update(uid="wl-uid", resourceVersion="7", generation=1)
    wl["metadata"]["ownerReferences"][0]["uid"] = uid
    if counts is not None:
        for pod_set, count in zip(wl["spec"]["podSets"], counts):
            pod_set["count"] = count
    wl["status"] = {"conditions": [{"type": t, "status": s, "reason": r, "message": m,
                                    "lastTransitionTime": LATER} for t, s, r, m in conditions]}
    if admission is not None:
        wl["status"]["admission"] = {"clusterQueue": "cq", "podSetAssignments": admission}
    return wl


RESERVED = ("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq")
ADMITTED = ("Admitted", "True", "Admitted", "The workload is admitted")
PREEMPTED = ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x)")
ASSIGNED = [{"name": "worker", "flavors": {"cpu": "on-demand", "memory": "on-demand"}, "count": 2}]


def gate(tj, wl, phase="", live=0):
    return kueue.gate(tj, phase, wl, pod_sets(tj, SETTINGS), live, NOW)


def test_the_workload_has_one_pod_set_per_role_with_the_pods_requests_and_the_job_as_owner():
    tj = parsed(queued(ALLREDUCE_GPU, **{"kueue.x-k8s.io/priority-class": "high"}))
    wl = build_workload(tj, SETTINGS, priority=1000)
    assert wl["metadata"]["name"] == "trainingjob-resnet"
    assert wl["metadata"]["ownerReferences"][0]["uid"] == UID
    assert wl["spec"]["queueName"] == "team-a"
    assert wl["spec"]["priority"] == 1000
    assert wl["spec"]["priorityClassRef"] == {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass",
                                              "name": "high"}
    [worker] = wl["spec"]["podSets"]
    assert worker["name"] == "worker" and worker["count"] == 2
    resources = worker["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "8", "memory": "32Gi"}
    assert resources["limits"] == {"nvidia.com/gpu": "4"}
    assert worker["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_a_parameter_server_job_counts_both_roles_in_rank_order():
    tj = parsed(queued(PARAMETER_SERVER))
    assert [(p["name"], p["count"]) for p in pod_sets(tj, SETTINGS)] == [("ps", 2), ("worker", 3)]


@pytest.mark.parametrize("conditions, admission, live, hold, reason, patched", [
    pytest.param((), None, 0, True, kueue.WAITING, False, id="queued"),
    pytest.param((RESERVED,), ASSIGNED, 0, True, kueue.WAITING, False, id="quota-reserved-checks-pending"),
    pytest.param((RESERVED, ADMITTED), ASSIGNED, 0, False, "", False, id="admitted"),
    pytest.param((RESERVED, ADMITTED, PREEMPTED), ASSIGNED, 2, True, "EvictedPreempted", False,
                 id="preempted-pods-still-there"),
    pytest.param((RESERVED, ADMITTED, PREEMPTED), ASSIGNED, 0, True, "EvictedPreempted", True,
                 id="preempted-pods-gone-quota-given-back"),
    pytest.param((("QuotaReserved", "False", "Pending", "p"), PREEMPTED), None, 0, True, "EvictedPreempted", False,
                 id="preempted-already-given-back"),
])
def test_the_gate_follows_the_workload(conditions, admission, live, hold, reason, patched):
    tj = parsed(queued())
    decision = gate(tj, workload(tj, *conditions, admission=admission), live=live)
    assert (decision.hold, decision.reason, decision.workload_status is not None) == (hold, reason, patched)
    assert not decision.create and not decision.delete


def test_no_workload_yet_holds_the_job_and_creates_one():
    decision = gate(parsed(queued()), None)
    assert decision.hold and decision.create


def test_giving_back_the_quota_is_what_kueue_writes_after_eviction():
    tj = parsed(queued())
    status = gate(tj, workload(tj, RESERVED, ADMITTED, PREEMPTED, admission=ASSIGNED)).workload_status
    assert status["admission"] is None
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (by_type["QuotaReserved"]["status"], by_type["QuotaReserved"]["reason"]) == ("False", "Pending")
    assert by_type["Admitted"]["status"] == "False"
    assert (by_type["Requeued"]["status"], by_type["Requeued"]["reason"]) == ("True", "Preempted")
    assert by_type["Evicted"] == {"type": "Evicted", "status": "True", "reason": "Preempted",
                                  "message": PREEMPTED[3], "lastTransitionTime": LATER}


def test_admitted_flavors_are_read_per_pod_set():
    tj = parsed(queued())
    decision = gate(tj, workload(tj, RESERVED, ADMITTED, admission=ASSIGNED))
    assert decision.flavors == {"worker": ("on-demand",)}


def test_a_workload_of_an_earlier_job_by_the_same_name_is_not_used():
    tj = parsed(queued())
    decision = gate(tj, workload(tj, RESERVED, ADMITTED, admission=ASSIGNED, uid="an-older-job"))
    assert decision.hold and not decision.create


def test_a_spec_change_before_admission_makes_the_workload_again_but_never_after():
    tj = parsed(queued())
    assert gate(tj, workload(tj, counts=[5])).delete
    assert not gate(tj, workload(tj, RESERVED, ADMITTED, admission=ASSIGNED, counts=[5])).delete


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_job_marks_its_workload_finished_once(phase):
    tj = parsed(queued())
    decision = gate(tj, workload(tj, RESERVED, ADMITTED, admission=ASSIGNED), phase=phase)
    finished = [c for c in decision.workload_status["conditions"] if c["type"] == "Finished"]
    assert finished[0]["status"] == "True" and finished[0]["reason"] == phase
    again = workload(tj, RESERVED, ADMITTED, ("Finished", "True", phase, "done"), admission=ASSIGNED)
    assert gate(tj, again, phase=phase).workload_status is None


def test_a_held_job_is_suspended_with_the_reason_and_its_pods_go():
    tj = parsed(queued())
    decision = gate(tj, workload(tj, RESERVED, ADMITTED, PREEMPTED, admission=ASSIGNED), live=2)
    plan = decide(kueue.held(tj), {"phase": "Running", "restarts": 0, "attempt": 0, "conditions": []},
                  Observed(pods=(), service_exists=True, now=NOW))
    kueue.explain_hold(plan.status, decision, NOW)
    suspended = next(c for c in plan.status["conditions"] if c["type"] == "Suspended")
    assert (suspended["status"], suspended["reason"]) == ("True", "EvictedPreempted")
    assert plan.status["message"].startswith("evicted by Kueue: Preempted")
    assert plan.status["restarts"] == 0 and not plan.create_pods


def test_a_job_its_user_suspended_says_so_even_when_queued():
    obj = queued()
    obj["spec"]["runPolicy"] = {"suspend": True}
    decision = gate(parsed(obj), None)
    assert decision.hold and decision.create and decision.reason == ""


def test_admitted_flavors_add_node_labels_and_tolerations_to_the_role():
    flavor = {"metadata": {"name": "spot"}, "spec": {
        "nodeLabels": {"pool": "spot"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]}}
    cpu = kueue.placed(parsed(queued()), {"worker": [flavor]}, SETTINGS)
    assert cpu.spec.worker.node_selector == {"pool": "spot"}
    assert cpu.spec.worker.tolerations == ({"key": "spot", "operator": "Exists", "effect": "NoSchedule"},)
    gpu = kueue.placed(parsed(queued(ALLREDUCE_GPU)), {"worker": [flavor]}, SETTINGS)
    assert gpu.spec.worker.node_selector == {"nvidia.com/gpu.present": "true", "pool": "spot"}
    assert len(gpu.spec.worker.tolerations) == 2, "the GPU default toleration is kept"
