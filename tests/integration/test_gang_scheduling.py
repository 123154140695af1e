"""Gang mode against the real kube-scheduler: a job's pods are bound all together or not at all.

Each test gets two kwok nodes of its own (tainted, so no other pod lands there) with room for one
training pod each. Three pods then make a gang that does not fit, two one that does.
"""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from harness.faults import MANAGED_LABEL
from harness.waits import read_or_none, wait_for
from test_operator_trainingjob import condition, create, pods, status, trainingjob

WORKLOADS = ("scheduling.k8s.io", "v1alpha1", "workloads")
NODE_KEY = "torchyard.dev/gang-test"
NODES = 2
POD_CPU = "3"  # a node holds one such pod (capacity 4)


def node_manifest(name: str, group: str) -> dict:
    capacity = {"cpu": "4", "memory": "16Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
                                    MANAGED_LABEL: "true", NODE_KEY: group},
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"taints": [{"key": NODE_KEY, "value": group, "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity}}


def ready(node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


@pytest.fixture
def gang_api(cluster):
    """The cluster must serve the gang API: a cluster started before it was turned on lacks it."""
    try:
        resources = cluster.custom.get_api_resources(*WORKLOADS[:2]).resources
    except ApiException as err:
        resources = [] if err.status == 404 else None
        if resources is None:
            raise
    if not any(r.name == WORKLOADS[2] for r in resources):
        pytest.fail("the cluster does not serve scheduling.k8s.io/v1alpha1 workloads; a local control plane "
                    "started before hack/localcluster/components.py turned gang scheduling on needs a restart "
                    "(make cluster-down; make cluster-up)", pytrace=False)


@pytest.fixture
def gang_nodes(cluster, namespace):
    """Two Ready kwok nodes that only this test's pods tolerate; the group name its pods select."""
    if not cluster.local:
        pytest.fail("gang tests need the local control plane's kwok nodes (make cluster-up)", pytrace=False)
    names = [f"kwok-{namespace}-{i}"[:63] for i in range(NODES)]
    for name in names:
        cluster.core.create_node(node_manifest(name, namespace))
    try:
        wait_for(lambda: all(ready(cluster.core.read_node(n)) for n in names), "the gang test's nodes Ready", timeout=60)
        yield namespace
    finally:
        for name in names:
            read_or_none(lambda name=name: cluster.core.delete_node(name))


def gang_job(name: str, group: str, replicas: int, gang: bool) -> dict:
    worker = {"replicas": replicas, "resources": {"requests": {"cpu": POD_CPU}},
              "nodeSelector": {NODE_KEY: group},
              "tolerations": [{"key": NODE_KEY, "operator": "Equal", "value": group, "effect": "NoSchedule"}]}
    return trainingjob(name, worker=worker, runPolicy={"gangScheduling": gang})


def unschedulable(pod) -> bool:
    return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
               for c in (pod.status.conditions or []))


def running_reason(cluster, namespace, name) -> str:
    return condition(status(cluster, namespace, name), "Running").get("reason", "")


def workload(cluster, namespace, name):
    group, version, plural = WORKLOADS
    return read_or_none(lambda: cluster.custom.get_namespaced_custom_object(group, version, namespace, plural, name))


def test_a_gang_that_does_not_fit_binds_no_pod_and_says_why(cluster, crds, namespace, gang_api, gang_nodes, operator):
    create(cluster, namespace, gang_job("big", gang_nodes, replicas=3, gang=True))
    wait_for(lambda: running_reason(cluster, namespace, "big") == "GangNotSchedulable", "reason GangNotSchedulable")

    found = pods(cluster, namespace, "big")
    assert sorted(found) == ["big-worker-0", "big-worker-1", "big-worker-2"]
    # Two of the three would fit, one per node; the scheduler binds neither while the third cannot.
    assert {n: p.spec.node_name for n, p in found.items()} == {n: None for n in found}
    running = condition(status(cluster, namespace, "big"), "Running")
    assert running["status"] == "False"
    assert "does not fit" in running["message"] and "Insufficient cpu" in running["message"]
    assert status(cluster, namespace, "big")["phase"] == "Pending"

    gang = workload(cluster, namespace, "big")
    assert gang["spec"]["podGroups"] == [{"name": "gang", "policy": {"gang": {"minCount": 3}}}]
    assert gang["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"


def test_a_gang_that_fits_is_bound_whole(cluster, crds, namespace, gang_api, gang_nodes, operator):
    create(cluster, namespace, gang_job("fits", gang_nodes, replicas=2, gang=True))
    wait_for(lambda: status(cluster, namespace, "fits").get("phase") == "Running", "job Running")

    nodes = {p.spec.node_name for p in pods(cluster, namespace, "fits").values()}
    assert nodes == {f"kwok-{namespace}-{i}"[:63] for i in range(NODES)}
    assert workload(cluster, namespace, "fits")["spec"]["podGroups"][0]["policy"]["gang"]["minCount"] == 2


def test_without_gang_mode_part_of_the_gang_is_bound(cluster, crds, namespace, gang_api, gang_nodes, operator):
    create(cluster, namespace, gang_job("part", gang_nodes, replicas=3, gang=False))
    wait_for(lambda: running_reason(cluster, namespace, "part") == "Unschedulable", "reason Unschedulable")

    found = pods(cluster, namespace, "part").values()
    bound = [p for p in found if p.spec.node_name]
    assert len(bound) == 2, "one pod per node is bound, and holds its node while the job cannot train"
    assert [unschedulable(p) for p in found if not p.spec.node_name] == [True]
    assert workload(cluster, namespace, "part") is None
