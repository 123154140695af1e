"""What a queued job may do, read from its Kueue Workload (docs/kueue.md).

A TrainingJob labelled with a Kueue queue runs only while Kueue admits its Workload. Kueue's own
job integrations do three things around admission, and the operator does them for its kind:
hold the job (no pods) until the Workload is admitted; on eviction (preemption, a queue stopped)
delete the pods and then give the quota back by clearing the Workload's reservation; and report
the Workload finished when the job is. A held job goes through the operator's suspend path, so a
preemption is never charged to the job's `backoffLimit` or infrastructure budget. Pure: the
Workload comes in as the API server has it, decisions and status patches go out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

from torchyard.api.trainingjob import TrainingJob
from torchyard.reconcile import conditions as cond
from torchyard.settings import Settings
from torchyard_spec import contract

QUOTA_RESERVED, ADMITTED, EVICTED, FINISHED, REQUEUED = (
    "QuotaReserved", "Admitted", "Evicted", "Finished", "Requeued")
# Evictions after which Kueue's job integrations mark a Workload to be queued again at once.
REQUEUE_AT_ONCE = ("Preempted", "NodeFailures")
WAITING = "WaitingForAdmission"


@dataclass(frozen=True)
class Gate:
    """What the operator does about a queued job in this pass."""

    hold: bool  # the job runs no pods: it goes through the suspend path
    reason: str = ""
    message: str = ""
    create: bool = False  # create the Workload
    delete: bool = False  # the Workload describes an older spec: delete it, the next pass makes a new one
    workload_status: dict | None = None  # a patch of the Workload's status
    flavors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # pod set -> admitted flavors


def conditions_of(workload: Mapping[str, Any]) -> dict[str, dict]:
    return {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}


def _true(conds: Mapping[str, dict], kind: str) -> bool:
    return (conds.get(kind) or {}).get("status") == "True"


def admitted_flavors(workload: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The flavors Kueue assigned to each pod set (a pod set may get one per resource)."""
    admission = (workload.get("status") or {}).get("admission") or {}
    return {a["name"]: tuple(sorted(set((a.get("flavors") or {}).values())))
            for a in admission.get("podSetAssignments") or []}


def same_pod_sets(workload: Mapping[str, Any], wanted: list[dict]) -> bool:
    """Whether the Workload still counts the job's pods: the same pod sets with the same sizes."""
    have = [(p.get("name"), p.get("count")) for p in (workload.get("spec") or {}).get("podSets") or []]
    return have == [(p["name"], p["count"]) for p in wanted]


def gate(job: TrainingJob, previous_phase: str, workload: Mapping[str, Any] | None, wanted: list[dict],
         live_pods: int, now: datetime) -> Gate:
    """The pass's decision for a queued job. `wanted` is the pod sets its Workload should have;
    `live_pods` counts its pods not yet gone (a reservation is given back only when none is left)."""
    decision = _gate(job, previous_phase, workload, wanted, live_pods, now)
    if job.spec.run_policy.suspend:  # suspended by its user: that is what its status says
        return replace(decision, reason="", message="")
    return decision


def _gate(job: TrainingJob, previous_phase: str, workload: Mapping[str, Any] | None, wanted: list[dict],
          live_pods: int, now: datetime) -> Gate:
    if previous_phase in ("Succeeded", "Failed"):
        return _finished(workload, previous_phase, now)
    if workload is None:
        return Gate(hold=True, reason=WAITING, message="creating its Kueue Workload", create=True)
    owners = {o.get("uid") for o in workload.get("metadata", {}).get("ownerReferences") or []}
    if job.uid not in owners:
        return Gate(hold=True, reason=WAITING, message="a Workload of an earlier job by this name is still there")
    conds = conditions_of(workload)
    reserved = _true(conds, QUOTA_RESERVED)
    if _true(conds, EVICTED):
        evicted = conds[EVICTED]
        patch = _give_back(workload, evicted, now) if reserved and live_pods == 0 else None
        return Gate(hold=True, reason=f"Evicted{evicted.get('reason', '')}",
                    message=f"evicted by Kueue: {evicted.get('message', '')}", workload_status=patch)
    if not reserved and not same_pod_sets(workload, wanted):
        return Gate(hold=True, reason=WAITING, message="the spec changed: its Workload is made again", delete=True)
    if _true(conds, ADMITTED):
        return Gate(hold=False, flavors=admitted_flavors(workload))
    queue = (workload.get("spec") or {}).get("queueName", "")
    pending = (conds.get(QUOTA_RESERVED) or {}).get("message") or "waiting in the queue"
    return Gate(hold=True, reason=WAITING, message=f"queued in Kueue LocalQueue {queue}: {pending}")


def _finished(workload: Mapping[str, Any] | None, phase: str, now: datetime) -> Gate:
    """A finished job releases its quota: its Workload is marked Finished, once."""
    if workload is None or _true(conditions_of(workload), FINISHED):
        return Gate(hold=True)
    conds = _condition_list(workload)
    conds = cond_set(conds, FINISHED, True, phase, f"the TrainingJob {phase.lower()}", now, workload)
    return Gate(hold=True, workload_status={"conditions": conds})


def _give_back(workload: Mapping[str, Any], evicted: dict, now: datetime) -> dict:
    """The status Kueue's job integrations write once an evicted job's pods are gone: no quota
    reserved, not admitted, and (after a preemption) queued again."""
    conds = _condition_list(workload)
    conds = cond_set(conds, REQUEUED, evicted.get("reason") in REQUEUE_AT_ONCE, evicted.get("reason", "Evicted"),
                     evicted.get("message", ""), now, workload)
    conds = cond_set(conds, QUOTA_RESERVED, False, "Pending", evicted.get("message", ""), now, workload)
    conds = cond_set(conds, ADMITTED, False, "NoReservation", "The workload has no reservation", now, workload)
    return {"admission": None, "conditions": conds}


def _condition_list(workload: Mapping[str, Any]) -> list[dict]:
    return [dict(c) for c in (workload.get("status") or {}).get("conditions") or []]


def cond_set(conds: list[dict], kind: str, status: bool, reason: str, message: str, now: datetime,
             workload: Mapping[str, Any]) -> list[dict]:
    """Set one condition in Kueue's own shape (its order kept; lastTransitionTime moves on a flip)."""
    value = "True" if status else "False"
    generation = int((workload.get("metadata") or {}).get("generation") or 0)
    old = next((c for c in conds if c.get("type") == kind), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else cond.timestamp(now)
    new = {"type": kind, "status": value, "reason": reason, "message": message[:32768],
           "lastTransitionTime": since, "observedGeneration": generation}
    return [new if c is old else c for c in conds] if old else conds + [new]


def held(job: TrainingJob) -> TrainingJob:
    """The job as the suspend path sees it while Kueue holds it."""
    return replace(job, spec=replace(job.spec, run_policy=replace(job.spec.run_policy, suspend=True)))


def explain_hold(status: dict, hold: Gate, now: datetime) -> None:
    """A job held by Kueue says why in its message and Suspended condition (one its user
    suspended keeps saying that: its gate has no reason)."""
    if status.get("phase") != "Suspended" or not hold.reason:
        return
    status["message"] = hold.message
    status["conditions"] = cond.set_condition(status["conditions"], cond.SUSPENDED, True, hold.reason,
                                              hold.message, now, int(status.get("observedGeneration") or 0))


def placed(job: TrainingJob, flavors: Mapping[str, list[Mapping[str, Any]]], settings: Settings) -> TrainingJob:
    """The job with each role's admitted flavors' node labels and tolerations added to where its
    pods go, as Kueue's job integrations add them to a pod template on admission."""
    roles = {}
    for role, admitted in flavors.items():
        spec = job.spec.role(role)
        if spec is None or not admitted:
            continue
        gpu = spec.gpus > 0
        selector = dict(spec.node_selector if spec.node_selector is not None
                        else (settings.gpu_node_selector if gpu else {}))
        tolerations = list(spec.tolerations if spec.tolerations is not None
                           else (settings.gpu_tolerations if gpu else ()))
        for flavor in admitted:
            flavor_spec = flavor.get("spec") or {}
            selector.update(flavor_spec.get("nodeLabels") or {})
            tolerations += [dict(t) for t in flavor_spec.get("tolerations") or [] if t not in tolerations]
        roles[role] = replace(spec, node_selector=selector, tolerations=tuple(tolerations))
    if not roles:
        return job
    return replace(job, spec=replace(job.spec, worker=roles.get(contract.ROLE_WORKER, job.spec.worker),
                                     parameter_server=roles.get(contract.ROLE_PARAMETER_SERVER,
                                                                job.spec.parameter_server)))
