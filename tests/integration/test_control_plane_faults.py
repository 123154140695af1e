"""kube-apiserver and etcd restarted in place (same ports, same data, as an upgrade does) in the
middle of a job's life and of a serving switch.

Watches record every version the API server wrote of the job, its pods, the ModelDeployment and
the model's Service (harness/history.py resumes across the restart). Afterwards: the operator's
watches are back (a failure and a new job are acted on long before its 300 s safety resync), no
pod was made twice or lost, no status went backwards, the job completed, and the stable Service
only ever selected a ready version.
"""

from __future__ import annotations

import pytest

from harness.control_plane import ControlPlane
from harness.history import History
from harness.waits import wait_for
from serving_kit import (MODEL, model_deployment, model_version, patch_spec, set_ready, wait_ready,
                         wait_selected)
from test_operator_trainingjob import GROUP, PLURAL, VERSION, create, phase_is, status, trainingjob

COMPONENTS = ["kube-apiserver", "etcd"]
WORKERS = 4
# Within one attempt a job's phase only moves forward; a restart begins a new attempt.
RANK = {"": 0, "Pending": 1, "Restarting": 1, "Running": 2, "Succeeded": 3, "Failed": 3}
# Well under the operator's safety resync (300 s): what happens in time came from a watch.
WATCH_TIMEOUT = 60


@pytest.fixture
def control_plane(cluster):
    """The local control plane, supervised: a component that exits is started again. After the
    test every component is healthy, and the controllers are fresh, for the rest of the tier."""
    plane = ControlPlane(cluster.kubeconfig)
    with plane.supervised():
        yield plane
    plane.fresh_controllers()


def job_history(cluster, namespace) -> History:
    return History(cluster.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL).start()


def pod_history(cluster, namespace) -> History:
    return History(cluster.core.list_namespaced_pod, namespace, label_selector="torchyard.dev/job-name").start()


def counters(history: History, job: str) -> list[tuple[int, int, int, str]]:
    """(attempt, restarts, infrastructureRestarts, phase) of each version of the job's status."""
    seen = []
    for obj in history.versions(job):
        st = obj.get("status") or {}
        entry = (st.get("attempt", 0), st.get("restarts", 0), st.get("infrastructureRestarts", 0),
                 st.get("phase", ""))
        if not seen or seen[-1] != entry:
            seen.append(entry)
    return seen


def assert_never_backwards(seen: list[tuple[int, int, int, str]]) -> None:
    for before, after in zip(seen, seen[1:]):
        assert all(a >= b for a, b in zip(after[:3], before[:3])), f"a counter went back: {seen}"
        if after[0] == before[0]:
            assert RANK[after[3]] >= RANK[before[3]], f"the phase went back: {seen}"


def pods_by_slot(history: History, job: str) -> dict[str, dict[str, str]]:
    """Pod name -> {uid: attempt label} of every pod of the job that ever existed."""
    slots: dict[str, dict[str, str]] = {}
    for _, pod in history.events:
        meta = pod["metadata"]
        if meta["labels"].get("torchyard.dev/job-name") == job:
            slots.setdefault(meta["name"], {})[meta["uid"]] = meta["labels"]["torchyard.dev/attempt"]
    return slots


def finish(cluster, faults, namespace, job: str) -> None:
    for i in range(WORKERS):
        faults.terminate_container(namespace, f"{job}-worker-{i}", exit_code=0)
    wait_for(phase_is(cluster, namespace, job, "Succeeded"), f"{job} Succeeded", timeout=WATCH_TIMEOUT)


def running_attempt(cluster, namespace, job: str, attempt: int):
    return lambda: (st := status(cluster, namespace, job)).get("phase") == "Running" and st.get("attempt") == attempt


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_job_lives_through_a_control_plane_restart(cluster, crds, namespace, operator, faults, control_plane,
                                                  component):
    jobs, pods = job_history(cluster, namespace), pod_history(cluster, namespace)
    create(cluster, namespace, trainingjob("cp", worker={"replicas": WORKERS}))
    control_plane.restart(component)  # while its pods are being created
    wait_for(running_attempt(cluster, namespace, "cp", 0), "cp Running", timeout=WATCH_TIMEOUT)
    control_plane.restart(component)  # while it runs
    # At once, while the operator's watches still wait to reconnect: a pod deleted by hand, which
    # a watch that had to list afresh never shows as deleted.
    cluster.core.delete_namespaced_pod("cp-worker-2", namespace, grace_period_seconds=0)
    wait_for(running_attempt(cluster, namespace, "cp", 1), "cp restarted for its lost pod", timeout=WATCH_TIMEOUT)

    # The watches are back: a rank's failure is seen, and a job created now is served.
    faults.terminate_container(namespace, "cp-worker-1", exit_code=1)
    wait_for(running_attempt(cluster, namespace, "cp", 2), "cp restarted for its failure", timeout=WATCH_TIMEOUT)
    create(cluster, namespace, trainingjob("after", worker={"replicas": 1}))
    wait_for(phase_is(cluster, namespace, "after", "Running"), "a new job Running", timeout=WATCH_TIMEOUT)
    finish(cluster, faults, namespace, "cp")
    # The record lags the API server by an event: it must hold the end it judges.
    wait_for(lambda: counters(jobs, "cp")[-1][3] == "Succeeded", "the record showing cp Succeeded", timeout=30)
    jobs.stop(), pods.stop()

    st = status(cluster, namespace, "cp")
    assert (st["attempt"], st["restarts"], st["infrastructureRestarts"]) == (2, 1, 1), st
    seen = counters(jobs, "cp")
    assert_never_backwards(seen)
    assert seen[-1] == (2, 1, 1, "Succeeded"), seen
    # One pod per slot and attempt: none made twice, none replaced without a counted restart.
    slots = pods_by_slot(pods, "cp")
    assert sorted(slots) == [f"cp-worker-{i}" for i in range(WORKERS)], slots
    assert all(sorted(uids.values()) == ["0", "1", "2"] for uids in slots.values()), slots
    assert [len(uids) for uids in pods_by_slot(pods, "after").values()] == [1]


def selector_versions(history: History) -> list[int]:
    """Each version the model's Service selected, in order (repeats folded)."""
    seen: list[int] = []
    for obj in history.versions(MODEL):
        version = int(obj["spec"]["selector"]["torchyard.dev/version"])
        if not seen or seen[-1] != version:
            seen.append(version)
    return seen


def switches(history: History) -> list[tuple[int, int, str]]:
    """(from, to, reason) of each switch in the ModelDeployment's status history, as it grew."""
    lengths, entries = [], []
    for obj in history.versions(MODEL):
        entries = (obj.get("status") or {}).get("history") or []
        lengths.append(len(entries))
    assert lengths == sorted(lengths), f"the switch history shrank: {lengths}"
    return [(e.get("from"), e["to"], e["reason"]) for e in entries]


@pytest.mark.parametrize("component", COMPONENTS)
def test_serving_switches_live_through_a_control_plane_restart(cluster, crds, namespace, operator, faults,
                                                                control_plane, component):
    model_version(cluster, namespace, 1, 0.90)
    model_version(cluster, namespace, 2, 0.91)
    model_deployment(cluster, namespace)
    wait_selected(cluster, namespace, 2)
    wait_ready(cluster, namespace, 1)
    service = History(cluster.core.list_namespaced_service, namespace,
                      field_selector=f"metadata.name={MODEL}").start()
    deployment = History(cluster.custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                         "modeldeployments").start()

    set_ready(faults, cluster, namespace, 2, False)
    control_plane.restart(component)  # in the middle of the failover
    wait_selected(cluster, namespace, 1, timeout=WATCH_TIMEOUT)
    set_ready(faults, cluster, namespace, 2, True)
    wait_selected(cluster, namespace, 2, timeout=WATCH_TIMEOUT)
    patch_spec(cluster, namespace, {"activeVersion": 1})
    control_plane.restart(component)  # in the middle of the rollback to the warm v1
    wait_selected(cluster, namespace, 1, timeout=WATCH_TIMEOUT)
    # The switch's history entry is written just after the selector: the record must hold it.
    wait_for(lambda: switches(deployment)[-1:] == [(2, 1, "manual")] and selector_versions(service)[-1] == 1,
             "the record holding the rollback", timeout=30)
    service.stop(), deployment.stop()

    # Traffic moved only to a ready version (v1 ready throughout, v2 once ready again), never back
    # to v2 while it was not ready, and once for each cause.
    assert selector_versions(service) == [2, 1, 2, 1]
    assert switches(deployment)[-3:] == [(2, 1, "failover"), (1, 2, "failback"), (2, 1, "manual")]
