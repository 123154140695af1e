"""The integration harness itself: the local control plane behaves like a real cluster in every
way the operator's tests rely on, and each fault helper produces what a kubelet would report."""
from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness.cluster import REPO_ROOT
from harness.waits import read_or_none, wait_for

pytestmark = pytest.mark.integration

GPU_LABEL = "nvidia.com/gpu.present"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(autouse=True)
def _local_only(cluster):
    if not cluster.local:
        pytest.fail("the harness smoke tests check the local control plane (make cluster-up), "
                    "not the cluster KUBECONFIG names", pytrace=False)


def pod(name: str, gpus: int = 0, node: str | None = None, labels: dict | None = None, **spec) -> dict:
    container = {"name": "main", "image": "busybox"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
        spec.setdefault("tolerations", [GPU_TOLERATION])
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [container], "restartPolicy": "Never", **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def scheduled_node(cluster, namespace: str, name: str) -> str:
    return wait_for(lambda: cluster.core.read_namespaced_pod(name, namespace).spec.node_name,
                    f"pod {name} scheduled")


def test_four_nodes_ready_two_with_gpus(cluster):
    nodes = cluster.core.list_node().items
    ready = {n.metadata.name for n in nodes
             if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)}
    gpu = {n.metadata.name: n.status.allocatable.get("nvidia.com/gpu") for n in nodes
           if n.metadata.labels.get(GPU_LABEL) == "true"}
    assert len(ready) == 4 and ready == {n.metadata.name for n in nodes}
    assert sorted(gpu.values()) == ["4", "4"]
    taints = {n.metadata.name: [(t.key, t.effect) for t in n.spec.taints or []] for n in nodes}
    assert {name: t for name, t in taints.items() if name in gpu} == {
        name: [("nvidia.com/gpu", "NoSchedule")] for name in gpu}, "GPU nodes are tainted as real GPU pools are"
    assert all(not t for name, t in taints.items() if name not in gpu), "CPU test pods need no toleration"


def test_server_reports_the_stamped_version(cluster):
    pinned = dict(line.split("=", 1) for line in (REPO_ROOT / "hack" / "versions.env").read_text().split()
                  if "=" in line and not line.startswith("#"))
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == pinned["K8S_VERSION"]
    assert server["gitTreeState"] == "clean"


def test_gpu_pods_land_only_on_gpu_nodes(cluster, namespace):
    gpu_nodes = {n.metadata.name for n in cluster.core.list_node(label_selector=f"{GPU_LABEL}=true").items}
    for i in range(4):
        cluster.core.create_namespaced_pod(namespace, pod(f"gpu-{i}", gpus=2))
    placed = {scheduled_node(cluster, namespace, f"gpu-{i}") for i in range(4)}
    assert placed == gpu_nodes  # 4 pods x 2 GPUs fill both 4-GPU nodes exactly


def test_cpu_pods_never_land_on_the_tainted_gpu_nodes(cluster, namespace):
    gpu_nodes = {n.metadata.name for n in cluster.core.list_node(label_selector=f"{GPU_LABEL}=true").items}
    for i in range(6):
        cluster.core.create_namespaced_pod(namespace, pod(f"cpu-{i}"))
    placed = {scheduled_node(cluster, namespace, f"cpu-{i}") for i in range(6)}
    assert placed and not placed & gpu_nodes


def test_pod_asking_for_more_gpus_than_a_node_has_stays_pending_with_the_reason(cluster, namespace):
    cluster.core.create_namespaced_pod(namespace, pod("greedy", gpus=8))

    def unschedulable():
        p = cluster.core.read_namespaced_pod("greedy", namespace)
        return next((c for c in p.status.conditions or []
                     if c.type == "PodScheduled" and c.reason == "Unschedulable"), None)

    condition = wait_for(unschedulable, "PodScheduled=False/Unschedulable")
    assert "Insufficient nvidia.com/gpu" in condition.message
    events = wait_for(lambda: [e for e in cluster.core.list_namespaced_event(namespace).items
                               if e.reason == "FailedScheduling" and e.involved_object.name == "greedy"],
                      "a FailedScheduling event")
    assert "nvidia.com/gpu" in events[0].message
    assert cluster.core.read_namespaced_pod("greedy", namespace).status.phase == "Pending"


def test_a_jobs_pod_completes(cluster, namespace):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "done"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "main", "image": "busybox"}]}}}}
    cluster.batch.create_namespaced_job(namespace, job)
    finished = wait_for(lambda: (j := cluster.batch.read_namespaced_job("done", namespace)).status.succeeded
                        and j, "job done to succeed")
    assert any(c.type == "Complete" and c.status == "True" for c in finished.status.conditions)


def test_other_pods_keep_running_until_a_test_moves_them(cluster, namespace):
    cluster.core.create_namespaced_pod(namespace, pod("trainer"))
    wait_for(lambda: cluster.core.read_namespaced_pod("trainer", namespace).status.phase == "Running",
             "pod Running")
    time.sleep(3)
    current = cluster.core.read_namespaced_pod("trainer", namespace)
    assert current.status.phase == "Running"
    assert current.status.container_statuses[0].ready is True


def test_owner_references_are_garbage_collected(cluster, namespace):
    owner = cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    child = pod("child")
    child["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                             "uid": owner.metadata.uid}]
    cluster.core.create_namespaced_pod(namespace, child)
    cluster.core.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: read_or_none(lambda: cluster.core.read_namespaced_pod("child", namespace)) is None,
             "the garbage collector to delete the owned pod")


def test_rbac_denies_a_service_account_what_it_was_not_granted(cluster, namespace):
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "reader", "--role=pod-reader",
                    f"--serviceaccount={namespace}:reader", "-n", namespace)
    who = f"--as=system:serviceaccount:{namespace}:reader"
    assert cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, who).stdout.strip() == "yes"
    denied = cluster.kubectl("auth", "can-i", "create", "pods", "-n", namespace, who, check=False)
    assert denied.stdout.strip() == "no"

    token = cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    configuration = client.Configuration()
    configuration.host = cluster.api.configuration.host
    configuration.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as api:
        as_reader = client.CoreV1Api(api)
        as_reader.list_namespaced_pod(namespace)  # granted: the token authenticates
        with pytest.raises(ApiException) as err:
            as_reader.create_namespaced_pod(namespace, pod("forbidden"))
    assert err.value.status == 403


def test_terminate_container_reports_exit_code_message_and_reason(cluster, namespace, faults):
    cluster.core.create_namespaced_pod(namespace, pod("oom"))
    faults.terminate_container(namespace, "oom", 137, reason="OOMKilled", message='{"step": 12}')
    time.sleep(2)  # kwok must leave the terminated pod alone
    current = cluster.core.read_namespaced_pod("oom", namespace)
    terminated = current.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (137, "OOMKilled", '{"step": 12}')
    assert current.status.phase == "Failed"


def test_terminate_container_with_zero_succeeds(cluster, namespace, faults):
    cluster.core.create_namespaced_pod(namespace, pod("ok"))
    done = faults.terminate_container(namespace, "ok", 0)
    assert done.status.phase == "Succeeded"
    assert done.status.container_statuses[0].state.terminated.reason == "Completed"


def test_crash_container_counts_a_restart(cluster, namespace, faults):
    cluster.core.create_namespaced_pod(namespace, pod("crashy", restartPolicy="Always"))
    faults.crash_container(namespace, "crashy", 2)
    crashed = faults.crash_container(namespace, "crashy", 3, message="boom")
    status = crashed.status.container_statuses[0]
    assert status.restart_count == 2 and status.last_state.terminated.exit_code == 3
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert crashed.status.phase == "Running"


def _endpoint_ready(cluster, namespace: str) -> list:
    items = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=web").items
    return [e.conditions.ready for s in items for e in s.endpoints or []]


def test_readiness_flips_reach_the_service_endpoints(cluster, namespace, faults):
    cluster.core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    cluster.core.create_namespaced_pod(namespace, pod("web-0", labels={"app": "web"}))
    wait_for(lambda: _endpoint_ready(cluster, namespace) == [True], "a ready endpoint")
    faults.set_pod_ready(namespace, "web-0", False)
    wait_for(lambda: _endpoint_ready(cluster, namespace) == [False], "the endpoint not ready")
    faults.set_pod_ready(namespace, "web-0", True)
    wait_for(lambda: _endpoint_ready(cluster, namespace) == [True], "the endpoint ready again")


def _pod_ready(cluster, namespace: str, name: str) -> str | None:
    p = cluster.core.read_namespaced_pod(name, namespace)
    return next((c.status for c in p.status.conditions or [] if c.type == "Ready"), None)


def test_node_not_ready_taints_the_node(cluster, faults):
    node = faults.node_not_ready("kwok-cpu-0")
    assert next(c for c in node.status.conditions if c.type == "Ready").reason == "KubeletNotReady"
    wait_for(lambda: ("node.kubernetes.io/not-ready", "NoExecute") in
             {(t.key, t.effect) for t in cluster.core.read_node("kwok-cpu-0").spec.taints or []},
             "the node lifecycle controller's NoExecute taint")
    time.sleep(3)  # kwok keeps reporting NotReady while the label is on
    ready = next(c for c in cluster.core.read_node("kwok-cpu-0").status.conditions if c.type == "Ready")
    assert ready.status == "False"
    faults.node_ready("kwok-cpu-0")
    assert not cluster.core.read_node("kwok-cpu-0").spec.taints


def test_lost_node_goes_unknown_and_its_deleted_pods_stay_terminating(cluster, namespace, faults):
    cluster.core.create_namespaced_pod(namespace, pod("stranded", node="kwok-cpu-1"))
    wait_for(lambda: _pod_ready(cluster, namespace, "stranded") == "True", "pod Ready")
    faults.node_lost("kwok-cpu-1")
    wait_for(lambda: "node.kubernetes.io/unreachable" in
             {t.key for t in cluster.core.read_node("kwok-cpu-1").spec.taints or []}, "unreachable taint")
    wait_for(lambda: _pod_ready(cluster, namespace, "stranded") == "False",
             "the node lifecycle controller to mark the pod not ready")
    cluster.core.delete_namespaced_pod("stranded", namespace)
    time.sleep(3)
    stuck = cluster.core.read_namespaced_pod("stranded", namespace)
    assert stuck.metadata.deletion_timestamp is not None  # no kubelet to confirm the deletion
    faults.node_ready("kwok-cpu-1")
    wait_for(lambda: read_or_none(lambda: cluster.core.read_namespaced_pod("stranded", namespace)) is None,
             "the pod gone once the node is back")


def test_eviction_deletes_the_pod(cluster, namespace, faults):
    cluster.core.create_namespaced_pod(namespace, pod("evictee"))
    faults.wait_running(namespace, "evictee")
    faults.evict(namespace, "evictee")
    assert read_or_none(lambda: cluster.core.read_namespaced_pod("evictee", namespace)) is None
