"""The one reconcile decision: a job, its observed pods and the time -> a plan.

``decide`` is pure. It reads the previous status only for what cannot be observed (attempt and
restart counts, start and completion times, whether the gang had been running), and returns the
complete next status together with the pod and Service actions that move the world towards it.
Calling it twice on the same input gives the same plan, which is what makes the reconcile
level-based: any trigger (a create, an update, a pod event, the resync timer) leads here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from torchyard.api.trainingjob import TrainingJob
from torchyard.builders import gang
from torchyard.builders.names import pod_name
from torchyard.builders.strategies import strategy_for
from torchyard.reconcile import conditions as cond
from torchyard.reconcile.failures import Failure, classify
from torchyard.reconcile import faults
from torchyard.reconcile.nodes import NodeFault
from torchyard.reconcile.observe import PodView, parse_time
from torchyard_spec import contract

# Restarts caused by the infrastructure (eviction, node loss) are not charged to backoffLimit,
# but they are bounded too, so that a broken cluster cannot restart a job forever.
INFRASTRUCTURE_RESTART_LIMIT = 10

PENDING, RUNNING, RESTARTING = "Pending", "Running", "Restarting"
COUNTED = "countedFailures"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"
TERMINAL = (SUCCEEDED, FAILED)
# Reasons of a job in gang mode (spec.runPolicy.gangScheduling) that waits: the cluster cannot
# place all of its pods together, or does not serve the gang API at all.
GANG_NOT_SCHEDULABLE = "GangNotSchedulable"
GANG_UNAVAILABLE = "GangSchedulingUnavailable"


@dataclass
class Plan:
    status: dict[str, Any]
    create_service: bool = False
    create_pods: list[tuple[str, int]] = field(default_factory=list)  # (role, index)
    delete_pods: list[str] = field(default_factory=list)
    force_delete_pods: list[str] = field(default_factory=list)
    delete_job: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    create_workload: bool = False  # the gang's Workload, before the pods (gang mode only)


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodView, ...]
    service_exists: bool
    now: datetime
    stuck_terminating_seconds: float = 60.0
    progress_reported: bool = True  # whether pods can reach the progress endpoint at all
    node_faults: Mapping[str, NodeFault] = field(default_factory=dict)  # by node name
    node_failure_seconds: float = 60.0  # how long a gang may sit on a faulty node before it moves
    gang_api_served: bool = True  # whether the cluster serves the gang API (asked for gang mode only)


def decide(job: TrainingJob, previous: Mapping[str, Any], observed: Observed) -> Plan:
    status = _carry(previous, job)
    plan = Plan(status=status)
    phase = previous.get("phase") or ""
    if phase in TERMINAL:
        _finished(job, observed, plan)
    elif job.spec.run_policy.suspend:
        _suspend(job, observed, plan)
    else:
        _active(job, previous, observed, plan)
    _counted_once(previous, plan.status)
    plan.delete_pods = list(dict.fromkeys(plan.delete_pods))
    plan.delete_pods, forced = faults.spare_faulty_nodes(observed.pods, observed.node_faults, plan.delete_pods)
    plan.force_delete_pods = list(dict.fromkeys(plan.force_delete_pods + forced))
    _summarise(job, observed, plan)
    _announce(phase, plan)
    return plan


def invalid_spec(previous: Mapping[str, Any], field_path: str, problem: str, now: datetime, generation: int) -> dict:
    """Status of a job whose spec the operator cannot run: Failed, naming the field, for good."""
    status = dict(previous)
    message = f"{field_path} {problem}"
    status.update(phase=FAILED, message=message, observedGeneration=generation)
    status.setdefault("completionTime", cond.timestamp(now))
    conditions = list(previous.get("conditions") or [])
    conditions = cond.set_condition(conditions, cond.FAILED, True, "InvalidSpec", message, now, generation)
    status["conditions"] = cond.set_condition(conditions, cond.RUNNING, False, "InvalidSpec", message, now, generation)
    return status


def _carry(previous: Mapping[str, Any], job: TrainingJob) -> dict[str, Any]:
    keep = ("phase", "conditions", "restarts", "infrastructureRestarts", "attempt", "lastFailure", "startTime",
            "attemptStartTime", "completionTime", "progress", "result", "message")
    status = {k: previous[k] for k in keep if k in previous}
    status.setdefault("restarts", 0)
    status.setdefault("attempt", 0)
    status["conditions"] = list(status.get("conditions") or [])
    status["observedGeneration"] = job.generation
    return status


def _counted_once(previous: Mapping[str, Any], status: dict[str, Any]) -> None:
    """status.countedFailures lists the failed pods a restartScope Pod restart counted and is
    replacing. The status goes first, then the deletes (jobs.py): a crash in between leaves a pod
    listed there, which the next pass deletes without counting it again. Written only while it
    lists a pod; null (removed by the merge patch) once it lists none."""
    if not status.get(COUNTED):
        status.pop(COUNTED, None)
        if previous.get(COUNTED):
            status[COUNTED] = None


# --- terminal -----------------------------------------------------------------------------------


def _finished(job: TrainingJob, observed: Observed, plan: Plan) -> None:
    """A finished job never gets new pods; it only cleans up and, after its TTL, goes away."""
    policy = job.spec.run_policy
    for pod in observed.pods:
        if pod.deleting:
            _force_if_stuck(pod, observed, plan)
        elif policy.clean_pod_policy == "All" or (policy.clean_pod_policy == "Running" and not pod.finished):
            plan.delete_pods.append(pod.name)
    completed = parse_time(plan.status.get("completionTime"))
    ttl = policy.ttl_seconds_after_finished
    if ttl is not None and completed is not None and observed.now >= completed + timedelta(seconds=ttl):
        plan.delete_job = True


# --- suspended ----------------------------------------------------------------------------------


def _suspend(job: TrainingJob, observed: Observed, plan: Plan) -> None:
    for pod in observed.pods:
        if pod.deleting:
            _force_if_stuck(pod, observed, plan)
        else:
            plan.delete_pods.append(pod.name)
    _set_phase(plan, job, observed.now, SUSPENDED, "JobSuspended", "spec.runPolicy.suspend is true; pods deleted")


# --- running ------------------------------------------------------------------------------------


def _active(job: TrainingJob, previous: Mapping[str, Any], observed: Observed, plan: Plan) -> None:
    status, now = plan.status, observed.now
    if previous.get("phase") == SUSPENDED or "startTime" not in status:
        # Deadlines count running time only: a resumed job starts its clock again.
        status["startTime"] = status["attemptStartTime"] = cond.timestamp(now)
    if not observed.service_exists:
        plan.create_service = True

    scope_gang = job.spec.run_policy.restart_scope == "Gang"
    slots = _slots(job)
    counted = set(previous.get(COUNTED) or ())
    current: dict[tuple[str, int], PodView] = {}
    for pod in observed.pods:
        if pod.deleting:
            _force_if_stuck(pod, observed, plan)
        elif (pod.role, pod.index) not in slots:
            plan.delete_pods.append(pod.name)  # left over from a spec with more replicas
        elif pod.uid in counted:
            plan.delete_pods.append(pod.name)  # its failure is counted; a crash cut its deletion short
        elif scope_gang and pod.attempt < status["attempt"]:
            plan.delete_pods.append(pod.name)  # a member of a gang that was restarted
        else:
            current[(pod.role, pod.index)] = pod
    status[COUNTED] = [p.uid for p in observed.pods if p.uid in counted and not p.deleting]

    if _all_workers_succeeded(job, current):
        return _succeed(job, current, observed, plan)
    if _deadline_passed(job, status, now):
        return _fail(job, current, plan, now, "DeadlineExceeded",
                     f"the job ran longer than spec.runPolicy.activeDeadlineSeconds={job.spec.run_policy.active_deadline_seconds}")

    failures = [classify(p, job.spec.run_policy.restart_policy) for p in current.values() if p.phase == "Failed"]
    lost = _lost_members(job, previous, slots, observed.pods) if scope_gang else []
    if failures or lost:
        return _restart_or_fail(job, current, failures, lost, plan, now)
    stranded = faults.stranded(current.values(), observed.node_faults, now, observed.node_failure_seconds)
    if stranded:
        return _restart_or_fail(job, current, stranded, [], plan, now, reason=stranded[0].reason)
    hung = faults.hung(job, previous, now) if observed.progress_reported else None
    if hung:
        return _restart_or_fail(job, current, [hung], [], plan, now, reason=faults.HUNG, whole_gang=True)

    startup = _startup_problem(job, status, current, slots, now)
    if startup:
        return _fail(job, current, plan, now, "StartupDeadlineExceeded", startup)

    occupied = {(p.role, p.index) for p in observed.pods}
    plan.create_pods = [slot for slot in slots if slot not in occupied]
    if _gang_unavailable(job, observed, plan):
        return
    _running_phase(job, previous, current, slots, plan, now)


def _gang_unavailable(job: TrainingJob, observed: Observed, plan: Plan) -> bool:
    """A job in gang mode gets its pods only with the gang API to bind them all or none: without
    it, it waits with a condition that says what is missing (never a silent fallback)."""
    if not (plan.create_pods and job.spec.run_policy.gang_scheduling):
        return False
    if observed.gang_api_served:
        plan.create_workload = True
        return False
    plan.create_pods = []
    _set_phase(plan, job, observed.now, PENDING, GANG_UNAVAILABLE,
               f"spec.runPolicy.gangScheduling is true, but the cluster does not serve {gang.REQUIREMENT}; "
               "no pods are created until it does")
    return True


def _slots(job: TrainingJob) -> list[tuple[str, int]]:
    return [(r.name, i) for r in strategy_for(job.spec).roles(job.spec) for i in range(r.spec.replicas)]


def _all_workers_succeeded(job: TrainingJob, current: Mapping[tuple[str, int], PodView]) -> bool:
    workers = [current.get((contract.ROLE_WORKER, i)) for i in range(job.spec.worker.replicas)]
    return all(p is not None and p.phase == "Succeeded" for p in workers)


def _deadline_passed(job: TrainingJob, status: Mapping[str, Any], now: datetime) -> bool:
    limit = job.spec.run_policy.active_deadline_seconds
    started = parse_time(status.get("startTime"))
    return limit is not None and started is not None and now >= started + timedelta(seconds=limit)


def _lost_members(job, previous, slots, pods) -> list[str]:
    """Pods of a gang that had been running and then vanished or began to (deleted by hand, node
    gone): the operator deletes none of a running gang's own pods, so one that is going was lost."""
    if previous.get("phase") != RUNNING:
        return []
    present = {(p.role, p.index) for p in pods if not p.deleting}
    return [pod_name(job.name, *slot) for slot in slots if slot not in present]


def _startup_problem(job, status, current, slots, now) -> str:
    """Why the gang is not running yet, once spec.runPolicy.startupDeadlineSeconds has passed."""
    limit = job.spec.run_policy.startup_deadline_seconds
    began = parse_time(status.get("attemptStartTime"))
    if limit is None or began is None or now < began + timedelta(seconds=limit):
        return ""
    if all(slot in current and current[slot].phase in ("Running", "Succeeded") for slot in slots):
        return ""
    return f"pods not running after {limit}s: {_pending_reasons(current, slots) or 'not created'}"


def _pending_reasons(current, slots) -> str:
    reasons = []
    for slot in slots:
        pod = current.get(slot)
        if pod is None or pod.phase != "Pending":
            continue
        why = pod.unschedulable or pod.waiting_reason or "Pending"
        reasons.append(f"{pod.name}: {why}")
    return "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")


def _running_phase(job, previous, current, slots, plan, now) -> None:
    # The status is written once the pass's creates succeeded (never before: jobs.py), so the pods
    # it creates count as created; the pass that next sees them changes nothing but details.
    created = sum(1 for s in slots if s in current or s in plan.create_pods)
    if created:
        plan.status["conditions"] = cond.set_condition(
            plan.status["conditions"], cond.CREATED, True, "PodsCreated", f"{created}/{len(slots)} pods created",
            now, job.generation)
    running = all(s in current and current[s].phase in ("Running", "Succeeded") for s in slots)
    if running:
        _set_phase(plan, job, now, RUNNING, "AllPodsRunning", f"{len(slots)} pods running")
        return
    waiting = _pending_reasons(current, slots) or "creating pods"
    phase = RESTARTING if previous.get("phase") == RESTARTING else PENDING
    reason = "Restarting" if phase == RESTARTING else _pending_reason_code(current, slots)
    if reason == "Unschedulable" and job.spec.run_policy.gang_scheduling:
        reason, waiting = GANG_NOT_SCHEDULABLE, _gang_waiting(current, slots)
    _set_phase(plan, job, now, phase, reason, waiting)


def _gang_waiting(current, slots) -> str:
    """Why a gang is not placed: the scheduler's own words for a pod it cannot fit. The others it
    could fit wait unbound at its Permit stage, so the message names the one that blocks them."""
    blocked = next(current[s] for s in slots if s in current and current[s].unschedulable)
    return (f"the scheduler binds the {len(slots)} pods of the gang together or not at all; the waiting pods "
            f"stay unbound while {blocked.name} does not fit: {blocked.unschedulable}")


def _pending_reason_code(current, slots) -> str:
    pods = [current[s] for s in slots if s in current and current[s].phase == "Pending"]
    if any(p.unschedulable for p in pods):
        return "Unschedulable"
    for p in pods:
        if p.waiting_reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"):
            return p.waiting_reason
    return "PodsPending"


# --- outcomes -----------------------------------------------------------------------------------


def _succeed(job, current, observed, plan) -> None:
    status, now = plan.status, observed.now
    worker0 = current.get((contract.ROLE_WORKER, 0))
    result = _result_of(worker0)
    if result is not None:
        status["result"] = result
    progress = dict(status.get("progress") or {})
    progress.update(percent=100.0, etaSeconds=0)
    status["progress"] = progress
    status["completionTime"] = cond.timestamp(now)
    _set_phase(plan, job, now, SUCCEEDED, "AllWorkersSucceeded", f"{job.spec.worker.replicas} workers succeeded")
    _finished(job, observed, plan)


def _fail(job, current, plan, now, reason: str, message: str) -> None:
    plan.status["completionTime"] = cond.timestamp(now)
    _set_phase(plan, job, now, FAILED, reason, message)
    policy = job.spec.run_policy.clean_pod_policy
    for pod in current.values():
        if policy == "All" or (policy == "Running" and not pod.finished):
            plan.delete_pods.append(pod.name)


def _restart_or_fail(job, current, failures: list[Failure], lost: list[str], plan, now,
                     reason: str = "Restarting", whole_gang: bool = False) -> None:
    status = plan.status
    failures = _causes(failures, lost)
    user = [f for f in failures if not f.infrastructure]
    if failures:
        status["lastFailure"] = failures[0].as_status(now)
    permanent = next((f for f in failures if not f.retryable), None)
    if permanent is not None:
        return _fail(job, current, plan, now, "PodFailedPermanently", permanent.describe())
    if user and status["restarts"] + 1 > job.spec.run_policy.backoff_limit:
        return _fail(job, current, plan, now, "BackoffLimitExceeded",
                     f"spec.runPolicy.backoffLimit={job.spec.run_policy.backoff_limit} reached; last: {user[0].describe()}")
    infra = status.get("infrastructureRestarts", 0)
    if not user and infra + 1 > INFRASTRUCTURE_RESTART_LIMIT:
        return _fail(job, current, plan, now, "InfrastructureRestartLimitExceeded",
                     f"{INFRASTRUCTURE_RESTART_LIMIT} restarts caused by the infrastructure")

    if user:
        status["restarts"] += 1
    else:
        status["infrastructureRestarts"] = infra + 1
    status["attempt"] += 1
    status["attemptStartTime"] = cond.timestamp(now)
    gang = whole_gang or job.spec.run_policy.restart_scope == "Gang"
    failed = {f.pod for f in failures}
    doomed = [p for p in current.values() if gang or p.name in failed]
    plan.delete_pods.extend(p.name for p in doomed)
    if job.spec.run_policy.restart_scope != "Gang":  # no older attempt label marks them: their UIDs do
        status[COUNTED] = status.get(COUNTED, []) + [p.uid for p in doomed]
    what = failures[0].describe() if failures else f"pods disappeared: {', '.join(lost)}"
    scope = "the whole gang" if gang else "the failed pods"
    _set_phase(plan, job, now, RESTARTING, reason, f"restarting {scope} (attempt {status['attempt']}): {what}")


def _causes(failures: list[Failure], lost: list[str]) -> list[Failure]:
    """The failures that caused the restart, the cause first. Ranks that only lost a peer (170) in the
    wake of an infrastructure fault (a stopped or vanished member) are that fault's consequence."""
    failures = sorted(failures, key=lambda f: (f.consequence, not f.infrastructure))
    if lost or any(f.infrastructure for f in failures):
        return [f for f in failures if not f.consequence]
    return failures


def _result_of(worker0: PodView | None) -> dict | None:
    if worker0 is None or not worker0.message:
        return None
    try:
        result = json.loads(worker0.message)
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) and "error" not in result else None


def _force_if_stuck(pod: PodView, observed: Observed, plan: Plan) -> None:
    deadline = pod.deletion_deadline
    if deadline and observed.now >= deadline + timedelta(seconds=observed.stuck_terminating_seconds):
        plan.force_delete_pods.append(pod.name)


# --- status ---------------------------------------------------------------------------------------


def _set_phase(plan: Plan, job: TrainingJob, now: datetime, phase: str, reason: str, message: str) -> None:
    status, g = plan.status, job.generation
    status["phase"], status["message"] = phase, message
    c = status["conditions"]
    c = cond.set_condition(c, cond.RUNNING, phase == RUNNING, reason, message, now, g)
    if phase in (RESTARTING,) or cond.is_true(c, cond.RESTARTING):
        c = cond.set_condition(c, cond.RESTARTING, phase == RESTARTING, reason, message, now, g)
    if phase == SUSPENDED or cond.is_true(c, cond.SUSPENDED):
        c = cond.set_condition(c, cond.SUSPENDED, phase == SUSPENDED,
                               reason if phase == SUSPENDED else "JobResumed", message, now, g)
    if phase == SUCCEEDED:
        c = cond.set_condition(c, cond.SUCCEEDED, True, reason, message, now, g)
    if phase == FAILED:
        c = cond.set_condition(c, cond.FAILED, True, reason, message, now, g)
    status["conditions"] = c


# What of a status only details what the rest says: which pods wait and why in words, the pods
# counted by phase, each condition's message. A change in nothing else may wait a moment (jobs.py).
DETAIL = ("message", "replicaStatuses")


def detail_only(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether `status` differs from `previous` in details alone: the same phase, counters, times,
    and conditions with the same status and reason (their messages aside)."""
    return _essence(previous) == _essence(status)


def _essence(status: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in status.items() if k not in DETAIL}
    kept["conditions"] = [{k: v for k, v in c.items() if k != "message"} for c in status.get("conditions") or []]
    return kept


def _summarise(job: TrainingJob, observed: Observed, plan: Plan) -> None:
    counts: dict[str, dict[str, int]] = {}
    for role in strategy_for(job.spec).roles(job.spec):
        counts[role.name] = {"pending": 0, "running": 0, "ready": 0, "succeeded": 0, "failed": 0, "active": 0}
    for pod in observed.pods:
        c = counts.get(pod.role)
        if c is None or pod.name in plan.delete_pods or pod.deleting:
            continue
        c[pod.phase.lower()] = c.get(pod.phase.lower(), 0) + 1
        c["ready"] += int(pod.ready)
        c["active"] += int(not pod.finished)
    plan.status["replicaStatuses"] = counts


def _announce(before: str, plan: Plan) -> None:
    after = plan.status.get("phase", "")
    if after == before:
        return
    running = next((c for c in plan.status["conditions"] if c["type"] == cond.RUNNING), {})
    kind = "Warning" if after in (FAILED, RESTARTING) or running.get("reason") == GANG_UNAVAILABLE else "Normal"
    plan.events.append((kind, running.get("reason") or after, plan.status.get("message", after)))
