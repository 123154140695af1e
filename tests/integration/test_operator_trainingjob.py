"""The operator against a real API server: pods, Service, status and failure policy as a user sees them.

Pods in this cluster are simulated by kwok: they are scheduled by the real scheduler and become
Running on fake nodes; a test ends a container with the exit code it wants through the fault
helpers, which write pod status the way a kubelet would.
"""

from __future__ import annotations

import json

from harness.waits import wait_for

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"


def trainingjob(name: str, **spec) -> dict:
    body = {
        "strategy": "AllReduce",
        "worker": {"replicas": 2},
        "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name}, "spec": body}


def create(cluster, namespace, obj) -> dict:
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)


def get(cluster, namespace, name) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def status(cluster, namespace, name) -> dict:
    return get(cluster, namespace, name).get("status") or {}


def pods(cluster, namespace, job) -> dict[str, object]:
    items = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={job}").items
    return {p.metadata.name: p for p in items if p.metadata.deletion_timestamp is None}


def env_of(pod) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def phase_is(cluster, namespace, name, phase):
    return lambda: status(cluster, namespace, name).get("phase") == phase


def condition(st: dict, kind: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == kind), {})


def test_gpu_allreduce_job_gets_exact_pods_service_and_gpu_nodes(cluster, crds, namespace, operator):
    create(cluster, namespace, trainingjob("gpu", worker={"replicas": 2, "gpus": 2}))
    wait_for(phase_is(cluster, namespace, "gpu", "Running"), "job Running")

    found = pods(cluster, namespace, "gpu")
    assert sorted(found) == ["gpu-worker-0", "gpu-worker-1"]
    gpu_nodes = {n.metadata.name for n in cluster.core.list_node(label_selector="nvidia.com/gpu.present=true").items}
    for name, pod in found.items():
        assert pod.spec.node_name in gpu_nodes, f"{name} landed on {pod.spec.node_name}, not a GPU node"
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"
        assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
        assert pod.metadata.owner_references[0].kind == "TrainingJob"
    env0, env1 = env_of(found["gpu-worker-0"]), env_of(found["gpu-worker-1"])
    assert (env0["WORLD_SIZE"], env0["RANK"], env1["RANK"]) == ("4", "0", "2")
    assert env1["MASTER_ADDR"] == f"gpu-worker-0.gpu.{namespace}.svc"

    svc = cluster.core.read_namespaced_service("gpu", namespace)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses is True

    st = status(cluster, namespace, "gpu")
    assert st["replicaStatuses"]["worker"]["running"] == 2
    assert condition(st, "Running")["status"] == "True"
    assert st["observedGeneration"] == 1


def test_parameter_server_job_succeeds_only_when_all_workers_do(cluster, crds, namespace, operator, faults):
    job = trainingjob("ps", strategy="ParameterServer", parameterServer={"replicas": 1})
    create(cluster, namespace, job)
    wait_for(phase_is(cluster, namespace, "ps", "Running"), "job Running")
    assert sorted(pods(cluster, namespace, "ps")) == ["ps-ps-0", "ps-worker-0", "ps-worker-1"]

    result = {"metrics": {"accuracy": 0.97}, "metric": "accuracy", "artifact": {"path": "/m/ps", "sha256": "ab" * 32}}
    faults.terminate_container(namespace, "ps-worker-0", exit_code=0, message=json.dumps(result))
    wait_for(lambda: status(cluster, namespace, "ps")["replicaStatuses"]["worker"]["succeeded"] == 1, "worker-0 counted")
    assert status(cluster, namespace, "ps")["phase"] == "Running"

    faults.terminate_container(namespace, "ps-worker-1", exit_code=0)
    wait_for(phase_is(cluster, namespace, "ps", "Succeeded"), "job Succeeded")
    st = status(cluster, namespace, "ps")
    assert st["result"]["metrics"] == {"accuracy": 0.97}
    assert st["completionTime"]
    # The parameter server does not outlive the job (cleanPodPolicy Running).
    wait_for(lambda: "ps-ps-0" not in pods(cluster, namespace, "ps"), "parameter server stopped")
    assert condition(st, "Succeeded")["status"] == "True"


def test_retryable_failure_restarts_the_gang_then_backoff_limit_fails_it(cluster, crds, namespace, operator, faults):
    create(cluster, namespace, trainingjob("retry", runPolicy={"backoffLimit": 1, "restartPolicy": "ExitCode"}))
    wait_for(phase_is(cluster, namespace, "retry", "Running"), "job Running")
    first = {n: p.metadata.uid for n, p in pods(cluster, namespace, "retry").items()}

    faults.terminate_container(namespace, "retry-worker-1", exit_code=137, reason="OOMKilled")
    wait_for(lambda: status(cluster, namespace, "retry").get("restarts") == 1, "restart counted")
    wait_for(phase_is(cluster, namespace, "retry", "Running"), "gang running again")
    second = pods(cluster, namespace, "retry")
    assert sorted(second) == sorted(first)
    assert all(p.metadata.uid != first[n] for n, p in second.items()), "every gang member was replaced"
    assert all(p.metadata.labels["torchyard.dev/attempt"] == "1" for p in second.values())
    assert env_of(second["retry-worker-0"])["TORCHYARD_ATTEMPT"] == "1"
    last = status(cluster, namespace, "retry")["lastFailure"]
    assert (last["pod"], last["exitCode"], last["reason"]) == ("retry-worker-1", 137, "OOMKilled")

    faults.terminate_container(namespace, "retry-worker-0", exit_code=139)  # SIGSEGV: retried, charged
    wait_for(phase_is(cluster, namespace, "retry", "Failed"), "job Failed")
    st = status(cluster, namespace, "retry")
    assert condition(st, "Failed")["reason"] == "BackoffLimitExceeded"
    # cleanPodPolicy Running: the rank still running is stopped, the failed one is kept to inspect.
    wait_for(lambda: set(pods(cluster, namespace, "retry")) == {"retry-worker-0"}, "running pods of the failed job stopped")


def test_permanent_exit_code_fails_at_once_with_the_reason(cluster, crds, namespace, operator, faults):
    create(cluster, namespace, trainingjob("perm", runPolicy={"restartPolicy": "ExitCode", "backoffLimit": 5}))
    wait_for(phase_is(cluster, namespace, "perm", "Running"), "job Running")
    faults.terminate_container(namespace, "perm-worker-0", exit_code=3, message="ValueError: bad learning rate")
    wait_for(phase_is(cluster, namespace, "perm", "Failed"), "job Failed")
    st = status(cluster, namespace, "perm")
    assert st["restarts"] == 0
    assert condition(st, "Failed")["reason"] == "PodFailedPermanently"
    assert "bad learning rate" in st["lastFailure"]["message"] and st["lastFailure"]["exitCode"] == 3
    events = cluster.core.list_namespaced_event(namespace, field_selector="involvedObject.name=perm").items
    assert any(e.reason == "PodFailedPermanently" and e.type == "Warning" for e in events)


def test_unknown_bundled_model_fails_naming_the_field_without_pods(cluster, crds, namespace, operator):
    job = trainingjob("typo")
    job["spec"]["trainer"]["model"]["name"] = "resnet9000"
    create(cluster, namespace, job)
    wait_for(phase_is(cluster, namespace, "typo", "Failed"), "job Failed")
    failed = condition(status(cluster, namespace, "typo"), "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert failed["message"].startswith("spec.trainer.model.name")
    assert not pods(cluster, namespace, "typo")


def test_suspend_deletes_pods_and_resume_recreates_them(cluster, crds, namespace, operator):
    create(cluster, namespace, trainingjob("sus"))
    wait_for(phase_is(cluster, namespace, "sus", "Running"), "job Running")
    patch = {"spec": {"runPolicy": {"suspend": True}}}
    cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sus", patch)
    wait_for(phase_is(cluster, namespace, "sus", "Suspended"), "job Suspended")
    wait_for(lambda: not pods(cluster, namespace, "sus"), "pods deleted")
    patch["spec"]["runPolicy"]["suspend"] = False
    cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sus", patch)
    wait_for(phase_is(cluster, namespace, "sus", "Running"), "job Running again")
    st = status(cluster, namespace, "sus")
    assert condition(st, "Suspended")["status"] == "False" and st["restarts"] == 0


def test_deleting_the_job_garbage_collects_pods_and_service(cluster, crds, namespace, operator):
    def services():
        return cluster.core.list_namespaced_service(namespace, label_selector="torchyard.dev/job-name=gc").items

    create(cluster, namespace, trainingjob("gc"))
    wait_for(phase_is(cluster, namespace, "gc", "Running"), "job Running")
    assert len(services()) == 1 and len(pods(cluster, namespace, "gc")) == 2
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gc")
    wait_for(lambda: not pods(cluster, namespace, "gc"), "pods collected")
    wait_for(lambda: not services(), "service collected")


def test_operator_restart_adopts_pods_without_duplicates(cluster, crds, namespace, operator, faults):
    create(cluster, namespace, trainingjob("adopt", worker={"replicas": 3}))
    wait_for(phase_is(cluster, namespace, "adopt", "Running"), "job Running")
    before = {n: p.metadata.uid for n, p in pods(cluster, namespace, "adopt").items()}
    operator.restart()
    wait_for(lambda: operator.healthy(), "operator back")
    faults.terminate_container(namespace, "adopt-worker-2", exit_code=0)
    wait_for(lambda: status(cluster, namespace, "adopt")["replicaStatuses"]["worker"]["succeeded"] == 1,
             "restarted operator sees the pods")
    after = {n: p.metadata.uid for n, p in pods(cluster, namespace, "adopt").items()}
    assert after == before
    assert status(cluster, namespace, "adopt")["restarts"] == 0


def test_progress_reports_reach_status(cluster, crds, namespace, operator):
    import urllib.request

    create(cluster, namespace, trainingjob("prog"))
    wait_for(phase_is(cluster, namespace, "prog", "Running"), "job Running")
    env = env_of(pods(cluster, namespace, "prog")["prog-worker-0"])
    # Pods reach the operator through its Service; here the test stands in for rank 0.
    path = env["TORCHYARD_PROGRESS_URL"].split("/v1/", 1)[1]
    body = json.dumps({"step": 30, "totalSteps": 120, "epoch": 1, "loss": 0.5, "percent": 25.0}).encode()

    def post(token: str) -> int:
        req = urllib.request.Request(f"{operator.url}/v1/{path}", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(req, timeout=5).status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("not-the-token") == 403
    assert post(env["TORCHYARD_PROGRESS_TOKEN"]) == 202
    wait_for(lambda: status(cluster, namespace, "prog").get("progress", {}).get("step") == 30, "progress in status")
    assert status(cluster, namespace, "prog")["progress"]["percent"] == 25.0
    printed = cluster.kubectl("get", "tj", "prog", "-n", namespace).stdout
    assert "25" in printed.splitlines()[1]


def test_a_pod_deleted_by_hand_restarts_the_gang_without_charging_the_user(cluster, crds, namespace, operator):
    create(cluster, namespace, trainingjob("byhand", runPolicy={"backoffLimit": 0}))
    wait_for(phase_is(cluster, namespace, "byhand", "Running"), "job Running")
    before = {n: p.metadata.uid for n, p in pods(cluster, namespace, "byhand").items()}
    cluster.core.delete_namespaced_pod("byhand-worker-1", namespace, grace_period_seconds=0)
    wait_for(lambda: status(cluster, namespace, "byhand").get("infrastructureRestarts") == 1, "restart recorded")
    wait_for(phase_is(cluster, namespace, "byhand", "Running"), "gang running again")
    after = pods(cluster, namespace, "byhand")
    assert sorted(after) == sorted(before)
    assert all(p.metadata.uid != before[n] for n, p in after.items())
    assert status(cluster, namespace, "byhand")["restarts"] == 0  # backoffLimit 0 was not spent


def test_two_operators_at_once_create_no_duplicates(cluster, crds, namespace, operator, operator_factory, faults):
    operator_factory(namespace)
    create(cluster, namespace, trainingjob("twice", worker={"replicas": 4}))
    wait_for(phase_is(cluster, namespace, "twice", "Running"), "job Running")
    all_pods = cluster.core.list_namespaced_pod(namespace, label_selector="torchyard.dev/job-name=twice").items
    assert sorted(p.metadata.name for p in all_pods) == [f"twice-worker-{i}" for i in range(4)]
    faults.terminate_container(namespace, "twice-worker-3", exit_code=1)
    wait_for(phase_is(cluster, namespace, "twice", "Running"), "restarted gang running")
    wait_for(lambda: status(cluster, namespace, "twice")["attempt"] == 1, "one new attempt")
    st = status(cluster, namespace, "twice")
    assert st["restarts"] == 1, "both operators saw the failure; it was counted once"
