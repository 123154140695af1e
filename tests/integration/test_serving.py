"""Serving on a real API server: promotion, the gate, rollback, failover, restart and clean-up.

The operator runs with the chart's RBAC. Each version's Deployment is real (the controller-manager
makes its ReplicaSet and pods); kwok starts the pods, and the fault helpers flip their readiness
the way failing probes would.
"""
from __future__ import annotations

import time

import pytest

from harness.waits import wait_for
from serving_kit import (condition, events, last_history, model_deployment, model_version, patch_spec, pods,
                         replicas, selected, set_ready, status, torchyard, version_phase, wait_ready, wait_selected)

pytestmark = pytest.mark.integration


def serving_v(cluster, namespace, versions: dict[int, float], **spec) -> int:
    """Create the versions and a ModelDeployment; return once the newest serves."""
    for version, accuracy in versions.items():
        model_version(cluster, namespace, version, accuracy)
    model_deployment(cluster, namespace, **spec)
    newest = max(versions)
    wait_selected(cluster, namespace, newest)
    return newest


def test_a_passing_version_is_promoted_and_the_old_one_stays_warm(cluster, namespace, operator):
    serving_v(cluster, namespace, {1: 0.90})
    assert wait_ready(cluster, namespace, 1)
    model_version(cluster, namespace, 2, 0.93)
    wait_selected(cluster, namespace, 2)
    assert ready_count(cluster, namespace, 2) >= 1  # traffic went only to a ready version
    entry = last_history(cluster, namespace)
    assert (entry["from"], entry["to"], entry["reason"]) == (1, 2, "promotion")
    assert entry["switchLatencySeconds"] >= 0
    st = status(cluster, namespace)
    assert st["activeVersion"] == 2 and st["previousVersion"] == 1
    assert wait_for(lambda: version_phase(cluster, namespace, 2) == "Active", "v2 Active")
    assert wait_for(lambda: version_phase(cluster, namespace, 1) == "Standby", "v1 Standby")
    assert replicas(cluster, namespace, 1) == 1  # warm standby at full replicas
    assert any(reason == "Promoted" for reason, _ in events(cluster, namespace))


def ready_count(cluster, namespace, version) -> int:
    return len([p for p in pods(cluster, namespace, version)
                if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])])


def test_a_worse_version_is_rejected_by_the_gate(cluster, namespace, operator):
    serving_v(cluster, namespace, {1: 0.90}, gate={"maxRegression": 0.01})
    model_version(cluster, namespace, 2, 0.85)
    assert wait_for(lambda: version_phase(cluster, namespace, 2) == "Rejected", "v2 Rejected")
    entry = last_history(cluster, namespace)
    assert (entry["from"], entry["to"], entry["reason"]) == (1, 2, "gate-rejected")
    assert "accuracy 0.85 is lower than v1's 0.9" in entry["message"]
    assert selected(cluster, namespace) == 1
    assert replicas(cluster, namespace, 2) is None  # a rejected version is never deployed
    mv = cluster.custom.get_namespaced_custom_object("torchyard.dev", "v1alpha1", namespace, "modelversions", "digits-v2")
    assert mv["status"]["reason"] == "GateRejected"
    # Within the bound is no regression worth refusing.
    model_version(cluster, namespace, 3, 0.895)
    wait_selected(cluster, namespace, 3)


def test_manual_rollback_to_any_retained_version(cluster, namespace, operator):
    serving_v(cluster, namespace, {1: 0.90, 2: 0.91, 3: 0.92})
    wait_ready(cluster, namespace, 2)
    assert replicas(cluster, namespace, 1) is None  # one standby: v1 was never deployed
    patch_spec(cluster, namespace, {"activeVersion": 1})  # what a GitOps commit does
    wait_selected(cluster, namespace, 1)
    entry = last_history(cluster, namespace)
    assert (entry["from"], entry["to"], entry["reason"]) == (3, 1, "manual")
    assert wait_for(lambda: replicas(cluster, namespace, 3) == 0, "v3 retired after the rollback")

    done = torchyard(cluster, "rollback", "digits", "--to", "2", "-n", namespace, "--wait", "30")
    assert done.returncode == 0, done.stderr
    assert selected(cluster, namespace) == 2 and "v2 serves" in done.stdout
    back = torchyard(cluster, "rollback", "digits", "-n", namespace, "--wait", "30")  # default: the previous one
    assert back.returncode == 0, back.stderr
    assert selected(cluster, namespace) == 1
    missing = torchyard(cluster, "rollback", "digits", "--to", "9", "-n", namespace)
    assert missing.returncode == 1 and "digits-v9 does not exist" in missing.stderr


def test_failover_when_the_active_versions_pods_turn_not_ready(cluster, namespace, operator, faults):
    serving_v(cluster, namespace, {1: 0.90, 2: 0.91})
    wait_ready(cluster, namespace, 1)
    set_ready(faults, cluster, namespace, 2, False)
    wait_selected(cluster, namespace, 1, timeout=15)
    entry = last_history(cluster, namespace)
    assert (entry["from"], entry["to"], entry["reason"]) == (2, 1, "failover")
    assert entry["switchLatencySeconds"] >= 1.0  # the grace period is honoured
    assert condition(status(cluster, namespace), "Degraded")["reason"] == "FailedOver"
    assert any(reason == "FailedOver" for reason, _ in events(cluster, namespace))
    # v2 recovers: traffic returns once it has stayed ready for the grace period.
    set_ready(faults, cluster, namespace, 2, True)
    wait_selected(cluster, namespace, 2, timeout=15)
    assert last_history(cluster, namespace)["reason"] == "failback"
    assert wait_for(lambda: condition(status(cluster, namespace), "Degraded").get("status") == "False", "Degraded=False")


def test_a_crash_looping_active_version_fails_over(cluster, namespace, operator, faults):
    serving_v(cluster, namespace, {1: 0.90, 2: 0.91})
    wait_ready(cluster, namespace, 1)
    faults.crash_container(namespace, pods(cluster, namespace, 2)[0].metadata.name)
    wait_selected(cluster, namespace, 1, timeout=15)
    assert "CrashLoopBackOff" in last_history(cluster, namespace)["message"]


def test_an_unhealthy_standby_is_skipped_and_none_left_means_degraded(cluster, namespace, operator, faults):
    serving_v(cluster, namespace, {1: 0.90, 2: 0.91, 3: 0.92}, standby=2)
    wait_ready(cluster, namespace, 1)
    wait_ready(cluster, namespace, 2)
    set_ready(faults, cluster, namespace, 2, False)
    set_ready(faults, cluster, namespace, 1, False)
    set_ready(faults, cluster, namespace, 3, False)
    degraded = wait_for(lambda: (c := condition(status(cluster, namespace), "Degraded")).get("reason") == "NoHealthyStandby"
                        and c, "Degraded NoHealthyStandby", timeout=15)
    assert "v2 has 0 ready" in degraded["message"] and "v1 has 0 ready" in degraded["message"]
    assert selected(cluster, namespace) == 3  # traffic stays where it is: nowhere better to go
    set_ready(faults, cluster, namespace, 1, True)  # the older standby recovers, the newer does not
    wait_selected(cluster, namespace, 1, timeout=15)
    entry = last_history(cluster, namespace)
    assert (entry["from"], entry["to"], entry["reason"]) == (3, 1, "failover")


def test_an_operator_restart_never_moves_traffic_by_itself(cluster, namespace, operator, faults):
    serving_v(cluster, namespace, {1: 0.90, 2: 0.91})
    wait_for(lambda: condition(status(cluster, namespace), "Progressing").get("reason") == "Stable", "settled")
    before = status(cluster, namespace)
    operator.restart()
    time.sleep(7)  # past the resync period: the restarted operator has reconciled everything
    after = status(cluster, namespace)
    assert selected(cluster, namespace) == 2
    assert after["history"] == before["history"]
    assert after["conditions"] == before["conditions"]
    # An unhealthy active version is remembered across a restart, and still fails over.
    operator.stop()
    set_ready(faults, cluster, namespace, 2, False)
    operator.start()
    wait_selected(cluster, namespace, 1, timeout=20)


def test_deleting_a_model_deployment_removes_its_deployments_and_service(cluster, namespace, operator):
    serving_v(cluster, namespace, {1: 0.90, 2: 0.91})
    cluster.custom.delete_namespaced_custom_object("torchyard.dev", "v1alpha1", namespace, "modeldeployments", "digits",
                                                   propagation_policy="Foreground")
    wait_for(lambda: replicas(cluster, namespace, 1) is None and replicas(cluster, namespace, 2) is None,
             "version Deployments garbage-collected", timeout=60)
    wait_for(lambda: selected(cluster, namespace) is None, "Service garbage-collected", timeout=60)
    # The ModelVersions stay: a version outlives any deployment of it.
    assert version_phase(cluster, namespace, 2) is not None


def test_a_second_model_deployment_of_a_served_model_writes_nothing(cluster, namespace, operator):
    model_version(cluster, namespace, 1, 0.95)
    model_deployment(cluster, namespace)
    wait_for(lambda: selected(cluster, namespace) == 1, "v1 serves")
    model_deployment(cluster, namespace, name="digits-again", activeVersion=1, replicas=3)
    wait_for(lambda: condition(status(cluster, namespace, "digits-again"), "Degraded").get("reason") == "DuplicateModel",
             "the second one marked")
    degraded = condition(status(cluster, namespace, "digits-again"), "Degraded")
    assert degraded["status"] == "True" and "already served by ModelDeployment digits" in degraded["message"]
    deployments = cluster.apps.list_namespaced_deployment(namespace).items
    assert [d.metadata.owner_references[0].name for d in deployments] == ["digits"]
    assert deployments[0].spec.replicas == 1  # the second one's replicas: 3 were never applied
