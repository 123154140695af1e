"""The serving decision: a ModelDeployment, its observed versions and the time -> a plan.

``decide_serving`` is pure. It answers which version should take traffic and why (the *target*:
``spec.activeVersion`` when set, else the newest version that passed the promotion gate), whether
traffic moves now (a pending request, a failover, a fail-back), which versions run and at what
scale, and the complete next status. The previous status supplies only what cannot be observed:
the gate's bookkeeping, when a request was made and since when the active version is unhealthy
(so a restarted operator neither forgets a grace period nor moves traffic by itself).

A switch needs the target to be healthy: at least ``failover.minReadyReplicas`` ready pods, not
crash-looping, and, when a golden request is configured, a passed golden request. The decision
cannot send that request; it lists the version in ``plan.verify`` and the caller decides again
with the answer in ``observed.verified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from torchyard.api import modelversion as mv
from torchyard.api.modeldeployment import DELETE, LATEST_PASSING, ModelDeployment
from torchyard.api.modelversion import ModelVersion
from torchyard.reconcile.gate import gate_problem
from torchyard.reconcile.health import VersionHealth
from torchyard.reconcile.observe import parse_time
from torchyard.reconcile.serving_status import conditions_of, precise, version_phase

HISTORY_LIMIT = 20
PROMOTION, MANUAL, FAILOVER, FAILBACK, GATE_REJECTED = "promotion", "manual", "failover", "failback", "gate-rejected"
SWITCH_EVENTS = {PROMOTION: "Promoted", MANUAL: "RolledOut", FAILOVER: "FailedOver", FAILBACK: "FailedBack"}
# Why a version may not take traffic; "" means it may.
OK, PENDING, MISSING, CRASHING, UNREADY, GOLDEN = "", "pending", "missing", "crashing", "unready", "golden"
CARRIED = ("activeVersion", "previousVersion", "targetVersion", "targetReason", "targetSince", "promotedVersion",
           "evaluatedVersion", "candidateVersion", "unhealthySince", "recoveredSince", "history", "conditions")


@dataclass(frozen=True)
class ServingObserved:
    versions: Mapping[int, ModelVersion]  # the model's ModelVersions by version
    deployments: Mapping[int, VersionHealth]  # existing version Deployments by version
    selected: int | None  # the version the Service selects; None: no Service yet
    now: datetime
    verified: Mapping[int, bool] = field(default_factory=dict)  # golden-request answers


@dataclass(frozen=True)
class Switch:
    from_version: int | None
    to_version: int
    reason: str
    latency: float  # seconds from the trigger to this decision
    message: str


@dataclass
class ServingPlan:
    status: dict[str, Any]
    switch: Switch | None = None
    replicas: dict[int, int] = field(default_factory=dict)  # version -> replicas (Deployment created if missing)
    delete: list[int] = field(default_factory=list)  # version Deployments to delete
    version_status: dict[int, dict] = field(default_factory=dict)  # ModelVersion status to write, by version
    rejected: list[int] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    recheck_after: float | None = None  # seconds until the decision may change with no event
    verify: list[int] = field(default_factory=list)  # versions that need a golden request first


def decide_serving(md: ModelDeployment, previous: Mapping[str, Any], observed: ServingObserved) -> ServingPlan:
    return _Decision(md, previous, observed).run()


class _Decision:
    """One decision's working state; every method is pure over (md, previous, observed)."""

    def __init__(self, md: ModelDeployment, previous: Mapping[str, Any], observed: ServingObserved):
        self.md, self.spec, self.obs, self.now = md, md.spec, observed, observed.now
        self.previous = previous
        status = {k: previous[k] for k in CARRIED if k in previous}
        status["history"] = list(status.get("history") or [])
        status["conditions"] = list(status.get("conditions") or [])
        status["observedGeneration"] = md.generation
        self.plan = ServingPlan(status=status)
        self.s = status
        self.active = observed.selected
        self.rejections: dict[int, tuple[str, str]] = {}
        self.problems: dict[str, str] = {}  # "target", "active", "candidate", "degraded" -> why

    def run(self) -> ServingPlan:
        self._set("activeVersion", self.active)
        self._evaluate_candidate()
        target, kind = self._target()
        self._track_target(target, kind)
        self._choose(target)
        standbys = self._standbys(target)
        warm = self._scale(target, standbys)
        self._version_statuses(target, standbys, warm)
        self.s["conditions"] = conditions_of(self, target, warm)
        self._announce_degraded()
        return self.plan

    # --- which version should serve -----------------------------------------------------------------

    def _target(self) -> tuple[int | None, str]:
        if self.spec.active_version is not None:
            return self.spec.active_version, MANUAL
        return self.s.get("promotedVersion"), PROMOTION

    def _evaluate_candidate(self) -> None:
        """LatestPassing: the newest version not yet judged is gated, deployed, and promoted once healthy."""
        if self.spec.policy != LATEST_PASSING or self.spec.active_version is not None:
            self.s.pop("candidateVersion", None)
            return
        eligible = sorted(v for v, m in self.obs.versions.items() if not m.rejected)
        promoted = self.s.get("promotedVersion")
        if promoted is None:
            if eligible:  # the first version served has nothing to be compared with
                self.s["promotedVersion"] = self.s["evaluatedVersion"] = eligible[-1]
            return
        fresh = [v for v in eligible if v > self.s.get("evaluatedVersion", promoted)]
        if not fresh:
            self.s.pop("candidateVersion", None)
            return
        candidate = fresh[-1]
        problem = gate_problem(self.spec.gate, self.obs.versions[candidate], self.obs.versions.get(promoted))
        if problem:
            return self._reject(candidate, promoted, "GateRejected", problem)
        self.s["candidateVersion"] = candidate
        code, why = self._check(candidate)
        if code == OK:
            self.s["promotedVersion"] = self.s["evaluatedVersion"] = candidate
            self.s.pop("candidateVersion")
        elif code in (CRASHING, GOLDEN):
            self._reject(candidate, promoted, "CrashLooping" if code == CRASHING else "GoldenRequestFailed", why)
        else:
            self.problems["candidate"] = why

    def _reject(self, candidate: int, baseline: int | None, reason: str, message: str) -> None:
        self.s["evaluatedVersion"] = candidate
        self.s.pop("candidateVersion", None)
        self.rejections[candidate] = (reason, message)
        self.plan.rejected.append(candidate)
        self._history(baseline, candidate, GATE_REJECTED, None, message)
        self.plan.events.append(("Warning", "GateRejected", f"v{candidate} rejected: {message}"))

    def _track_target(self, target: int | None, kind: str) -> None:
        """Remember when a new target was asked for: the start of its switch latency."""
        if target == self.s.get("targetVersion"):
            return
        for key in ("targetVersion", "targetReason", "targetSince"):
            self.s.pop(key, None)
        if target is None:
            return
        self.s["targetVersion"], self.s["targetReason"] = target, kind
        if target != self.active:
            self.s["targetSince"] = precise(self.now)

    # --- moving traffic -----------------------------------------------------------------------------

    def _choose(self, target: int | None) -> None:
        code = OK
        if target is not None and target != self.active:
            code, why = self._check(target)
            if code != OK:
                self.s.pop("recoveredSince", None)
            if code == PENDING:
                return  # decided again once the golden request has answered
            if code == OK and self._switch_to_target(target):
                return
            if code != OK:
                self.problems["target"] = why
            if code == CRASHING:
                self.problems["target-crashing"] = why
        if self.active is not None:
            self._keep_or_failover(target)
        elif code == CRASHING:  # nothing serves and the target never will: a standby serves instead
            self._failover(target, self.now, self.problems["target"])

    def _switch_to_target(self, target: int) -> bool:
        since = parse_time(self.s.get("targetSince"))
        if since is None and self.active is None:  # the Service went missing: put it back at once
            since = self.now
        if since is not None:  # a request (manual, promotion) not yet carried out
            self._switch(target, self.s.get("targetReason") or MANUAL, since, "")
            return True
        # Back to the target after a failover, once it has stayed healthy for the grace period.
        recovered = parse_time(self.s.get("recoveredSince")) or self.now
        self.s["recoveredSince"] = precise(recovered)
        hold_until = recovered + timedelta(seconds=self.spec.failover.grace_period_seconds)
        if self.now < hold_until:
            self._recheck(hold_until)
            self.problems["target"] = f"v{target} is healthy again; switching back at {precise(hold_until)}"
            return False
        self._switch(target, FAILBACK, recovered, f"v{target} is healthy again")
        return True

    def _keep_or_failover(self, target: int | None) -> None:
        active = self.active
        code, why = self._check(active, verify=False)
        if code == OK:
            self.s.pop("unhealthySince", None)
            return
        self.problems["active"] = why
        since = parse_time(self.s.get("unhealthySince")) or self.now
        self.s["unhealthySince"] = precise(since)
        due = since + timedelta(seconds=self.spec.failover.grace_period_seconds)
        if code != CRASHING and self.now < due:
            self._recheck(due)
            return
        self._failover(target, since, why)

    def _failover(self, target: int | None, since: datetime, why: str) -> None:
        """Traffic to the first healthy of the fallbacks; when none is, it stays and Degraded says why."""
        skipped = []
        for version in self._fallbacks(target):
            code, reason = self._check(version)
            if code == PENDING:
                return
            if code == OK:
                return self._switch(version, FAILOVER, since, why)
            skipped.append(reason)
        detail = "; ".join(skipped) if skipped else "no standby is configured or retained"
        self.problems["degraded"] = f"{why}, and no standby can take traffic: {detail}"

    def _fallbacks(self, target: int | None) -> list[int]:
        """Where failover may go, newest first: the target, then the warm standbys below it."""
        anchor = target if target is not None else self.active
        options = {anchor, *self._standbys(anchor)} - {self.active, self.s.get("candidateVersion"), None}
        return sorted(options, reverse=True)

    def _switch(self, to: int, reason: str, since: datetime, message: str) -> None:
        frm = self.active
        latency = max(0.0, (self.now - since).total_seconds())
        self.plan.switch = Switch(frm, to, reason, latency, message)
        self.active = self.s["activeVersion"] = to
        if frm is not None:
            self.s["previousVersion"] = frm
        for key in ("unhealthySince", "recoveredSince"):
            self.s.pop(key, None)
        if to == self.s.get("targetVersion"):
            self.s.pop("targetSince", None)
        self._history(frm, to, reason, latency, message)
        origin = f"from v{frm} " if frm is not None else ""
        text = f"traffic switched {origin}to v{to} ({reason})" + (f": {message}" if message else "")
        self.plan.events.append(("Warning" if reason == FAILOVER else "Normal", SWITCH_EVENTS[reason], text))

    def _check(self, version: int | None, verify: bool = True) -> tuple[str, str]:
        """(OK, "") when `version` may take traffic now, else a code and why not."""
        health = self.obs.deployments.get(version) if version is not None else None
        if health is None:
            return MISSING, f"v{version} has no Deployment yet"
        floor = self.spec.floor
        if health.crash_loops(floor):
            return CRASHING, f"v{version} is crash-looping ({health.crash_reason})"
        if health.ready < floor:
            return UNREADY, f"v{version} has {health.ready} ready of the {floor} needed"
        if verify and self.spec.verification.enabled:
            answer = self.obs.verified.get(version)
            if answer is None:
                self.plan.verify.append(version)
                return PENDING, f"v{version} is waiting for its golden request"
            if answer is False:
                return GOLDEN, f"v{version} failed its golden request"
        return OK, ""

    # --- what runs ----------------------------------------------------------------------------------

    def _standbys(self, target: int | None) -> list[int]:
        """The spec.standby newest versions below the target that were not rejected."""
        if target is None:
            return []
        below = [v for v, m in self.obs.versions.items()
                 if v < target and not m.rejected and v not in self.rejections]
        return sorted(below, reverse=True)[: self.spec.standby]

    def _scale(self, target: int | None, standbys: list[int]) -> set[int]:
        warm = {v for v in (target, self.active, self.s.get("candidateVersion"), *standbys) if v is not None}
        for version in sorted(warm):
            if version in self.obs.versions or version in self.obs.deployments:
                self.plan.replicas[version] = self.spec.replicas
        for version, health in sorted(self.obs.deployments.items()):
            if version in warm:
                continue
            if self.spec.retired_versions == DELETE:
                self.plan.delete.append(version)
            elif health.replicas != 0:
                self.plan.replicas[version] = 0
        return warm

    def _version_statuses(self, target: int | None, standbys: list[int], warm: set[int]) -> None:
        summary = []
        for version, model_version in sorted(self.obs.versions.items()):
            wanted = version_phase(self, version, model_version, target, standbys)
            if wanted is not None:
                wanted["modelDeployment"] = self.md.name
                if any(model_version.status.get(k) != v for k, v in wanted.items()):
                    self.plan.version_status[version] = wanted
        for version in sorted(warm | set(self.obs.deployments), reverse=True):
            health = self.obs.deployments.get(version)
            phase = (self.plan.version_status.get(version) or {}).get("phase")
            if phase is None and version in self.obs.versions:
                phase = self.obs.versions[version].phase
            summary.append({"version": version, "replicas": self.plan.replicas.get(version, health.replicas if health else 0),
                            "ready": health.ready if health else 0, "state": phase or mv.RETIRED})
        self.s["versions"] = summary

    # --- bookkeeping --------------------------------------------------------------------------------

    def _history(self, frm: int | None, to: int, reason: str, latency: float | None, message: str) -> None:
        entry: dict[str, Any] = {"to": to, "reason": reason, "time": precise(self.now)}
        if frm is not None:
            entry["from"] = frm
        if latency is not None:
            entry["switchLatencySeconds"] = round(latency, 3)
        if message:
            entry["message"] = message[:512]
        self.s["history"] = (self.s["history"] + [entry])[-HISTORY_LIMIT:]

    def _recheck(self, when: datetime) -> None:
        delay = max(0.05, (when - self.now).total_seconds())
        current = self.plan.recheck_after
        self.plan.recheck_after = delay if current is None else min(current, delay)

    def _set(self, key: str, value: Any) -> None:
        if value is None:
            self.s.pop(key, None)
        else:
            self.s[key] = value

    def _announce_degraded(self) -> None:
        before = next((c for c in self.previous.get("conditions") or [] if c.get("type") == "Degraded"), {})
        now = next((c for c in self.s["conditions"] if c["type"] == "Degraded"), {})
        if now.get("status") == "True" and (before.get("status") != "True" or before.get("reason") != now.get("reason")):
            self.plan.events.append(("Warning", now["reason"], now["message"]))
