"""TrainingJobs queued by the real Kueue controller (docs/kueue.md).

Kueue v0.17 runs out of cluster against the local control plane (harness/kueue.py), the operator
with `--kueue` and the chart's RBAC for it. Each test gives its namespace its own ResourceFlavor,
ClusterQueue and LocalQueue; quota is counted in CPUs, one per worker pod, so a ClusterQueue of
two CPUs holds exactly one two-worker job. kwok runs the admitted pods; a test ends a job by
making its containers exit (harness/faults.py).
"""

from __future__ import annotations

import time

import pytest

from harness import kueue as kueue_harness
from harness.operator import install_rbac
from harness.waits import read_or_none, wait_for

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"
KUEUE, KUEUE_VERSION = kueue_harness.GROUP, kueue_harness.VERSION
QUEUE_LABEL, PRIORITY_LABEL = "kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class"
FLAVOR_NODE = "kwok-cpu-1"
FLAVOR_TOLERATION = {"key": "torchyard.dev/kueue-flavor", "operator": "Exists", "effect": "NoSchedule"}
WAIT = 60


@pytest.fixture(scope="module")
def kueue(cluster, crds, operator_rbac, tmp_path_factory):
    """The real Kueue controller for this module's tests, and the chart's RBAC with Kueue on."""
    install_rbac(cluster, "kueue.enabled=true")
    controller = kueue_harness.KueueController(cluster, tmp_path_factory.mktemp("kueue"))
    try:
        controller.start()
    except Exception:
        controller.stop()
        raise
    yield controller
    controller.stop()


@pytest.fixture
def queues(cluster, kueue, namespace, request):
    """A ResourceFlavor pinned to one kwok node, a ClusterQueue of 2 CPUs that preempts lower
    priorities, and the LocalQueue `team-a` in the test's namespace; removed afterwards."""
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {kueue_harness.NAMESPACE_LABEL: "true"}}})
    name = namespace[-20:].strip("-")
    objects = [
        ("resourceflavors", None, {"metadata": {"name": name}, "spec": {
            "nodeLabels": {"kubernetes.io/hostname": FLAVOR_NODE}, "tolerations": [FLAVOR_TOLERATION]}}),
        ("clusterqueues", None, {"metadata": {"name": name}, "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
                {"name": name, "resources": [{"name": "cpu", "nominalQuota": "2"}]}]}]}}),
        ("localqueues", namespace, {"metadata": {"name": "team-a"}, "spec": {"clusterQueue": name}}),
        ("workloadpriorityclasses", None, {"metadata": {"name": f"{name}-low"}, "value": 100}),
        ("workloadpriorityclasses", None, {"metadata": {"name": f"{name}-high"}, "value": 1000}),
    ]
    for plural, ns, body in objects:
        create_kueue(cluster, plural, ns, body)
    wait_for(lambda: condition(get_kueue(cluster, "clusterqueues", None, name), "Active") == "True",
             f"ClusterQueue {name} Active", WAIT)
    yield name
    # The jobs first (their Workloads go with them), so that Kueue lets its queues go too.
    cluster.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    wait_for(lambda: not cluster.custom.list_namespaced_custom_object(KUEUE, KUEUE_VERSION, namespace,
                                                                      "workloads")["items"],
             "the test's Workloads gone", WAIT)
    for plural, ns, body in reversed(objects):
        delete_kueue(cluster, plural, ns, body["metadata"]["name"])
    for plural, ns, body in objects:
        gone_or_released(cluster, plural, ns, body["metadata"]["name"])


@pytest.fixture
def kueue_operator(operator_factory, namespace, kueue):
    return operator_factory(namespace, "--kueue")


def create_kueue(cluster, plural, namespace, body):
    body = {"apiVersion": f"{KUEUE}/{KUEUE_VERSION}", "kind": KINDS[plural], **body}
    if namespace:
        return cluster.custom.create_namespaced_custom_object(KUEUE, KUEUE_VERSION, namespace, plural, body)
    return cluster.custom.create_cluster_custom_object(KUEUE, KUEUE_VERSION, plural, body)


def get_kueue(cluster, plural, namespace, name):
    if namespace:
        return read_or_none(lambda: cluster.custom.get_namespaced_custom_object(
            KUEUE, KUEUE_VERSION, namespace, plural, name)) or {}
    return read_or_none(lambda: cluster.custom.get_cluster_custom_object(KUEUE, KUEUE_VERSION, plural, name)) or {}


def delete_kueue(cluster, plural, namespace, name):
    if namespace:
        read_or_none(lambda: cluster.custom.delete_namespaced_custom_object(KUEUE, KUEUE_VERSION, namespace,
                                                                            plural, name))
    else:
        read_or_none(lambda: cluster.custom.delete_cluster_custom_object(KUEUE, KUEUE_VERSION, plural, name))


def gone_or_released(cluster, plural, namespace, name):
    """Kueue drops its in-use finalizer once nothing uses the object; should it not within the
    wait, the finalizer is dropped here so that no object is left Terminating on the cluster."""
    try:
        wait_for(lambda: not get_kueue(cluster, plural, namespace, name), f"{plural}/{name} deleted", 30)
    except AssertionError:
        patch = {"metadata": {"finalizers": None}}
        if namespace:
            read_or_none(lambda: cluster.custom.patch_namespaced_custom_object(
                KUEUE, KUEUE_VERSION, namespace, plural, name, patch))
        else:
            read_or_none(lambda: cluster.custom.patch_cluster_custom_object(KUEUE, KUEUE_VERSION, plural, name, patch))
        raise


KINDS = {"resourceflavors": "ResourceFlavor", "clusterqueues": "ClusterQueue", "localqueues": "LocalQueue",
         "workloadpriorityclasses": "WorkloadPriorityClass"}


def condition(obj: dict, kind: str) -> str | None:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def submit(cluster, namespace, name, priority=None):
    labels = {QUEUE_LABEL: "team-a", **({PRIORITY_LABEL: priority} if priority else {})}
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
           "metadata": {"name": name, "labels": labels},
           "spec": {"strategy": "AllReduce",
                    "worker": {"replicas": 2, "resources": {"requests": {"cpu": "1"}}},
                    "runPolicy": {"backoffLimit": 0},
                    "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)


def job_status(cluster, namespace, name) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


def phase_is(cluster, namespace, name, phase):
    return lambda: job_status(cluster, namespace, name).get("phase") == phase


def live_pods(cluster, namespace, job):
    items = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={job}").items
    return [p for p in items if p.metadata.deletion_timestamp is None]


def workload(cluster, namespace, job) -> dict:
    return get_kueue(cluster, "workloads", namespace, f"trainingjob-{job}")


def usage(cluster, name) -> tuple[dict, int]:
    """What the ClusterQueue counts as used (by resource) and how many workloads it admitted."""
    status = get_kueue(cluster, "clusterqueues", None, name).get("status") or {}
    used = {r["name"]: r["total"] for f in status.get("flavorsUsage") or [] for r in f.get("resources") or []}
    return used, status.get("admittedWorkloads", 0)


def finish(cluster, faults, namespace, job):
    for pod in live_pods(cluster, namespace, job):
        faults.terminate_container(namespace, pod.metadata.name, 0)
    wait_for(phase_is(cluster, namespace, job, "Succeeded"), f"{job} Succeeded", WAIT)


def hold_no_pods(cluster, namespace, job, seconds=6):
    """While Kueue holds the job, the operator makes none of its pods (watched for a while)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert live_pods(cluster, namespace, job) == [], f"{job} has pods before Kueue admitted it"
        time.sleep(0.5)


def test_a_queued_job_is_admitted_as_one_unit_on_its_flavor_and_the_next_waits_for_the_quota(
        cluster, queues, kueue_operator, namespace, faults):
    flavor = get_kueue(cluster, "resourceflavors", None, queues)
    assert "kueue.x-k8s.io/resource-in-use" in flavor["metadata"].get("finalizers", []), \
        "Kueue's mutating webhook, called by the API server on loopback, marks the flavor"
    submit(cluster, namespace, "first")
    wait_for(phase_is(cluster, namespace, "first", "Running"), "the admitted job Running", WAIT)
    wl = workload(cluster, namespace, "first")
    assert condition(wl, "Admitted") == "True"
    assert [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [("worker", 2)]
    assert wl["metadata"]["ownerReferences"][0]["name"] == "first"
    # Kueue writes the ClusterQueue's status a little after admission.
    wait_for(lambda: usage(cluster, queues) == ({"cpu": "2"}, 1),
             "the ClusterQueue to count both pods' CPUs, as one admitted workload", WAIT)

    pods = live_pods(cluster, namespace, "first")
    assert {p.spec.node_name for p in pods} == {FLAVOR_NODE}, "pods run where the flavor's node labels say"
    for pod in pods:
        assert pod.spec.node_selector["kubernetes.io/hostname"] == FLAVOR_NODE
        assert any(t.key == FLAVOR_TOLERATION["key"] for t in pod.spec.tolerations or [])

    submit(cluster, namespace, "second")
    wait_for(lambda: workload(cluster, namespace, "second").get("status", {}).get("conditions"),
             "Kueue to look at the second job's Workload", WAIT)
    assert condition(workload(cluster, namespace, "second"), "QuotaReserved") != "True"
    assert job_status(cluster, namespace, "second")["phase"] == "Suspended"
    hold_no_pods(cluster, namespace, "second")
    suspended = next(c for c in job_status(cluster, namespace, "second")["conditions"] if c["type"] == "Suspended")
    assert suspended["reason"] == "WaitingForAdmission" and "team-a" in suspended["message"]

    finish(cluster, faults, namespace, "first")
    wait_for(lambda: condition(workload(cluster, namespace, "first"), "Finished") == "True",
             "the finished job's Workload Finished", WAIT)
    wait_for(phase_is(cluster, namespace, "second", "Running"), "the second job admitted and Running", WAIT)
    assert len(live_pods(cluster, namespace, "second")) == 2


def test_a_higher_priority_job_preempts_a_running_one_which_resumes_uncharged(
        cluster, queues, kueue_operator, namespace, faults):
    submit(cluster, namespace, "low", priority=f"{queues}-low")
    wait_for(phase_is(cluster, namespace, "low", "Running"), "the low-priority job Running", WAIT)
    first_pods = {p.metadata.uid for p in live_pods(cluster, namespace, "low")}

    submit(cluster, namespace, "high", priority=f"{queues}-high")
    wait_for(phase_is(cluster, namespace, "low", "Suspended"), "the low-priority job preempted", WAIT)
    wait_for(lambda: live_pods(cluster, namespace, "low") == [], "the preempted job's pods deleted", WAIT)
    wait_for(phase_is(cluster, namespace, "high", "Running"), "the high-priority job Running", WAIT)
    st = job_status(cluster, namespace, "low")
    suspended = next(c for c in st["conditions"] if c["type"] == "Suspended")
    assert suspended["reason"] == "EvictedPreempted"
    assert st.get("restarts", 0) == 0 and st.get("infrastructureRestarts", 0) == 0
    assert condition(workload(cluster, namespace, "low"), "QuotaReserved") != "True", "its quota was given back"

    finish(cluster, faults, namespace, "high")
    wait_for(phase_is(cluster, namespace, "low", "Running"), "the preempted job readmitted and Running", WAIT)
    again = live_pods(cluster, namespace, "low")
    assert len(again) == 2 and not {p.metadata.uid for p in again} & first_pods, "new pods, a new attempt"
    st = job_status(cluster, namespace, "low")
    assert st.get("restarts", 0) == 0 and st.get("infrastructureRestarts", 0) == 0, \
        "a preemption is charged to nobody's backoffLimit (it is 0 here)"
