"""The reconcile decision as a table of observed situations, the known traps of other operators
among them (see docs/operator.md for the list)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from jobs import NOW, PARAMETER_SERVER, job, pod
from torchyard.reconcile.decide import INFRASTRUCTURE_RESTART_LIMIT, Observed, decide, detail_only, invalid_spec
from torchyard.reconcile.nodes import NodeFault

RUNNING = {"phase": "Running", "startTime": "2026-01-01T11:00:00Z", "attemptStartTime": "2026-01-01T11:00:00Z",
           "attempt": 0, "restarts": 0, "conditions": []}


def observe(*pods, service=True, now=NOW):
    return Observed(pods=tuple(pods), service_exists=service, now=now)


def condition(status, kind):
    return next((c for c in status["conditions"] if c["type"] == kind), None)


def ps_pod(role, index, phase="Running", **kw):
    return pod(role, index, phase, job_name="ps", **kw)


def test_new_job_creates_service_and_every_pod_in_rank_order():
    plan = decide(job(PARAMETER_SERVER), {}, observe(service=False))
    assert plan.create_service
    assert plan.create_pods == [("ps", 0), ("ps", 1), ("worker", 0), ("worker", 1), ("worker", 2)]
    assert plan.status["phase"] == "Pending"
    assert plan.status["startTime"] == "2026-01-01T12:00:00Z"


def test_existing_pods_are_adopted_not_duplicated():
    plan = decide(job(), {}, observe(pod("worker", 0, "Pending")))
    assert plan.create_pods == [("worker", 1)]
    assert not plan.delete_pods


def test_same_input_gives_the_same_plan():
    observed = observe(pod("worker", 0), pod("worker", 1, "Pending"))
    assert decide(job(), RUNNING, observed) == decide(job(), RUNNING, observed)


def test_all_pods_running_means_running():
    plan = decide(job(), {}, observe(pod("worker", 0), pod("worker", 1)))
    assert plan.status["phase"] == "Running"
    assert condition(plan.status, "Running")["status"] == "True"
    assert plan.status["replicaStatuses"]["worker"]["running"] == 2
    assert plan.events == [("Normal", "AllPodsRunning", "2 pods running")]


def test_not_succeeded_while_a_worker_still_runs():
    # kubeflow/trainer#1982: success declared while workers were still running.
    plan = decide(job(), RUNNING, observe(pod("worker", 0, "Succeeded", exit_code=0), pod("worker", 1)))
    assert plan.status["phase"] == "Running"
    assert condition(plan.status, "Succeeded") is None


def test_success_reads_the_result_and_stops_parameter_servers():
    # kubeflow/trainer#774: parameter servers never exit on their own.
    result = '{"metrics": {"accuracy": 0.97}, "metric": "accuracy", "artifact": {"path": "/m", "sha256": "ab"}}'
    plan = decide(job(PARAMETER_SERVER), RUNNING, observe(
        ps_pod("ps", 0), ps_pod("ps", 1),
        *[ps_pod("worker", i, "Succeeded", exit_code=0, message=result if i == 0 else "") for i in range(3)]))
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["result"]["metrics"] == {"accuracy": 0.97}
    assert plan.status["completionTime"] == "2026-01-01T12:00:00Z"
    assert plan.status["progress"]["percent"] == 100.0
    assert sorted(plan.delete_pods) == ["ps-ps-0", "ps-ps-1"]
    assert not plan.create_pods


@pytest.mark.parametrize("policy, deleted", [("Running", ["ps-ps-0"]), ("All", ["ps-ps-0", "ps-worker-0"]), ("None", [])])
def test_clean_pod_policy_after_success(policy, deleted):
    obj = {**PARAMETER_SERVER, "spec": {**PARAMETER_SERVER["spec"], "parameterServer": {"replicas": 1},
                                        "worker": {"replicas": 1}}}
    plan = decide(job(obj, cleanPodPolicy=policy), RUNNING,
                  observe(ps_pod("ps", 0), ps_pod("worker", 0, "Succeeded", exit_code=0)))
    assert sorted(plan.delete_pods) == deleted


def test_finished_job_never_gets_new_pods():
    # kubeflow/trainer#3737, #3779: children recreated after cleanup.
    for phase in ("Succeeded", "Failed"):
        plan = decide(job(), {**RUNNING, "phase": phase, "completionTime": "2026-01-01T11:59:00Z"}, observe(service=False))
        assert plan.create_pods == [] and not plan.create_service
        assert plan.status["phase"] == phase


def test_ttl_after_finished_deletes_the_job_when_due():
    done = {**RUNNING, "phase": "Succeeded", "completionTime": "2026-01-01T11:59:00Z"}
    assert not decide(job(ttlSecondsAfterFinished=120), done, observe()).delete_job
    assert decide(job(ttlSecondsAfterFinished=60), done, observe()).delete_job


def test_retryable_failure_restarts_the_whole_gang():
    plan = decide(job(), RUNNING, observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=1, message="boom")))
    assert plan.status["phase"] == "Restarting"
    assert plan.status["attempt"] == 1 and plan.status["restarts"] == 1
    assert sorted(plan.delete_pods) == ["digits-worker-0", "digits-worker-1"]
    assert plan.create_pods == []  # the old pods must be gone first
    failure = plan.status["lastFailure"]
    assert (failure["pod"], failure["role"], failure["index"], failure["exitCode"]) == ("digits-worker-1", "worker", 1, 1)
    assert failure["message"] == "boom"
    assert condition(plan.status, "Restarting")["status"] == "True"
    assert plan.events[0][0] == "Warning"


def test_gang_restart_waits_for_old_pods_then_creates_the_new_attempt():
    restarting = decide(job(), RUNNING, observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=1))).status
    plan = decide(job(), restarting, observe(pod("worker", 0, deleting_since=NOW), pod("worker", 1, "Failed", exit_code=1)))
    assert plan.create_pods == [] and plan.delete_pods == ["digits-worker-1"]
    assert plan.status["restarts"] == 1  # an old attempt's failure is not counted twice
    plan = decide(job(), plan.status, observe())
    assert plan.create_pods == [("worker", 0), ("worker", 1)]
    assert plan.status["phase"] == "Restarting"
    plan = decide(job(), plan.status, observe(pod("worker", 0, attempt=1), pod("worker", 1, attempt=1)))
    assert plan.status["phase"] == "Running"
    assert condition(plan.status, "Restarting")["status"] == "False"
    assert plan.status["restarts"] == 1 and plan.status["attempt"] == 1


def test_pod_scope_replaces_only_the_failed_pod():
    plan = decide(job(restartScope="Pod"), RUNNING, observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=137)))
    assert plan.delete_pods == ["digits-worker-1"]
    assert plan.status["restarts"] == 1
    # A pod from an earlier attempt is still a member under pod scope.
    plan = decide(job(restartScope="Pod"), {**RUNNING, "attempt": 1}, observe(pod("worker", 0), pod("worker", 1, attempt=1)))
    assert plan.delete_pods == [] and plan.status["phase"] == "Running"


def test_pod_scope_counts_a_failure_once_across_a_crash_between_status_and_delete():
    failed = pod("worker", 1, "Failed", exit_code=137)
    first = decide(job(restartScope="Pod"), RUNNING, observe(pod("worker", 0), failed))
    assert first.status["countedFailures"] == [failed.uid] and first.status["restarts"] == 1
    # The status was written and the operator died before the delete: the pod is still there.
    again = decide(job(restartScope="Pod"), first.status, observe(pod("worker", 0), failed))
    assert again.delete_pods == ["digits-worker-1"]
    assert (again.status["restarts"], again.status["attempt"]) == (1, 1)
    # Once it is gone its slot is filled, and the list is removed from the status (null in the patch).
    done = decide(job(restartScope="Pod"), again.status, observe(pod("worker", 0)))
    assert done.create_pods == [("worker", 1)] and done.status["countedFailures"] is None
    assert (done.status["restarts"], done.status["attempt"]) == (1, 1)
    # A later failure of the other pod (an older attempt's) is a new one, and counted.
    stored = {k: v for k, v in done.status.items() if v is not None}
    later = decide(job(restartScope="Pod"), stored, observe(pod("worker", 0, "Failed", exit_code=137),
                                                             pod("worker", 1, attempt=1)))
    assert later.delete_pods == ["digits-worker-0"] and later.status["restarts"] == 2
    assert later.status["countedFailures"] == ["uid-worker-0-0"]


@pytest.mark.parametrize("code, phase", [(1, "Failed"), (2, "Failed"), (127, "Failed"), (137, "Restarting"), (143, "Restarting")])
def test_exit_code_policy_splits_permanent_and_retryable(code, phase):
    # kubeflow/trainer#2044: a permanent exit code left the job Restarting forever.
    plan = decide(job(restartPolicy="ExitCode"), RUNNING, observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=code)))
    assert plan.status["phase"] == phase
    if phase == "Failed":
        assert condition(plan.status, "Failed")["reason"] == "PodFailedPermanently"
        assert f"exit code {code}" in plan.status["message"]


def test_failed_job_stops_the_pods_still_running():
    # kubeflow/trainer#1579: a worker failed, the job was Failed, and the master kept running.
    plan = decide(job(PARAMETER_SERVER, restartPolicy="Never"), RUNNING, observe(
        ps_pod("ps", 0), ps_pod("ps", 1), ps_pod("worker", 0, "Failed", exit_code=1), ps_pod("worker", 1), ps_pod("worker", 2)))
    assert plan.status["phase"] == "Failed"
    assert sorted(plan.delete_pods) == ["ps-ps-0", "ps-ps-1", "ps-worker-1", "ps-worker-2"]


def test_one_failed_pod_does_not_leave_the_job_running():
    # volcano#1099: with no policy the job stayed Running until every pod ended.
    plan = decide(job(PARAMETER_SERVER), RUNNING, observe(
        ps_pod("ps", 0), ps_pod("ps", 1), ps_pod("worker", 0), ps_pod("worker", 1), ps_pod("worker", 2, "Failed", exit_code=1)))
    assert plan.status["phase"] == "Restarting"


def test_backoff_limit_ends_in_failed():
    plan = decide(job(backoffLimit=2), {**RUNNING, "restarts": 2, "attempt": 2},
                  observe(pod("worker", 0, attempt=2), pod("worker", 1, "Failed", attempt=2, exit_code=1)))
    assert plan.status["phase"] == "Failed"
    assert condition(plan.status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert plan.delete_pods == ["digits-worker-0"]


def test_backoff_limit_zero_fails_on_first_failure():
    plan = decide(job(backoffLimit=0), RUNNING, observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=1)))
    assert plan.status["phase"] == "Failed"


def test_eviction_is_retried_without_charging_the_user():
    plan = decide(job(backoffLimit=0, restartPolicy="Never"), RUNNING,
                  observe(pod("worker", 0), pod("worker", 1, "Failed", reason="Evicted", message="node low on memory")))
    assert plan.status["phase"] == "Restarting"
    assert plan.status["restarts"] == 0 and plan.status["infrastructureRestarts"] == 1
    assert plan.status["lastFailure"]["reason"] == "Evicted"


def test_infrastructure_restarts_are_bounded():
    status = {**RUNNING, "infrastructureRestarts": INFRASTRUCTURE_RESTART_LIMIT}
    plan = decide(job(), status, observe(pod("worker", 0), pod("worker", 1, "Failed", reason="Evicted")))
    assert plan.status["phase"] == "Failed"
    assert condition(plan.status, "Failed")["reason"] == "InfrastructureRestartLimitExceeded"


def test_a_running_gang_member_that_vanishes_restarts_the_gang():
    plan = decide(job(), RUNNING, observe(pod("worker", 0)))
    assert plan.status["phase"] == "Restarting"
    assert plan.delete_pods == ["digits-worker-0"]
    assert "digits-worker-1" in plan.status["message"]


def test_a_running_gang_member_seen_while_deleted_by_hand_restarts_the_gang():
    # A watch shows the pod Terminating before it is gone; that pass must not take the gang back
    # to Pending, or the next pass, no longer Running, recreates the pod in the same attempt.
    plan = decide(job(), RUNNING, observe(pod("worker", 0), pod("worker", 1, deleting_since=NOW)))
    assert plan.status["phase"] == "Restarting" and plan.status["infrastructureRestarts"] == 1
    assert plan.delete_pods == ["digits-worker-0"] and plan.create_pods == []


def test_a_missing_pod_before_the_gang_ran_is_simply_created():
    plan = decide(job(), {**RUNNING, "phase": "Pending"}, observe(pod("worker", 0)))
    assert plan.create_pods == [("worker", 1)] and not plan.delete_pods


def test_pods_from_a_smaller_spec_are_removed():
    plan = decide(job(), RUNNING, observe(pod("worker", 0), pod("worker", 1), pod("worker", 2)))
    assert plan.delete_pods == ["digits-worker-2"]


def test_unschedulable_pods_say_why():
    # kubeflow/trainer#2001, #1282: unschedulable pods kept a job "Created" with no reason.
    why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    plan = decide(job(), {}, observe(pod("worker", 0, "Pending", unschedulable=why), pod("worker", 1, "Pending")))
    running = condition(plan.status, "Running")
    assert running["status"] == "False" and running["reason"] == "Unschedulable"
    assert why in running["message"]


def test_startup_deadline_fails_with_the_real_reason():
    status = {**RUNNING, "phase": "Pending", "attemptStartTime": "2026-01-01T11:58:00Z"}
    observed = observe(pod("worker", 0), pod("worker", 1, "Pending", waiting="ImagePullBackOff"))
    assert decide(job(startupDeadlineSeconds=300), status, observed).status["phase"] == "Pending"
    plan = decide(job(startupDeadlineSeconds=60), status, observed)
    assert plan.status["phase"] == "Failed"
    assert condition(plan.status, "Failed")["reason"] == "StartupDeadlineExceeded"
    assert "digits-worker-1: ImagePullBackOff" in plan.status["message"]
    assert sorted(plan.delete_pods) == ["digits-worker-0", "digits-worker-1"]


def test_active_deadline_fails_the_job():
    plan = decide(job(activeDeadlineSeconds=3600), RUNNING, observe(pod("worker", 0), pod("worker", 1)))
    assert plan.status["phase"] == "Failed"
    assert condition(plan.status, "Failed")["reason"] == "DeadlineExceeded"
    assert sorted(plan.delete_pods) == ["digits-worker-0", "digits-worker-1"]
    assert decide(job(activeDeadlineSeconds=3601), RUNNING, observe(pod("worker", 0), pod("worker", 1))).status["phase"] == "Running"


def test_pod_stuck_terminating_is_force_deleted():
    # kubeflow/trainer#2072, #720: a pod stuck Terminating on a dead node blocked the job forever.
    status = {**RUNNING, "phase": "Restarting", "attempt": 1}
    fresh = decide(job(), status, observe(pod("worker", 0, deleting_since=NOW - timedelta(seconds=60))))
    assert fresh.force_delete_pods == []
    stuck = decide(job(), status, observe(pod("worker", 0, deleting_since=NOW - timedelta(seconds=91))))
    assert stuck.force_delete_pods == ["digits-worker-0"]
    assert stuck.create_pods == [("worker", 1)]


def test_suspend_deletes_pods_and_resume_recreates_them():
    plan = decide(job(suspend=True), RUNNING, observe(pod("worker", 0), pod("worker", 1)))
    assert plan.status["phase"] == "Suspended"
    assert sorted(plan.delete_pods) == ["digits-worker-0", "digits-worker-1"]
    assert condition(plan.status, "Suspended")["status"] == "True"
    assert plan.create_pods == []
    resumed = decide(job(), plan.status, observe())
    assert resumed.create_pods == [("worker", 0), ("worker", 1)]
    assert condition(resumed.status, "Suspended")["status"] == "False"
    assert resumed.status["startTime"] == "2026-01-01T12:00:00Z"  # the deadline clock restarts
    assert resumed.status["restarts"] == 0


def test_a_job_created_suspended_creates_nothing():
    plan = decide(job(suspend=True), {}, observe(service=False))
    assert plan.create_pods == [] and not plan.create_service
    assert plan.status["phase"] == "Suspended"


def test_progress_written_by_a_report_survives_the_reconcile():
    report = {"step": 10, "totalSteps": 100, "percent": 10.0, "updateTime": "2026-01-01T11:59:59Z"}
    plan = decide(job(), {**RUNNING, "progress": report}, observe(pod("worker", 0), pod("worker", 1)))
    assert plan.status["progress"] == report


def test_conditions_keep_their_transition_time_while_unchanged():
    first = decide(job(), {}, observe(pod("worker", 0), pod("worker", 1)))
    later = decide(job(), first.status, observe(pod("worker", 0), pod("worker", 1), now=NOW + timedelta(minutes=5)))
    assert condition(later.status, "Running")["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert later.status == first.status and later.events == []


def test_invalid_spec_is_failed_naming_the_field():
    status = invalid_spec({}, "spec.trainer.model.name", "must be one of mlp, cnn, module; got 'resnet9000'", NOW, 3)
    assert status["phase"] == "Failed"
    failed = condition(status, "Failed")
    assert failed["reason"] == "InvalidSpec" and failed["message"].startswith("spec.trainer.model.name")
    assert failed["observedGeneration"] == 3
    assert invalid_spec(status, "spec.trainer.model.name", "must be one of mlp, cnn, module; got 'resnet9000'",
                        NOW + timedelta(minutes=1), 3) == status


@pytest.mark.parametrize("policy", ["Never", "OnFailure", "ExitCode"])
def test_a_rank_stopped_by_sigterm_is_an_infrastructure_restart(policy):
    # The trainer checkpoints on SIGTERM and exits 143 (preemption, drain): never the user's budget.
    plan = decide(job(backoffLimit=0, restartPolicy=policy), RUNNING,
                  observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=143)))
    assert plan.status["phase"] == "Restarting"
    assert plan.status["restarts"] == 0 and plan.status["infrastructureRestarts"] == 1
    assert plan.status["lastFailure"]["exitCode"] == 143


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_peers_lost_in_the_wake_of_a_stopped_rank_are_not_charged(policy):
    plan = decide(job(backoffLimit=0, restartPolicy=policy), RUNNING,
                  observe(pod("worker", 0, "Failed", exit_code=170), pod("worker", 1, "Failed", exit_code=143)))
    assert plan.status["phase"] == "Restarting"
    assert plan.status["restarts"] == 0 and plan.status["infrastructureRestarts"] == 1
    assert plan.status["lastFailure"]["pod"] == "digits-worker-1"


def test_a_lost_peer_alone_is_charged_to_the_user():
    plan = decide(job(backoffLimit=3), RUNNING, observe(pod("worker", 0), pod("worker", 1, "Failed", exit_code=170)))
    assert plan.status["phase"] == "Restarting"
    assert plan.status["restarts"] == 1 and plan.status.get("infrastructureRestarts", 0) == 0


def running_since(when: str, progress: dict | None = None) -> dict:
    status = {**RUNNING, "conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning",
                                         "message": "", "lastTransitionTime": when, "observedGeneration": 1}]}
    return {**status, "progress": progress} if progress is not None else status


@pytest.mark.parametrize("case, status, deadline, hung", [
    ("stepped two minutes ago", running_since("2026-01-01T11:00:00Z", {"step": 40, "stepTime": "2026-01-01T11:58:00Z"}), 300, False),
    ("no new step for ten minutes", running_since("2026-01-01T11:00:00Z", {"step": 40, "stepTime": "2026-01-01T11:50:00Z"}), 300, True),
    ("never reported since running for ten minutes", running_since("2026-01-01T11:50:00Z"), 300, True),
    ("running again for two minutes; the old step is the previous attempt's",
     running_since("2026-01-01T11:58:00Z", {"step": 40, "stepTime": "2026-01-01T11:00:00Z"}), 300, False),
    ("no deadline set", running_since("2026-01-01T11:00:00Z"), None, False),
    ("still starting (Pending)", {**running_since("2026-01-01T11:00:00Z"), "phase": "Pending"}, 300, False),
])
def test_the_progress_watchdog(case, status, deadline, hung):
    policy = {"progressDeadlineSeconds": deadline} if deadline else {}
    plan = decide(job(restartScope="Pod", **policy), status, observe(pod("worker", 0), pod("worker", 1)))
    assert (plan.status["phase"] == "Restarting") == hung, case
    if hung:
        # A hang is the gang's, not one pod's: every pod goes, even under restartScope Pod, and
        # the user's budget is not charged.
        assert sorted(plan.delete_pods) == ["digits-worker-0", "digits-worker-1"]
        assert plan.status["infrastructureRestarts"] == 1 and plan.status["restarts"] == 0
        # No attempt label marks them as the old gang under pod scope: their UIDs do, in case the
        # operator stops between this status and the deletes.
        assert sorted(plan.status["countedFailures"]) == ["uid-worker-0-0", "uid-worker-1-0"]
        assert condition(plan.status, "Restarting")["reason"] == "ProgressDeadlineExceeded"
        assert "progressDeadlineSeconds=300s" in plan.status["message"]
        assert plan.status["lastFailure"]["reason"] == "ProgressDeadlineExceeded"
        assert ("Warning", "ProgressDeadlineExceeded") in [(kind, reason) for kind, reason, _ in plan.events]


def test_the_watchdog_is_off_when_pods_cannot_report_progress():
    status = running_since("2026-01-01T11:00:00Z")
    observed = Observed(pods=(pod("worker", 0), pod("worker", 1)), service_exists=True, now=NOW, progress_reported=False)
    assert decide(job(progressDeadlineSeconds=60), status, observed).status["phase"] == "Running"


def on_node(view, node):
    return replace(view, node=node)


def faulty(node: str, seconds_ago: float, reason: str = "NodeNotReady") -> dict:
    return {node: NodeFault(node, reason, NOW - timedelta(seconds=seconds_ago), "KubeletNotReady: runtime down")}


def observe_nodes(*pods, node_faults, limit=60.0):
    return Observed(pods=tuple(pods), service_exists=True, now=NOW, node_faults=node_faults, node_failure_seconds=limit)


@pytest.mark.parametrize("reason", ["NodeNotReady", "NodeLost"])
def test_a_gang_on_a_faulty_node_moves_once_the_operators_bound_passes(reason):
    # kubeflow/trainer#2072: pods stuck on a dead node kept a job Restarting forever.
    pods = (on_node(pod("worker", 0), "good"), on_node(pod("worker", 1), "bad"))
    waiting = decide(job(backoffLimit=0), RUNNING, observe_nodes(*pods, node_faults=faulty("bad", 30, reason)))
    assert waiting.status["phase"] == "Running" and not waiting.delete_pods and not waiting.force_delete_pods

    plan = decide(job(backoffLimit=0), RUNNING, observe_nodes(*pods, node_faults=faulty("bad", 61, reason)))
    assert plan.status["phase"] == "Restarting"
    assert plan.status["infrastructureRestarts"] == 1 and plan.status["restarts"] == 0
    assert condition(plan.status, "Restarting")["reason"] == reason
    assert "node bad is" in condition(plan.status, "Restarting")["message"]
    assert plan.status["lastFailure"]["pod"] == "digits-worker-1"
    # No kubelet will confirm a deletion on the bad node: that pod is force-deleted, at once.
    assert plan.force_delete_pods == ["digits-worker-1"] and plan.delete_pods == ["digits-worker-0"]


def test_under_pod_scope_only_the_stranded_pod_moves():
    pods = (on_node(pod("worker", 0), "good"), on_node(pod("worker", 1), "bad"))
    plan = decide(job(restartScope="Pod"), RUNNING, observe_nodes(*pods, node_faults=faulty("bad", 120)))
    assert plan.force_delete_pods == ["digits-worker-1"] and plan.delete_pods == []


def test_a_pod_terminating_on_a_faulty_node_does_not_block_the_next_attempt():
    restarting = {**RUNNING, "phase": "Restarting", "attempt": 1, "infrastructureRestarts": 1}
    stuck = on_node(pod("worker", 1, deleting_since=NOW - timedelta(seconds=5)), "bad")
    plan = decide(job(), restarting, observe_nodes(stuck, node_faults=faulty("bad", 70)))
    assert plan.force_delete_pods == ["digits-worker-1"]


def test_a_finished_job_force_deletes_its_pods_on_a_faulty_node():
    done = {**RUNNING, "phase": "Failed"}
    plan = decide(job(cleanPodPolicy="All"), done, observe_nodes(on_node(pod("worker", 0), "bad"),
                                                                 node_faults=faulty("bad", 10)))
    assert plan.force_delete_pods == ["digits-worker-0"] and plan.delete_pods == []


def test_a_status_that_differs_in_details_alone_is_told_from_one_that_says_more():
    condition = {"type": "Running", "status": "False", "reason": "PodsPending", "message": "a: Pending; b: Pending"}
    before = {"phase": "Pending", "attempt": 0, "message": "a: Pending; b: Pending", "conditions": [condition],
              "replicaStatuses": {"worker": {"pending": 2, "running": 0}}}
    after = {**before, "message": "b: Pending", "conditions": [{**condition, "message": "b: Pending"}],
             "replicaStatuses": {"worker": {"pending": 1, "running": 1}}}
    assert detail_only(before, after)
    assert not detail_only(before, {**after, "phase": "Running"})
    assert not detail_only(before, {**after, "conditions": [{**condition, "reason": "ImagePullBackOff"}]})
    assert not detail_only(before, {**after, "attempt": 1})
