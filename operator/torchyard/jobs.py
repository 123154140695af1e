"""Reconcile one TrainingJob: observe, decide, act, record.

The only place that joins the pure pieces (parsing, builders, decide) to the API layer. Every
trigger queues the job's key (torchyard.workqueue); a worker calls :meth:`JobReconciler.reconcile`,
one pass per job at a time. The job, its pods and its Service come from the `Kube` it is given: in
the operator the watch cache (kube/cache.py); while the operator's own writes have yet to show in
the watch, a pass waits instead (counted apart from the passes that decide), and reads the API
server only after one of them failed to show in time. It writes status only when the decision
changed it, and queues the job's next pass for when a time-based rule falls due.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from datetime import datetime, timezone
from typing import Callable

from torchyard import metrics
from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import TrainingJob, managed_elsewhere, parse_training_job
from torchyard.builders import gang
from torchyard.builders.pods import build_pod, build_service
from torchyard.builders.security import check_overrides
from torchyard.builders.strategies import strategy_for
from torchyard.fanout import Fanout
from torchyard.kube.client import Kube, Refused
from torchyard.nodes import NodeHealth
from torchyard.progress import token_matches
from torchyard.reconcile.conditions import timestamp
from torchyard.reconcile.decide import TERMINAL, Observed, Plan, decide, detail_only, invalid_spec
from torchyard.queueing import Queueing
from torchyard.reconcile import kueue
from torchyard.reconcile.due import next_due
from torchyard.reconcile.observe import parse_time, view_pod
from torchyard.reconciler import Reconciler, clear_trouble
from torchyard.registry import ModelRegistry
from torchyard.settings import Settings
from torchyard_spec import contract

log = logging.getLogger(__name__)
# A rule that fell due and acted may still see its moment until the watch shows the result.
MIN_DUE_SECONDS = 1.0
# The check for expectations that expired unmet runs this long after their moment, so it finds them expired.
EXPIRY_MARGIN_SECONDS = 0.1
# A status change in details alone (decide.detail_only: which pods still wait, the pods counted by
# phase) is written at most this often per job; one that comes sooner waits for that moment, and
# is written then unless a write with more in it came first. A gang that starts within it costs a
# write for Pending and one for Running, not one more for each pod that started in between.
DETAIL_SECONDS = 5.0
# The part of the spec each built object comes from, named when the API server refuses it.
ROLE_FIELDS = {contract.ROLE_WORKER: "spec.worker", contract.ROLE_PARAMETER_SERVER: "spec.parameterServer"}
GANG_FIELD = "spec.runPolicy.gangScheduling"


class JobReconciler(Reconciler):
    kind = "TrainingJob"

    def __init__(self, kube: Kube, settings: Settings, nodes: NodeHealth | None = None,
                 fanout: Fanout | None = None):
        super().__init__()
        self.kube = kube
        self.settings = settings
        self.nodes = nodes or NodeHealth()
        self.fanout = fanout or Fanout()  # a pass's creates and deletes at once (torchyard.fanout)
        self.registry = ModelRegistry(kube)
        self._phases: dict[tuple[str, str], str] = {}
        self._written: dict[tuple[str, str], float] = {}  # when each job's status was last written
        self._stale: set[tuple[str, str]] = set()  # jobs whose status waits for a detail: a pass is due
        # Called with a job's key and a delay when its next time-based rule falls due (the work
        # queue's add_after), and with `when=` for a safety that holds only if nothing else
        # happened meanwhile; None: a periodic resync finds it instead.
        self.on_due: Callable[..., None] | None = None
        # With --kueue: queued jobs run only while Kueue admits them (torchyard.queueing).
        self.queueing: Queueing | None = None

    def _read(self, namespace: str, name: str) -> dict | None:
        return self.kube.get_job(namespace, name)

    def _patch_status(self, namespace: str, name: str, status: dict) -> None:
        self.kube.patch_job_status(namespace, name, status)

    def forget(self, namespace: str, name: str) -> None:
        super().forget(namespace, name)
        self._set_phase_gauge(namespace, name, None)
        self._written.pop((namespace, name), None)
        self._stale.discard((namespace, name))

    def _reconcile(self, namespace: str, name: str) -> None:
        obj = self.kube.get_job(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            return
        if managed_elsewhere(obj):  # spec.runPolicy.managedBy: another controller runs it
            return
        previous = obj.get("status") or {}
        now = datetime.now(timezone.utc)
        try:
            job = parse_training_job(obj)
            check_overrides(job, self.settings)  # what this operator's administrator allows
        except SpecError as exc:
            return self._reject(obj, previous, exc, now)
        observed = self._observe(job, now)
        job, hold = self.queueing.admit(job, previous, len(observed.pods), now) if self.queueing else (job, None)
        plan = decide(job, previous, observed)
        if hold is not None:
            kueue.explain_hold(plan.status, hold, now)
        try:  # a distillation teacher named as a ModelVersion becomes its artifact path
            trainer_config = self.registry.trainer_config(job) if plan.create_pods else None
        except SpecError as exc:
            return self._reject(obj, previous, exc, now)
        clear_trouble(plan.status)
        recorded = _records_first(job, previous, plan)
        if recorded:
            self._record(obj, job, previous, plan)
        try:
            self._gang(job, plan)
            self._act(job, plan, trainer_config)
        except SpecError as exc:  # the API server refused an object built from the spec
            return self._reject(obj, previous, exc, now)
        finally:
            self._await_writes(namespace, name, plan)
        if not recorded:
            self._record(obj, job, previous, plan)
        self.registry.record(obj, job, plan.status)
        self._schedule(job, plan.status, observed)
        if self.on_due and plan.status != previous and not _acts(plan):
            if hold is not None or not _settled(job, plan, observed):  # a queued job's gate is no pure decision
                self.on_due((namespace, name), 0)

    def _waits(self, namespace: str, name: str) -> bool:
        """While the watch has yet to show this job's own creates and deletes, a pass would see
        the world from before them: it waits (as controllers' expectations do). The event that
        shows the last of them queues the job (handlers/trainingjob.py); the safety queued with
        the writes covers one the watch never shows."""
        wait = self.kube.unsettled(namespace, name) if self.on_due else 0.0
        if wait > 0:
            self._expire((namespace, name), wait)
        return wait > 0

    def _await_writes(self, namespace: str, name: str, plan: Plan) -> None:
        """After a pass's creates and deletes: the event that shows the last of them queues the
        job's next pass (one shown while this pass ran goes once this pass ends); a safety at
        their expiry covers one the watch never shows."""
        wait = self.kube.unsettled(namespace, name) if self.on_due and _expects(plan) else 0.0
        if wait > 0:
            self._expire((namespace, name), wait)

    def _expire(self, key: tuple[str, str], wait: float) -> None:
        """Queue the job when its expectations expire, only if one did so unmet: the watch lagged
        too far, and the next pass reads what it expected from the API server (kube/cache.py)."""
        self.on_due(key, wait + EXPIRY_MARGIN_SECONDS, when=partial(self.kube.lapsed, *key))

    def _schedule(self, job: TrainingJob, status: dict, observed: Observed) -> None:
        """Queue the job's next pass for when a time-based rule falls due (no sweep finds it)."""
        due = next_due(job, status, observed) if self.on_due else None
        if due is not None:
            delay = (due - observed.now).total_seconds()
            self.on_due((job.namespace, job.name), max(delay, MIN_DUE_SECONDS))

    def _observe(self, job: TrainingJob, now: datetime) -> Observed:
        pods = tuple(view_pod(p) for p in self.kube.list_job_pods(job.namespace, job.name))
        return Observed(
            pods=pods,
            service_exists=self.kube.service_exists(job.namespace, job.name),
            now=now,
            stuck_terminating_seconds=self.settings.stuck_terminating_seconds,
            progress_reported=bool(self.settings.progress_url_base),
            node_faults=self.nodes.faults(),
            node_failure_seconds=self.settings.node_failure_seconds,
            gang_api_served=self._gang_api_served(job),
        )

    def _act(self, job: TrainingJob, plan: Plan, trainer_config: dict | None = None) -> None:
        """Deletes first, then creates, each group sent at once; status is mostly written after
        (see _records_first), so a crash in between repeats work instead of recording work that
        was never done."""
        for name in plan.force_delete_pods:
            log.warning("force-deleting pod %s/%s stuck terminating", job.namespace, name)
        if plan.delete_pods:
            log.info("TrainingJob %s/%s: deleting pods %s", job.namespace, job.name, ", ".join(plan.delete_pods))
        self.fanout.all([partial(self.kube.delete_pod, job.namespace, name, force=True) for name in plan.force_delete_pods]
                        + [partial(self.kube.delete_pod, job.namespace, name) for name in plan.delete_pods])
        if plan.create_service:
            log.info("TrainingJob %s/%s: creating its Service", job.namespace, job.name)
        if plan.create_pods:
            log.info("TrainingJob %s/%s: creating pods %s (attempt %d)", job.namespace, job.name,
                     ", ".join(f"{role}-{index}" for role, index in plan.create_pods), plan.status["attempt"])
        self.fanout.all(self._creates(job, plan, trainer_config))
        if plan.delete_job:
            log.info("deleting TrainingJob %s/%s: ttlSecondsAfterFinished passed", job.namespace, job.name)
            self.kube.delete_job(job.namespace, job.name)

    def _creates(self, job: TrainingJob, plan: Plan, trainer_config: dict | None) -> list[Callable[[], None]]:
        creates = [partial(_create, self.kube.create_service, build_service(job), "metadata.name")] \
            if plan.create_service else []
        roles = {r.name: r for r in strategy_for(job.spec).roles(job.spec)}
        for role, index in plan.create_pods:
            pod = build_pod(job, roles[role], index, plan.status["attempt"], self.settings, trainer_config)
            creates.append(partial(_create, self.kube.create_pod, pod, ROLE_FIELDS[role]))
        return creates

    def _gang_api_served(self, job: TrainingJob) -> bool:
        """Asked only for a job in gang mode: other jobs need nothing from the cluster."""
        return not job.spec.run_policy.gang_scheduling or self.kube.serves(gang.GROUP, gang.VERSION, gang.PLURAL)

    def _gang(self, job: TrainingJob, plan: Plan) -> None:
        """The job's Workload before its pods (builders/gang.py). One left by an older job of the
        same name, or made for other replica counts, is replaced: its pod groups are immutable."""
        if not plan.create_workload:
            return
        desired = gang.build_workload(job)
        existing = _create(self.kube.create_workload, desired, GANG_FIELD)
        if existing is not None and not (gang.same_gang(existing, desired) and gang.owned_by(existing, job)):
            log.info("TrainingJob %s/%s: replacing its gang's %s", job.namespace, job.name, gang.KIND)
            self.kube.delete_workload(job.namespace, desired["metadata"]["name"])
            _create(self.kube.create_workload, desired, GANG_FIELD)

    def _record(self, obj: dict, job: TrainingJob, previous: dict, plan: Plan) -> None:
        status = plan.status
        if status != previous and not self._defers((job.namespace, job.name), previous, status):
            self._log_change(job, previous, status)
            self.kube.patch_job_status(job.namespace, job.name, status, obj["metadata"].get("resourceVersion"))
            self._written[(job.namespace, job.name)] = time.monotonic()
            self._stale.discard((job.namespace, job.name))
        for kind, reason, message in plan.events:
            log.info("TrainingJob %s/%s: event %s %s: %s", job.namespace, job.name, kind, reason, message)
            self.fanout.later(partial(self.kube.emit_event, obj, kind, reason, message),
                              f"event {reason} for TrainingJob {job.namespace}/{job.name}")
        phase = status.get("phase", "")
        if phase != previous.get("phase"):
            metrics.PHASE_TRANSITIONS.labels(job.namespace, phase).inc()
            self._count_restart(job, previous, status)
            if phase == "Running" and status.get("attempt", 0) == 0 and not previous.get("phase") == "Running":
                self._observe_time_to_running(obj)
        self._set_phase_gauge(job.namespace, job.name, phase)

    def _defers(self, key: tuple[str, str], previous: dict, status: dict) -> bool:
        """Whether a change in details alone waits: the job's status was written less than
        DETAIL_SECONDS ago. Its pass is queued for then, if nothing wrote the status meanwhile."""
        last = self._written.get(key)
        if self.on_due is None or last is None or not detail_only(previous, status):
            return False
        wait = last + DETAIL_SECONDS - time.monotonic()
        if wait <= 0:
            return False
        if key not in self._stale:
            self._stale.add(key)
            self.on_due(key, wait, when=partial(self._detail_due, key))
        return True

    def _detail_due(self, key: tuple[str, str]) -> bool:
        """At a deferred detail's moment: a pass, unless a status write came first."""
        if key not in self._stale:
            return False
        self._stale.discard(key)
        return True

    def _log_change(self, job: TrainingJob, previous: dict, status: dict) -> None:
        """One line per status write; the phase and counters in it, so a log alone tells the story."""
        counters = " ".join(f"{k}={status.get(k, 0)}" for k in ("attempt", "restarts", "infrastructureRestarts"))
        before, after = previous.get("phase") or "-", status.get("phase") or "-"
        change = f"{before} -> {after}" if before != after else after
        log.info("TrainingJob %s/%s: status %s (%s): %s", job.namespace, job.name, change, counters,
                 status.get("message", ""))

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
        self.kube.patch_job_status(namespace, name, {"progress": _progress(obj, report)})
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


def _progress(obj: dict, report: dict) -> dict:
    """The report as status.progress, with when it arrived and when the step last changed (the
    progress watchdog's clock: a rank that reports without stepping is not progressing)."""
    now = timestamp(datetime.now(timezone.utc))
    before = (obj.get("status") or {}).get("progress") or {}
    same_step = before.get("stepTime") and before.get("step") == report.get("step")
    return dict(report, updateTime=now, stepTime=before["stepTime"] if same_step else now)


def _create(create, manifest: dict, field: str):
    """Create one object built from the spec. The API server refusing it will refuse it again:
    that is an invalid spec, named by the part of the spec the object came from, with the API
    server's own message."""
    try:
        return create(manifest)
    except Refused as exc:
        raise SpecError(field, f"was refused by the API server: {exc}") from exc


def _acts(plan: Plan) -> bool:
    """Whether the plan writes anything but status: the watch then shows it, and what changes after
    queues the job."""
    return bool(plan.create_service or plan.create_pods or plan.delete_pods or plan.force_delete_pods
                or plan.delete_job or plan.create_workload)


def _expects(plan: Plan) -> bool:
    """Whether the plan's writes are ones the watch is expected to show (kube/cache.py)."""
    return bool(plan.create_service or plan.create_pods or plan.delete_pods or plan.force_delete_pods)


def _settled(job: TrainingJob, plan: Plan, observed: Observed) -> bool:
    """Whether a pass that only wrote status would decide the same again from that status. The
    echo of its own status write queues no pass (kube/cache.py), so a decision that takes two
    steps (a phase that the next pass acts on) goes again here, with no event."""
    follow = decide(job, plan.status, observed)
    return follow.status == plan.status and not _acts(follow)


def _records_first(job: TrainingJob, previous: dict, plan: Plan) -> bool:
    """Whether the status goes before the pod deletions: when a restart begins, of the gang or
    (restartScope Pod) of the failed pods. Deleting first, a crash before the status write would
    leave the failure unrecorded: the next pass would count a vanished gang as an infrastructure
    restart, or recreate a vanished pod with its failure never counted. Recorded first, the new
    attempt number makes the next pass delete the old gang, and status.countedFailures the counted
    pods, without counting anything twice (reconcile/decide.py)."""
    new_attempt = plan.status.get("attempt", 0) != previous.get("attempt", 0)
    return new_attempt and bool(plan.delete_pods)
