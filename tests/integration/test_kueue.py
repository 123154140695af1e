"""The suspend contract Kueue relies on (docs/kueue.md), played against the real operator.

An integration that drives `spec.runPolicy.suspend` admits a queued job by writing its placement
into the job (a flavor's node selector) and setting `suspend` to false, and preempts one by setting
it back to true. The operator runs without `--kueue` here, so the queue label is only a label: the
test makes exactly those changes and checks what the operator does in between: nothing while the
job waits, everything once it is admitted, and a preemption that costs the job nothing from its
retry budget. With `--kueue` the operator itself follows the real Kueue (test_kueue_real.py).
"""

from __future__ import annotations

import time

from harness.waits import wait_for

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
FLAVOR_NODE = "kwok-cpu-1"


def status(cluster, namespace: str, name: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


def live_pods(cluster, namespace: str, job: str) -> list:
    items = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={job}").items
    return [p for p in items if p.metadata.deletion_timestamp is None]


def condition(st: dict, kind: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == kind), {})


def patch_spec(cluster, namespace: str, name: str, spec: dict) -> None:
    cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})


def test_a_queued_job_waits_suspended_until_admitted_and_preemption_costs_nothing(cluster, crds, namespace, operator):
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
           "metadata": {"name": "queued", "labels": {QUEUE_LABEL: "team-a"}},
           "spec": {"strategy": "AllReduce", "worker": {"replicas": 2},
                    "runPolicy": {"suspend": True, "backoffLimit": 0},
                    "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)

    wait_for(lambda: status(cluster, namespace, "queued").get("phase") == "Suspended", "the job Suspended")
    assert condition(status(cluster, namespace, "queued"), "Suspended")["status"] == "True"
    waited_until = time.monotonic() + 7  # longer than the operator's resync, so time-based passes ran
    while time.monotonic() < waited_until:
        assert live_pods(cluster, namespace, "queued") == [], "a queued job must create no pods"
        time.sleep(0.5)

    # Admission: the flavor's placement, then suspend false (one patch, as an integration may do).
    patch_spec(cluster, namespace, "queued", {"worker": {"nodeSelector": {"kubernetes.io/hostname": FLAVOR_NODE}},
                                              "runPolicy": {"suspend": False}})
    wait_for(lambda: status(cluster, namespace, "queued").get("phase") == "Running", "the admitted job Running")
    pods = live_pods(cluster, namespace, "queued")
    assert sorted(p.metadata.name for p in pods) == ["queued-worker-0", "queued-worker-1"]
    assert {p.spec.node_name for p in pods} == {FLAVOR_NODE}, "pods run where the admission placed them"
    st = status(cluster, namespace, "queued")
    assert condition(st, "Running")["status"] == "True" and condition(st, "Suspended").get("status") != "True"

    # Preemption: suspend again. Pods go; nothing is charged to the job.
    patch_spec(cluster, namespace, "queued", {"runPolicy": {"suspend": True}})
    wait_for(lambda: status(cluster, namespace, "queued").get("phase") == "Suspended", "the preempted job Suspended")
    wait_for(lambda: live_pods(cluster, namespace, "queued") == [], "the preempted job's pods deleted")
    st = status(cluster, namespace, "queued")
    assert st.get("restarts", 0) == 0 and st.get("infrastructureRestarts", 0) == 0

    # Admitted again (backoffLimit 0 would have failed it had the preemption been charged).
    patch_spec(cluster, namespace, "queued", {"runPolicy": {"suspend": False}})
    wait_for(lambda: status(cluster, namespace, "queued").get("phase") == "Running", "the re-admitted job Running")
    assert len(live_pods(cluster, namespace, "queued")) == 2
