"""Reconcile one ModelDeployment: observe, decide, act, record.

The serving counterpart of jobs.py, and the only place that joins the pure pieces (parsing, the
builders of reconcile-free manifests, ``decide_serving``) to the API layer. Every trigger (the
ModelDeployment, its ModelVersions, Deployments, pods and Service changing, a grace period ending,
the rare safety resync) queues the ModelDeployment's key (torchyard.workqueue); a worker calls
:meth:`ServingReconciler.reconcile`, one pass per ModelDeployment at a time. What it observes comes
from the `Kube` it is given: in the operator the watch cache (kube/serving_cache.py).

Acting puts the traffic switch first: it is the one time-critical write, and the decision has
already checked that its target is ready. Retiring the version that lost traffic comes after it,
and the status (with the switch in its history) last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from torchyard import metrics
from torchyard.api import modeldeployment as md_api
from torchyard.api.errors import SpecError
from torchyard.api.modeldeployment import ModelDeployment, parse_model_deployment
from torchyard.api.modelversion import DEPLOYMENT_LABEL, VERSION_LABEL, ModelVersion, parse_model_version, version_name
from torchyard.builders.serving import (build_deployment, build_service, deployment_selector, deployment_update,
                                        selected_version, selector_patch)
from torchyard.golden import GoldenCheck
from torchyard.kube.client import Kube, Refused
from torchyard.reconcile import conditions as cond
from torchyard.reconcile.health import view_version_health
from torchyard.reconcile.identity import DUPLICATE, duplicate_status, serving_owner
from torchyard.reconcile.serving import HISTORY_LIMIT, SWITCH_EVENTS, ServingObserved, ServingPlan, Switch, decide_serving
from torchyard.reconcile.serving_status import precise
from torchyard.reconciler import Reconciler, clear_trouble
from torchyard.settings import Settings

log = logging.getLogger(__name__)
Key = tuple[str, str]


# A golden request that failed may pass later with no event (a model server still warming up):
# the ModelDeployment is decided again after this long.
GOLDEN_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Unrecorded:
    """A switch that moved the traffic but was not recorded yet (ServingReconciler._unrecorded)."""
    switch: Switch
    entry: dict  # its status history entry
    event: tuple[str, str, str] | None  # its Event: (type, reason, message)


class ServingReconciler(Reconciler):
    kind = md_api.KIND

    def __init__(self, kube: Kube, settings: Settings, golden: GoldenCheck | None = None):
        super().__init__()
        self.kube = kube
        self.settings = settings
        self.golden = golden or GoldenCheck()
        self._models: dict[Key, str] = {}
        # A switch whose traffic moved but whose record (status history, Event, metrics) was not
        # written: a later write of the pass failed (the API server restarting, say). The next pass
        # sees the Service already on the new version and decides no switch, so it records this
        # one instead (_carry). Kept in memory only: an operator restarted in between loses it.
        self._unrecorded: dict[Key, Unrecorded] = {}
        # Called with a ModelDeployment's key and a delay when its decision may change with no
        # event (a grace period ends): the work queue's add_after. None: nothing is scheduled.
        self.on_due: Callable[[Key, float], None] | None = None

    def _read(self, namespace: str, name: str) -> dict | None:
        return self.kube.get_model_deployment(namespace, name)

    def _patch_status(self, namespace: str, name: str, status: dict) -> None:
        self.kube.patch_model_deployment_status(namespace, name, status)

    def forget(self, namespace: str, name: str) -> None:
        super().forget(namespace, name)
        self._unrecorded.pop((namespace, name), None)
        model = self._models.pop((namespace, name), None)
        if model is not None and model not in self._models.values():
            metrics.MODEL_ACTIVE_VERSION.remove(model)

    # --- one reconcile ------------------------------------------------------------------------------

    def _reconcile(self, namespace: str, name: str) -> None:
        obj = self.kube.get_model_deployment(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)  # owner references take the Deployments and Service with it
            return
        previous = obj.get("status") or {}
        now = datetime.now(timezone.utc)
        try:
            md = parse_model_deployment(obj)
        except SpecError as exc:
            return self._reject(obj, previous, exc, now)
        owner = serving_owner(self.kube.list_model_deployments(namespace), md.spec.model_name)
        if owner not in (None, name):
            return self._duplicate(obj, previous, owner, md, now)
        self._models[(namespace, name)] = md.spec.model_name
        versions, deployments, pods, service = self._read(md, first=_undecided(previous))
        if service is not None and not serves_for(service, md):
            # Someone else's Service has the model's name (a TrainingJob's headless Service is named
            # after the job, and a model after its job by default): never take it over.
            return self._reject(obj, previous, SpecError(
                "spec.modelName", f"names Service {md.spec.model_name}, which already exists and is not this "
                f"ModelDeployment's ({describe_owner(service)}): choose another modelName"), now)
        observed = ServingObserved(
            versions=versions,
            deployments={v: view_version_health(d, pods, md.spec.failover.crash_loop_restarts) for v, d in deployments.items()},
            selected=selected_version(service),
            now=now,
        )
        plan = self._decide(md, previous, observed, pods)
        carried = self._carry((namespace, name), previous, plan, observed)
        clear_trouble(plan.status)
        try:
            self._act(md, plan, versions, deployments, service)
        except Refused as exc:  # asking again gets the same answer: the user must change the spec
            return self._reject(obj, previous, SpecError("spec", f"was refused by the API server: {exc}"), now)
        self._record(obj, md, previous, plan, carried)
        if plan.recheck_after is not None and self.on_due is not None:
            self.on_due((namespace, name), plan.recheck_after)

    def _read(self, md: ModelDeployment, first: bool) -> tuple[dict[int, ModelVersion], dict[int, dict], list[dict], dict | None]:
        """What the pass observes. Before the first version is chosen, the ModelVersions come from
        the API server: versions created just before the ModelDeployment may not have come through
        their watch yet, and the first choice is served at once (a later version that came late
        would be deployed, then replace it)."""
        versions: dict[int, ModelVersion] = {}
        listed = self.kube.list_model_versions_now(md.namespace) if first else self.kube.list_model_versions(md.namespace, "")
        for item in listed:
            if (item.get("spec") or {}).get("modelName") != md.spec.model_name:
                continue
            try:
                parsed = parse_model_version(item)
            except SpecError as exc:
                log.warning("ignoring ModelVersion %s/%s: %s", md.namespace, item["metadata"]["name"], exc)
                continue
            versions[parsed.version] = parsed
        deployments = {}
        for item in self.kube.list_deployments(md.namespace, deployment_selector(md)):
            label = ((item.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL, "")
            if label.isdigit():
                deployments[int(label)] = item
        pods = self.kube.list_pods(md.namespace, deployment_selector(md))
        return versions, deployments, pods, self.kube.get_service(md.namespace, md.spec.model_name)

    def _decide(self, md: ModelDeployment, previous: Mapping[str, Any], observed: ServingObserved,
                pods: list[dict]) -> ServingPlan:
        """Decide; when the decision asks for golden requests, send them and decide again."""
        plan = decide_serving(md, previous, observed)
        for _ in range(len(observed.versions) + 1):
            if not plan.verify:
                break
            verified = dict(observed.verified)
            for version in plan.verify:
                answer = self.golden(md, version, _ready_pod(pods, version))
                verified[version] = answer is True  # no answer fails closed, like a wrong one
            observed = replace(observed, verified=verified)
            plan = decide_serving(md, previous, observed)
        if False in observed.verified.values():
            due = plan.recheck_after
            plan.recheck_after = GOLDEN_RETRY_SECONDS if due is None else min(due, GOLDEN_RETRY_SECONDS)
        return plan

    def _act(self, md: ModelDeployment, plan: ServingPlan, versions: Mapping[int, ModelVersion],
             deployments: Mapping[int, dict], service: dict | None) -> None:
        if plan.switch is not None:
            self._switch(md, plan, service is not None)
        for version, replicas in sorted(plan.replicas.items()):
            self._ensure_deployment(md, version, replicas, versions.get(version), deployments.get(version))
        for version in plan.delete:
            log.info("ModelDeployment %s/%s: deleting Deployment of v%d", md.namespace, md.name, version)
            self.kube.delete_deployment(md.namespace, version_name(md.spec.model_name, version))
        for version, status in plan.version_status.items():
            log.info("ModelDeployment %s/%s: v%d is %s (%s)", md.namespace, md.name, version, status.get("phase"),
                     status.get("message"))
            self.kube.patch_model_version_status(md.namespace, versions[version].name, status)

    def _switch(self, md: ModelDeployment, plan: ServingPlan, service_exists: bool) -> None:
        switch = plan.switch
        if service_exists:
            self.kube.patch_service(md.namespace, md.spec.model_name, selector_patch(md, switch.to_version))
        else:
            self.kube.create_service(build_service(md, switch.to_version))
        trigger = datetime.now(timezone.utc)
        log.info("%s/%s: traffic of %s switched %s-> v%d (%s)", md.namespace, md.name, md.spec.model_name,
                 f"v{switch.from_version} " if switch.from_version is not None else "", switch.to_version, switch.reason)
        # The decision measured up to its own clock; the patch landed a little later.
        history = plan.status["history"]
        entry = next(e for e in reversed(history) if e.get("to") == switch.to_version and e.get("reason") == switch.reason)
        decided = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        entry["switchLatencySeconds"] = round(switch.latency + max(0.0, (trigger - decided).total_seconds()), 3)
        entry["time"] = precise(trigger)
        plan.switch = replace(switch, latency=entry["switchLatencySeconds"])
        event = next((e for e in plan.events if e[1] == SWITCH_EVENTS[switch.reason]), None)
        self._unrecorded[(md.namespace, md.name)] = Unrecorded(plan.switch, dict(entry), event)

    def _carry(self, key: Key, previous: Mapping[str, Any], plan: ServingPlan,
               observed: ServingObserved) -> Switch | None:
        """Put an earlier pass's switch that moved the traffic but was never recorded into this
        pass's status and Events; the switch, for its metrics (None when there is none)."""
        lost = self._unrecorded.get(key)
        if lost is None:
            return None
        history = plan.status["history"]
        before = list(previous.get("history") or [])
        if observed.selected != lost.switch.to_version or lost.entry in before:  # moved on, or recorded
            del self._unrecorded[key]
            return None
        kept = [e for e in history if e in before]
        plan.status["history"] = (kept + [lost.entry] + [e for e in history if e not in before])[-HISTORY_LIMIT:]
        if lost.switch.from_version is not None and plan.switch is None:
            plan.status["previousVersion"] = lost.switch.from_version
        if lost.event is not None:
            plan.events.insert(0, lost.event)
        return lost.switch

    def _ensure_deployment(self, md: ModelDeployment, version: int, replicas: int, mv: ModelVersion | None,
                           existing: dict | None) -> None:
        name = version_name(md.spec.model_name, version)
        if mv is None:  # its ModelVersion is gone: only the scale can still be managed
            if existing is not None and (existing.get("spec") or {}).get("replicas") != replicas:
                self.kube.patch_deployment(md.namespace, name, {"spec": {"replicas": replicas}})
            return
        desired = build_deployment(md, mv, replicas, self.settings)
        if existing is None:
            if replicas > 0:
                log.info("ModelDeployment %s/%s: creating Deployment %s (%d replicas)", md.namespace, md.name,
                         name, replicas)
                self.kube.create_deployment(desired)
            return
        patch = deployment_update(desired, existing)
        if patch:
            log.info("ModelDeployment %s/%s: updating Deployment %s (%d replicas)", md.namespace, md.name,
                     name, replicas)
            self.kube.patch_deployment(md.namespace, name, patch)

    def _record(self, obj: dict, md: ModelDeployment, previous: Mapping[str, Any], plan: ServingPlan,
                carried: Switch | None = None) -> None:
        status = plan.status
        if status != previous:
            log.info("ModelDeployment %s/%s: status active=v%s target=v%s", md.namespace, md.name,
                     status.get("activeVersion"), status.get("targetVersion"))
            self.kube.patch_model_deployment_status(md.namespace, md.name, status_patch(previous, status))
        self._unrecorded.pop((md.namespace, md.name), None)
        for kind, reason, message in plan.events:
            log.info("ModelDeployment %s/%s: event %s %s: %s", md.namespace, md.name, kind, reason, message)
            self.kube.emit_event(obj, kind, reason, message)
        model = md.spec.model_name
        for switch in (carried, plan.switch):
            if switch is not None:
                metrics.MODEL_SWITCHES.labels(model, switch.reason).inc()
                metrics.MODEL_SWITCH_SECONDS.labels(switch.reason).observe(switch.latency)
        for _ in plan.rejected:
            metrics.MODEL_GATE_REJECTIONS.labels(model).inc()
        if status.get("activeVersion") is not None:
            metrics.MODEL_ACTIVE_VERSION.labels(model).set(status["activeVersion"])

    def _reject(self, obj: dict, previous: Mapping[str, Any], exc: SpecError, now: datetime) -> None:
        """A spec the operator cannot use: say so, and leave traffic where it is."""
        meta = obj["metadata"]
        generation = int(meta.get("generation") or 0)
        status = dict(previous, observedGeneration=generation)
        conditions = list(previous.get("conditions") or [])
        conditions = cond.set_condition(conditions, "Progressing", False, "InvalidSpec", str(exc), now, generation)
        status["conditions"] = cond.set_condition(conditions, "Degraded", True, "InvalidSpec", str(exc), now, generation)
        if status != previous:
            log.warning("ModelDeployment %s/%s: %s", meta["namespace"], meta["name"], exc)
            self.kube.patch_model_deployment_status(meta["namespace"], meta["name"], status)
            self.kube.emit_event(obj, "Warning", "InvalidSpec", str(exc))

    def _duplicate(self, obj: dict, previous: Mapping[str, Any], owner: str, md: ModelDeployment,
                   now: datetime) -> None:
        """A second ModelDeployment of a served model: it says so and touches nothing else."""
        status = duplicate_status(previous, owner, md.spec.model_name, now, md.generation)
        if status != previous:
            message = next(c["message"] for c in status["conditions"] if c["type"] == "Degraded")
            log.warning("ModelDeployment %s/%s: %s", md.namespace, md.name, message)
            self.kube.patch_model_deployment_status(md.namespace, md.name, status)
            self.kube.emit_event(obj, "Warning", DUPLICATE, message)


def serves_for(service: Mapping[str, Any], md: ModelDeployment) -> bool:
    """True when `service` is the stable Service this ModelDeployment made (build_service labels it)."""
    labels = (service.get("metadata") or {}).get("labels") or {}
    return labels.get(DEPLOYMENT_LABEL) == md.name


def describe_owner(service: Mapping[str, Any]) -> str:
    refs = (service.get("metadata") or {}).get("ownerReferences") or []
    return ", ".join(f"owned by {r.get('kind')} {r.get('name')}" for r in refs) or "made by someone else"


def _undecided(previous: Mapping[str, Any]) -> bool:
    """No version was ever chosen to serve (nothing promoted, nothing active)."""
    return previous.get("promotedVersion") is None and previous.get("activeVersion") is None


def status_patch(previous: Mapping[str, Any], status: Mapping[str, Any]) -> dict:
    """A merge patch from `previous` to `status`: keys that went away are set to null (deleted)."""
    return {**{k: None for k in previous if k not in status}, **status}


def _ready_pod(pods: list[dict], version: int) -> dict | None:
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(VERSION_LABEL) != str(version) or meta.get("deletionTimestamp"):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])
        if ready:
            return pod
    return None
