"""spec.runPolicy.managedBy on the real API server and the real operator: a job another controller
runs (MultiKueue's dispatcher names itself here) gets no pods and no status from this operator,
and the field cannot change after the job is created."""

from __future__ import annotations

import time

import pytest
from kubernetes.client.exceptions import ApiException

from harness.waits import wait_for

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"
MULTIKUEUE = "kueue.x-k8s.io/multikueue"


def job(name: str, manager: str | None) -> dict:
    run_policy = {"managedBy": manager} if manager else {}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"worker": {"replicas": 2}, "runPolicy": run_policy,
                     "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}}}


def read(cluster, namespace, name) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def pods(cluster, namespace, name) -> list:
    return cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={name}").items


def test_a_job_managed_elsewhere_gets_no_pods_and_no_status(cluster, crds, namespace, operator):
    create = cluster.custom.create_namespaced_custom_object
    create(GROUP, VERSION, namespace, PLURAL, job("elsewhere", MULTIKUEUE))
    create(GROUP, VERSION, namespace, PLURAL, job("ours", "torchyard.dev/operator"))
    # The job this operator runs shows that the operator is at work on this namespace ...
    wait_for(lambda: len(pods(cluster, namespace, "ours")) == 2, "the operator's own job's pods")
    wait_for(lambda: read(cluster, namespace, "ours").get("status", {}).get("phase"), "its status")
    # ... while the other, created first, stays untouched for longer than the operator's resync.
    until = time.monotonic() + 7
    while time.monotonic() < until:
        assert pods(cluster, namespace, "elsewhere") == []
        assert "status" not in read(cluster, namespace, "elsewhere") or not read(
            cluster, namespace, "elsewhere")["status"], "no status is written for a job managed elsewhere"
        time.sleep(0.5)


@pytest.mark.parametrize("before, after", [(MULTIKUEUE, "torchyard.dev/operator"), (MULTIKUEUE, None),
                                           (None, MULTIKUEUE)], ids=["changed", "removed", "added"])
def test_managed_by_cannot_change_after_create(cluster, crds, namespace, before, after):
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job("fixed", before))
    with pytest.raises(ApiException) as refused:
        cluster.custom.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "fixed",
            {**job("fixed", after), "metadata": read(cluster, namespace, "fixed")["metadata"]})
    assert refused.value.status == 422
    assert "spec.runPolicy.managedBy" in refused.value.body and "immutable" in refused.value.body
