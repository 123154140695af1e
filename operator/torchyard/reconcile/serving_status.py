"""The status parts of the serving decision: conditions, and each ModelVersion's phase.

Kept apart from reconcile/serving.py so that the rules for moving traffic read on their own;
these functions only describe the outcome of a decision that has been made.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from torchyard.api import modelversion as mv
from torchyard.api.modelversion import ModelVersion, version_name
from torchyard.reconcile import conditions as cond

if TYPE_CHECKING:  # the decision's working state; imported for annotations only
    from torchyard.reconcile.serving import _Decision

AVAILABLE, PROGRESSING, DEGRADED = "Available", "Progressing", "Degraded"
Condition = tuple[bool, str, str]


def precise(moment: datetime) -> str:
    """A timestamp with microseconds: switch latencies are well under a second."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def conditions_of(d: "_Decision", target: int | None, warm: set[int]) -> list[dict[str, Any]]:
    conditions = list(d.s["conditions"])
    for kind, (status, reason, message) in ((AVAILABLE, _available(d)), (PROGRESSING, _progressing(d, target, warm)),
                                            (DEGRADED, _degraded(d, target))):
        conditions = cond.set_condition(conditions, kind, status, reason, message, d.now, d.md.generation)
    return conditions


def _available(d: "_Decision") -> Condition:
    if d.active is None:
        return False, "NoActiveVersion", d.problems.get("target") or "no version has been ready yet"
    if "active" in d.problems and d.plan.switch is None:
        return False, "ActiveUnhealthy", d.problems["active"]
    health = d.obs.deployments.get(d.active)
    return True, "Serving", f"v{d.active} serves, {health.ready if health else 0}/{d.spec.replicas} ready"


def _target_missing(d: "_Decision", target: int | None) -> bool:
    return target is not None and target not in d.obs.versions and target not in d.obs.deployments


def _progressing(d: "_Decision", target: int | None, warm: set[int]) -> Condition:
    candidate = d.s.get("candidateVersion")
    if candidate is not None:
        return True, "CandidateDeploying", d.problems.get("candidate") or f"v{candidate} passed the gate; deploying"
    if not d.obs.versions and d.active is None:
        return False, "NoModelVersions", f"no ModelVersion of model {d.spec.model_name} exists yet"
    if _target_missing(d, target):
        return False, "VersionNotFound", f"ModelVersion {version_name(d.spec.model_name, target)} does not exist"
    if target is not None and target != d.active:
        return True, "SwitchPending", d.problems.get("target") or f"switching to v{target}"
    short = sorted(v for v in warm if (h := d.obs.deployments.get(v)) is None or h.ready < d.spec.replicas)
    if short:
        return True, "Scaling", "waiting for ready replicas of " + ", ".join(f"v{v}" for v in short)
    return False, "Stable", f"v{d.active} serves" + _standby_note(d, warm)


def _standby_note(d: "_Decision", warm: set[int]) -> str:
    others = sorted((v for v in warm if v != d.active), reverse=True)
    return "; warm: " + ", ".join(f"v{v}" for v in others) if others else "; no warm standby"


def _degraded(d: "_Decision", target: int | None) -> Condition:
    if "degraded" in d.problems:
        return True, "NoHealthyStandby", d.problems["degraded"]
    if _target_missing(d, target):
        return True, "VersionNotFound", f"ModelVersion {version_name(d.spec.model_name, target)} does not exist"
    if "target-crashing" in d.problems:
        return True, "TargetCrashLooping", d.problems["target-crashing"]
    if d.active is not None and target is not None and target != d.active and "targetSince" not in d.s:
        why = d.problems.get("target") or d.problems.get("active") or f"v{target} is unhealthy"
        return True, "FailedOver", f"v{d.active} serves in place of v{target}: {why}"
    return False, "Healthy", f"v{d.active} serves as intended" if d.active is not None else "nothing serves yet"


def version_phase(d: "_Decision", version: int, model_version: ModelVersion, target: int | None,
                  standbys: list[int]) -> dict[str, str] | None:
    """The status a ModelVersion should have after this decision; None leaves it as it is."""
    if version in d.rejections:
        reason, message = d.rejections[version]
        return {"phase": mv.REJECTED, "reason": reason, "message": message}
    if version == d.active:
        return {"phase": mv.ACTIVE, "reason": "Serving", "message": f"takes the traffic of Service {d.spec.model_name}"}
    if version == d.s.get("candidateVersion"):
        return {"phase": mv.REGISTERED, "reason": "Candidate", "message": "passed the gate; promoted once ready"}
    if version == target:
        return {"phase": mv.STANDBY, "reason": "Target", "message": d.problems.get("target") or "about to take traffic"}
    if version in standbys:
        return {"phase": mv.STANDBY, "reason": "WarmStandby", "message": "kept running for failover"}
    if model_version.rejected:
        return None
    if version in d.obs.deployments or model_version.phase in (mv.ACTIVE, mv.STANDBY, mv.RETIRED):
        return {"phase": mv.RETIRED, "reason": "Retired", "message": f"not served; its Deployment is {_retired_as(d)}"}
    if not model_version.status:
        return {"phase": mv.REGISTERED, "reason": "Registered", "message": "not served yet"}
    return None


def _retired_as(d: "_Decision") -> str:
    return "deleted" if d.spec.retired_versions == "Delete" else "scaled to zero"
