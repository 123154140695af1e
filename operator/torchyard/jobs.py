"""Reconcile one TrainingJob: observe, decide, act, record.

The only place that joins the pure pieces (parsing, builders, decide) to the API layer. Every
trigger calls :meth:`JobReconciler.reconcile` with a namespace and name; it re-reads the job and
its pods from the API server under a per-job lock, so two triggers never act on the same stale
view, and it writes status only when the decision changed it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from torchyard import metrics
from torchyard.coalesce import Coalescer
from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import TrainingJob, parse_training_job
from torchyard.builders.pods import build_pod, build_service
from torchyard.builders.strategies import strategy_for
from torchyard.kube.client import Kube
from torchyard.progress import token_matches
from torchyard.reconcile.conditions import timestamp
from torchyard.reconcile.decide import TERMINAL, Observed, Plan, decide, invalid_spec
from torchyard.reconcile.observe import parse_time, view_pod
from torchyard.registry import ModelRegistry
from torchyard.settings import Settings

log = logging.getLogger(__name__)


class JobReconciler:
    def __init__(self, kube: Kube, settings: Settings):
        self.kube = kube
        self.settings = settings
        self.registry = ModelRegistry(kube)
        self._passes = Coalescer()
        self._phases: dict[tuple[str, str], str] = {}

    def reconcile(self, namespace: str, name: str) -> None:
        self._passes.run((namespace, name), lambda: self._timed(namespace, name))

    def _timed(self, namespace: str, name: str) -> None:
        with metrics.reconciling("TrainingJob"):
            self._reconcile(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self._set_phase_gauge(namespace, name, None)

    def _reconcile(self, namespace: str, name: str) -> None:
        obj = self.kube.get_job(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            return
        previous = obj.get("status") or {}
        now = datetime.now(timezone.utc)
        try:
            job = parse_training_job(obj)
        except SpecError as exc:
            return self._reject(obj, previous, exc, now)
        plan = decide(job, previous, self._observe(job, now))
        try:  # a distillation teacher named as a ModelVersion becomes its artifact path
            trainer_config = self.registry.trainer_config(job) if plan.create_pods else None
        except SpecError as exc:
            return self._reject(obj, previous, exc, now)
        self._act(job, plan, trainer_config)
        self._record(obj, job, previous, plan)
        self.registry.record(obj, job, plan.status)

    def _observe(self, job: TrainingJob, now: datetime) -> Observed:
        pods = tuple(view_pod(p) for p in self.kube.list_job_pods(job.namespace, job.name))
        return Observed(
            pods=pods,
            service_exists=self.kube.service_exists(job.namespace, job.name),
            now=now,
            stuck_terminating_seconds=self.settings.stuck_terminating_seconds,
        )

    def _act(self, job: TrainingJob, plan: Plan, trainer_config: dict | None = None) -> None:
        """Deletes first, then creates; status is written last, so a crash in between repeats work
        instead of recording work that was never done."""
        for name in plan.force_delete_pods:
            log.warning("force-deleting pod %s/%s stuck terminating", job.namespace, name)
            self.kube.delete_pod(job.namespace, name, force=True)
        for name in plan.delete_pods:
            self.kube.delete_pod(job.namespace, name)
        if plan.create_service:
            self.kube.create_service(build_service(job))
        roles = {r.name: r for r in strategy_for(job.spec).roles(job.spec)}
        for role, index in plan.create_pods:
            self.kube.create_pod(build_pod(job, roles[role], index, plan.status["attempt"], self.settings, trainer_config))
        if plan.delete_job:
            log.info("deleting TrainingJob %s/%s: ttlSecondsAfterFinished passed", job.namespace, job.name)
            self.kube.delete_job(job.namespace, job.name)

    def _record(self, obj: dict, job: TrainingJob, previous: dict, plan: Plan) -> None:
        status = plan.status
        if status != previous:
            self.kube.patch_job_status(job.namespace, job.name, status, obj["metadata"].get("resourceVersion"))
        for kind, reason, message in plan.events:
            self.kube.emit_event(obj, kind, reason, message)
        phase = status.get("phase", "")
        if phase != previous.get("phase"):
            metrics.PHASE_TRANSITIONS.labels(job.namespace, phase).inc()
            self._count_restart(job, previous, status)
            if phase == "Running" and status.get("attempt", 0) == 0 and not previous.get("phase") == "Running":
                self._observe_time_to_running(obj)
        self._set_phase_gauge(job.namespace, job.name, phase)

    def accept_progress(self, namespace: str, name: str, token: str, report: dict) -> tuple[int, str]:
        """A pod's progress report, written straight into the job's status by whichever replica got
        it. Returns an HTTP status and a message for the pod."""
        obj = self.kube.get_job(namespace, name)
        if obj is None:
            return 404, f"no TrainingJob {namespace}/{name}"
        if not token_matches(self.settings.progress_key, namespace, name, obj["metadata"].get("uid", ""), token):
            return 403, "bearer token does not belong to this job"
        if (obj.get("status") or {}).get("phase") in TERMINAL:
            return 409, f"TrainingJob {namespace}/{name} has finished"
        progress = dict(report, updateTime=timestamp(datetime.now(timezone.utc)))
        self.kube.patch_job_status(namespace, name, {"progress": progress})
        return 202, "accepted"

    def _reject(self, obj: dict, previous: dict, exc: SpecError, now: datetime) -> None:
        meta = obj["metadata"]
        status = invalid_spec(previous, exc.field, exc.problem, now, int(meta.get("generation") or 0))
        if status != previous:
            log.warning("TrainingJob %s/%s cannot run: %s", meta["namespace"], meta["name"], exc)
            self.kube.patch_job_status(meta["namespace"], meta["name"], status)
            self.kube.emit_event(obj, "Warning", "InvalidSpec", str(exc))
            metrics.PHASE_TRANSITIONS.labels(meta["namespace"], "Failed").inc()
        self._set_phase_gauge(meta["namespace"], meta["name"], "Failed")

    def _count_restart(self, job: TrainingJob, previous: dict, status: dict) -> None:
        if status.get("restarts", 0) > previous.get("restarts", 0):
            metrics.RESTARTS.labels(job.namespace, "user").inc()
        if status.get("infrastructureRestarts", 0) > previous.get("infrastructureRestarts", 0):
            metrics.RESTARTS.labels(job.namespace, "infrastructure").inc()

    def _observe_time_to_running(self, obj: dict) -> None:
        created = parse_time(obj["metadata"].get("creationTimestamp"))
        if created is not None:
            metrics.TIME_TO_RUNNING.observe((datetime.now(timezone.utc) - created).total_seconds())

    def _set_phase_gauge(self, namespace: str, name: str, phase: str | None) -> None:
        key = (namespace, name)
        old = self._phases.pop(key, None)
        if old is not None:
            metrics.JOBS.labels(namespace, old).dec()
        if phase is not None:
            self._phases[key] = phase
            metrics.JOBS.labels(namespace, phase).inc()
