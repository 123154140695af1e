"""The serving decision as tables: observed versions and health -> which version serves, and why."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serving import NOW, condition, decide, health, md, observe, serving, version


# --- first rollout --------------------------------------------------------------------------------


def test_latest_passing_serves_the_newest_version_once_it_is_ready():
    versions = [version(1), version(2)]
    plan = decide(md(), {}, observe(versions))
    assert plan.switch is None  # nothing is ready: no Service, never a selector pointing at nothing
    assert plan.replicas == {1: 1, 2: 1}  # the target and its warm standby
    assert condition(plan.status, "Available")["status"] == "False"
    plan = decide(md(), plan.status, observe(versions, [health(1), health(2)]))
    assert (plan.switch.from_version, plan.switch.to_version, plan.switch.reason) == (None, 2, "promotion")
    assert plan.status["activeVersion"] == 2
    assert condition(plan.status, "Available")["status"] == "True"
    assert plan.version_status[2]["phase"] == "Active" and plan.version_status[1]["phase"] == "Standby"


def test_a_first_rollout_whose_target_crash_loops_serves_the_standby():
    plan = decide(md(), {}, observe([version(1), version(2)], [health(1), health(2, 0, crashing=1)]))
    assert (plan.switch.from_version, plan.switch.to_version, plan.switch.reason) == (None, 1, "failover")
    assert condition(plan.status, "Degraded")["reason"] == "TargetCrashLooping"
    assert plan.status["targetVersion"] == 2  # still the version that should serve, once it can


def test_pinned_serves_the_pinned_version_and_ignores_newer_ones():
    versions = [version(1), version(2), version(3, 0.99)]
    plan = decide(md(policy="Pinned", activeVersion=2), {}, observe(versions, [health(1), health(2)]))
    assert plan.switch.to_version == 2 and plan.switch.reason == "manual"
    assert 3 not in plan.replicas and "candidateVersion" not in plan.status


# --- promotion gate -------------------------------------------------------------------------------


@pytest.mark.parametrize("gate, new_metrics, passes", [
    ({}, {"accuracy": 0.93}, True),
    ({}, {"accuracy": 0.92}, True),  # no worse
    ({}, {"accuracy": 0.91}, False),
    ({"maxRegression": 0.02}, {"accuracy": 0.905}, True),
    ({"metric": "loss"}, {"accuracy": 0.5, "loss": 0.2}, True),  # loss: lower is better
    ({"metric": "loss"}, {"accuracy": 0.99, "loss": 0.4}, False),
    ({"metric": "loss", "higherIsBetter": True}, {"accuracy": 0.5, "loss": 0.4}, True),
    ({"metric": "f1"}, {"accuracy": 0.99}, False),  # the candidate lacks the gate's metric
])
def test_gate(gate, new_metrics, passes):
    deployment = md(gate=gate)
    old = version(2, metrics={"accuracy": 0.92, "loss": 0.3, "f1": 0.5})
    plan = decide(deployment, serving(2), observe([old, version(3, metrics=new_metrics)], [health(2)], selected=2))
    if passes:
        assert plan.status["candidateVersion"] == 3 and plan.replicas[3] == 1
        assert not plan.rejected
    else:
        assert plan.rejected == [3] and 3 not in plan.replicas  # a rejected version is never deployed
        assert plan.version_status[3]["phase"] == "Rejected" and plan.version_status[3]["reason"] == "GateRejected"
        entry = plan.status["history"][-1]
        assert (entry["from"], entry["to"], entry["reason"]) == (2, 3, "gate-rejected")
        assert plan.events[0][:2] == ("Warning", "GateRejected")
    assert plan.switch is None and plan.status["activeVersion"] == 2


def test_passing_candidate_is_promoted_once_ready_and_the_old_version_stays_warm():
    versions = [version(1), version(2, 0.92), version(3, 0.95)]
    first = decide(md(), serving(2), observe(versions, [health(1), health(2), health(3, 0, ready_since=None)], selected=2))
    assert first.switch is None and first.status["candidateVersion"] == 3
    assert condition(first.status, "Progressing")["reason"] == "CandidateDeploying"
    plan = decide(md(), first.status, observe(versions, [health(1), health(2), health(3)], selected=2))
    assert (plan.switch.from_version, plan.switch.to_version, plan.switch.reason) == (2, 3, "promotion")
    assert plan.status["previousVersion"] == 2 and "candidateVersion" not in plan.status
    assert plan.replicas[2] == 1 and plan.replicas[1] == 0  # standby=1: v2 warm, v1 retired


def test_crash_looping_candidate_is_rejected_and_traffic_stays():
    versions = [version(2, 0.92), version(3, 0.95)]
    plan = decide(md(), serving(2), observe(versions, [health(2), health(3, 0, crashing=1)], selected=2))
    assert plan.switch is None and plan.rejected == [3]
    assert plan.version_status[3]["reason"] == "CrashLooping"
    assert plan.replicas[3] == 0 and plan.status["evaluatedVersion"] == 3  # its Deployment is retired


def test_rejected_versions_are_not_candidates_again():
    versions = [version(2, 0.92), version(3, 0.5, phase="Rejected")]
    plan = decide(md(), serving(2, evaluatedVersion=2), observe(versions, [health(2)], selected=2))
    assert "candidateVersion" not in plan.status and not plan.rejected


# --- failover -------------------------------------------------------------------------------------

THREE = [version(1), version(2), version(3)]


def test_active_below_the_floor_within_the_grace_period_waits_and_schedules_a_recheck():
    plan = decide(md(standby=2), serving(3), observe(THREE, [health(1), health(2), health(3, 0)], selected=3))
    assert plan.switch is None
    assert plan.status["unhealthySince"] == "2026-01-01T12:00:00.000000Z"
    assert plan.recheck_after == pytest.approx(1.0)
    assert condition(plan.status, "Available")["reason"] == "ActiveUnhealthy"


def test_after_the_grace_period_traffic_fails_over_to_the_newest_healthy_standby():
    previous = serving(3, unhealthySince="2026-01-01T11:59:58.500000Z")
    plan = decide(md(standby=2), previous, observe(THREE, [health(1), health(2), health(3, 0)], selected=3))
    assert (plan.switch.from_version, plan.switch.to_version, plan.switch.reason) == (3, 2, "failover")
    assert plan.switch.latency == pytest.approx(1.5)
    assert "unhealthySince" not in plan.status
    assert plan.replicas[3] == 1  # the target stays deployed, to take traffic back when it recovers
    assert condition(plan.status, "Degraded")["reason"] == "FailedOver"
    assert plan.events[0][:2] == ("Warning", "FailedOver")


def test_an_unhealthy_standby_is_skipped():
    previous = serving(3, unhealthySince="2026-01-01T11:59:00.000000Z")
    plan = decide(md(standby=2), previous, observe(THREE, [health(1), health(2, 0), health(3, 0)], selected=3))
    assert plan.switch.to_version == 1


def test_no_healthy_standby_keeps_traffic_and_raises_degraded():
    previous = serving(3, unhealthySince="2026-01-01T11:59:00.000000Z")
    plan = decide(md(standby=2), previous, observe(THREE, [health(1, 0), health(2, crashing=1, ready=0), health(3, 0)], selected=3))
    assert plan.switch is None and plan.status["activeVersion"] == 3
    degraded = condition(plan.status, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "NoHealthyStandby"
    assert "v2 is crash-looping" in degraded["message"] and "v1 has 0 ready" in degraded["message"]
    assert ("Warning", "NoHealthyStandby", degraded["message"]) in plan.events


def test_a_crash_looping_active_version_fails_over_at_once():
    plan = decide(md(), serving(3), observe(THREE, [health(2), health(3, 0, crashing=1)], selected=3))
    assert plan.switch.to_version == 2 and plan.switch.reason == "failover"
    assert "CrashLoopBackOff" in plan.switch.message


def test_one_crash_looping_pod_among_enough_ready_ones_is_not_a_failover():
    deployment = md(replicas=3)
    plan = decide(deployment, serving(3), observe(THREE, [health(2, 3, replicas=3), health(3, 2, replicas=3, crashing=1)], selected=3))
    assert plan.switch is None and "unhealthySince" not in plan.status


def test_operator_restart_with_a_healthy_active_version_changes_nothing():
    observed = observe(THREE, [health(2), health(3)], selected=3)
    settled = decide(md(), serving(3), observed).status
    plan = decide(md(), settled, observe(THREE, [health(2), health(3)], selected=3, now=NOW + timedelta(hours=1)))
    assert plan.switch is None and not plan.events and not plan.delete
    assert plan.status == settled  # nothing to write: not even a condition's time moves


def test_operator_restart_remembers_an_unhealthy_active_version():
    first = decide(md(), serving(3), observe(THREE, [health(2), health(3, 0)], selected=3))
    # The operator restarts; 0.4 s later it sees the same world: the grace period is not restarted.
    again = decide(md(), first.status, observe(THREE, [health(2), health(3, 0)], selected=3, now=NOW + timedelta(seconds=0.4)))
    assert again.switch is None and again.recheck_after == pytest.approx(0.6)
    done = decide(md(), again.status, observe(THREE, [health(2), health(3, 0)], selected=3, now=NOW + timedelta(seconds=1)))
    assert done.switch.to_version == 2


def test_traffic_returns_to_the_target_once_it_stayed_healthy_for_the_grace_period():
    failed_over = serving(3, activeVersion=2)
    observed = observe(THREE, [health(2), health(3)], selected=2)
    hold = decide(md(), failed_over, observed)
    assert hold.switch is None and hold.recheck_after == pytest.approx(1.0)
    back = decide(md(), hold.status, observe(THREE, [health(2), health(3)], selected=2, now=NOW + timedelta(seconds=1)))
    assert (back.switch.from_version, back.switch.to_version, back.switch.reason) == (2, 3, "failback")
    assert condition(back.status, "Degraded")["status"] == "False"


# --- manual rollback ------------------------------------------------------------------------------


def test_manual_rollback_to_a_retired_version_scales_it_up_then_switches():
    deployment = md(activeVersion=1)
    observed = observe(THREE, [health(1, 0, replicas=0), health(2), health(3)], selected=3)
    plan = decide(deployment, serving(3), observed)
    assert plan.switch is None and plan.replicas[1] == 1
    assert condition(plan.status, "Progressing")["reason"] == "SwitchPending"
    assert plan.status["activeVersion"] == 3  # traffic stays until v1 is ready
    ready = decide(deployment, plan.status, observe(THREE, [health(1), health(2), health(3)], selected=3,
                                                     now=NOW + timedelta(seconds=2)))
    assert (ready.switch.to_version, ready.switch.reason) == (1, "manual")
    assert ready.switch.latency == pytest.approx(2.0)
    assert ready.replicas[2] == 0 and ready.replicas[3] == 0  # nothing below v1 to keep warm


@pytest.mark.parametrize("policy, scaled, deleted", [("ScaleToZero", {3: 0}, []), ("Delete", {}, [3])])
def test_retired_versions_follow_the_policy(policy, scaled, deleted):
    deployment = md(activeVersion=2, retiredVersions=policy)
    plan = decide(deployment, serving(3), observe(THREE, [health(1), health(2), health(3)], selected=3))
    assert plan.switch.to_version == 2
    assert {v: r for v, r in plan.replicas.items() if r == 0} == scaled
    assert plan.delete == deleted
    assert plan.version_status[3]["phase"] == "Retired"


def test_rollback_to_a_version_that_does_not_exist_keeps_traffic():
    plan = decide(md(activeVersion=9), serving(3), observe(THREE, [health(2), health(3)], selected=3))
    assert plan.switch is None and plan.status["activeVersion"] == 3
    assert condition(plan.status, "Degraded")["reason"] == "VersionNotFound"
    assert condition(plan.status, "Progressing")["reason"] == "VersionNotFound"


def test_the_service_is_the_truth_about_the_active_version():
    plan = decide(md(), serving(3), observe(THREE, [health(2), health(3)], selected=2))
    assert plan.status["activeVersion"] == 2


def test_history_keeps_the_last_twenty_entries():
    previous = serving(2, history=[{"to": 1, "reason": "manual", "time": "t"}] * 20)
    plan = decide(md(activeVersion=3), previous, observe(THREE, [health(2), health(3)], selected=2))
    assert len(plan.status["history"]) == 20 and plan.status["history"][-1]["to"] == 3


# --- golden request --------------------------------------------------------------------------------

GOLDEN = {"goldenRequest": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}}


def test_a_switch_waits_for_the_golden_request():
    previous = serving(3, unhealthySince="2026-01-01T11:59:00.000000Z")
    observed = observe(THREE, [health(1), health(2), health(3, 0)], selected=3)
    plan = decide(md(standby=2, verification=GOLDEN), previous, observed)
    assert plan.switch is None and plan.verify == [2]


def test_a_standby_that_fails_its_golden_request_is_skipped():
    previous = serving(3, unhealthySince="2026-01-01T11:59:00.000000Z")
    observed = observe(THREE, [health(1), health(2), health(3, 0)], selected=3, verified={2: False, 1: True})
    plan = decide(md(standby=2, verification=GOLDEN), previous, observed)
    assert plan.switch.to_version == 1


def test_same_input_gives_the_same_plan():
    observed = observe(THREE, [health(1), health(2), health(3, 0)], selected=3)
    assert decide(md(), serving(3), observed) == decide(md(), serving(3), observed)
