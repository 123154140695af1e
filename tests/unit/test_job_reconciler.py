"""The job reconciler's order of writes, over an in-memory API: what a crash in the middle leaves."""

from __future__ import annotations

import copy

import pytest

from jobs import ALLREDUCE_CPU
from torchyard import metrics
from torchyard.jobs import DETAIL_SECONDS, JobReconciler
from torchyard.settings import Settings


class Crash(Exception):
    """The operator dies here (SIGKILL): nothing after this call happens."""


class FakeKube:
    """A job with two workers; every write is logged; `crash_on` names the call that never returns."""

    def __init__(self, status: dict, pods: list[dict], crash_on: str = ""):
        self.job = copy.deepcopy(ALLREDUCE_CPU)
        self.job["spec"]["runPolicy"] = {"backoffLimit": 3}
        self.job["metadata"]["resourceVersion"] = "7"
        self.job["status"] = status
        self.pods, self.crash_on, self.writes = pods, crash_on, []

    def get_job(self, namespace, name):
        return copy.deepcopy(self.job)

    def list_job_pods(self, namespace, name):
        return copy.deepcopy(self.pods)

    def service_exists(self, namespace, name):
        return True

    def list_model_versions(self, namespace, selector):
        return []

    def __getattr__(self, name):  # every other call is a write
        def write(*args, **kwargs):
            if name == self.crash_on:
                raise Crash(name)
            self.writes.append((name, *args))
            if name == "patch_job_status":
                self.job["status"] = {**self.job["status"], **args[2]}
        return write


def pod(index: int, phase: str = "Running", exit_code: int | None = None) -> dict:
    state = {"terminated": {"exitCode": exit_code, "reason": "Error"}} if exit_code is not None else {"running": {}}
    return {"metadata": {"name": f"digits-worker-{index}", "uid": f"u{index}",
                         "labels": {"torchyard.dev/role": "worker", "torchyard.dev/index": str(index),
                                    "torchyard.dev/attempt": "0"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": phase, "containerStatuses": [{"state": state}]}}


RUNNING = {"phase": "Running", "attempt": 0, "restarts": 0, "startTime": "2026-01-01T11:00:00Z",
           "attemptStartTime": "2026-01-01T11:00:00Z", "conditions": []}


def test_a_gang_restart_is_recorded_before_the_old_gang_is_deleted():
    # Were the failed pod deleted first, a crash before the status write would leave its failure
    # unrecorded; the next pass would see vanished pods and count an infrastructure restart.
    kube = FakeKube(dict(RUNNING), [pod(0), pod(1, "Failed", exit_code=1)], crash_on="delete_pod")
    with pytest.raises(Crash):
        JobReconciler(kube, Settings()).reconcile("ml", "digits")
    assert [w[0] for w in kube.writes] == ["patch_job_status", "emit_event"]  # and then the crash
    assert (kube.job["status"]["attempt"], kube.job["status"]["restarts"]) == (1, 1)

    # The restarted operator deletes the old gang because of the recorded attempt, and counts nothing again.
    kube.crash_on = ""
    JobReconciler(kube, Settings()).reconcile("ml", "digits")
    assert sorted(w[2] for w in kube.writes if w[0] == "delete_pod") == ["digits-worker-0", "digits-worker-1"]
    assert (kube.job["status"]["attempt"], kube.job["status"]["restarts"]) == (1, 1)
    assert kube.job["status"].get("infrastructureRestarts", 0) == 0


def test_a_pod_scope_restart_is_recorded_before_the_failed_pod_is_deleted_and_counted_once():
    kube = FakeKube(dict(RUNNING), [pod(0), pod(1, "Failed", exit_code=1)], crash_on="delete_pod")
    kube.job["spec"]["runPolicy"]["restartScope"] = "Pod"
    with pytest.raises(Crash):
        JobReconciler(kube, Settings()).reconcile("ml", "digits")
    assert [w[0] for w in kube.writes][0] == "patch_job_status"  # and then the crash
    status = kube.job["status"]
    assert (status["attempt"], status["restarts"], status["countedFailures"]) == (1, 1, ["u1"])

    # The restarted operator deletes the counted pod and counts nothing again.
    kube.crash_on = ""
    JobReconciler(kube, Settings()).reconcile("ml", "digits")
    assert [w[2] for w in kube.writes if w[0] == "delete_pod"] == ["digits-worker-1"]
    assert (kube.job["status"]["attempt"], kube.job["status"]["restarts"]) == (1, 1)


class Unsettled(FakeKube):
    """Its own creates have yet to show in the watch for `wait` seconds more."""

    def __init__(self, *args, wait: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.wait = wait

    def unsettled(self, namespace, name):
        return self.wait


def waits_counted() -> float:
    return metrics.REGISTRY.get_sample_value("torchyard_reconcile_waits_total", {"kind": "TrainingJob"}) or 0.0


def passes_counted() -> float:
    return metrics.REGISTRY.get_sample_value("torchyard_reconcile_duration_seconds_count", {"kind": "TrainingJob"}) or 0.0


def test_a_job_whose_own_writes_have_yet_to_show_waits_for_them_reads_nothing_and_is_counted_apart():
    kube, queued = Unsettled(dict(RUNNING), [pod(0)], wait=12.5), []
    kube.lapsed = lambda namespace, name: True
    jobs = JobReconciler(kube, Settings())
    jobs.on_due = lambda key, delay, when=None: queued.append((key, delay, when))
    waits, passes = waits_counted(), passes_counted()
    jobs.reconcile("ml", "digits")
    assert kube.writes == []
    assert (waits_counted(), passes_counted()) == (waits + 1, passes), "a wait is no pass that decided"
    # Nothing queued for sure: the event that shows the writes does that. Only a safety at their
    # expiry, which goes only if one of them lapsed unmet.
    [(key, delay, when)] = queued
    assert key == ("ml", "digits") and delay > 12.5 and when() is True


def test_a_pass_that_creates_queues_only_a_safety_for_its_writes_never_shown():
    kube, queued = Unsettled({}, []), []
    jobs = JobReconciler(kube, Settings())
    jobs.on_due = lambda key, delay, when=None: queued.append((key, delay, when))
    kube.unsettled = lambda namespace, name: 30.0 if kube.writes else 0.0  # once the creates went out
    kube.lapsed = lambda namespace, name: False  # by the safety's moment the watch showed them
    jobs.reconcile("ml", "digits")
    assert [w[0] for w in kube.writes if w[0] == "create_pod"] == ["create_pod", "create_pod"]
    safeties = [(delay, when) for _, delay, when in queued if when is not None]
    assert [delay > 30.0 for delay, _ in safeties] == [True] and safeties[0][1]() is False
    assert all(delay > 0 for _, delay, when in queued if when is None), "no plain pass at once"


def test_a_pass_that_only_wrote_status_goes_again_only_when_the_next_decision_differs():
    pending = {**RUNNING, "phase": "Pending"}
    kube, queued = Unsettled(pending, [pod(0), pod(1)]), []
    jobs = JobReconciler(kube, Settings())
    jobs.on_due = lambda key, delay, when=None: queued.append((key, delay, when))
    jobs.reconcile("ml", "digits")
    assert kube.job["status"]["phase"] == "Running"
    assert [w[0] for w in kube.writes if w[0] != "emit_event"] == ["patch_job_status"]
    assert all(delay > 0 for _, delay in queued)  # only time-based rules; nothing at once


def test_a_pass_that_starts_a_gang_gives_the_job_its_phase_at_once():
    """The job is Pending from its first pass, not from the one that sees its pods: the watch
    showing them as created queues no pass (handlers/trainingjob.py), and a gang's pods that never
    change (no scheduler, no room) must not leave the job without a phase."""
    kube, queued = Unsettled({}, []), []
    jobs = JobReconciler(kube, Settings())
    jobs.on_due = lambda key, delay, when=None: queued.append((key, delay, when))
    jobs.reconcile("ml", "digits")
    assert [w[0] for w in kube.writes if w[0] != "emit_event"] == ["create_pod", "create_pod", "patch_job_status"]
    assert kube.job["status"]["phase"] == "Pending" and "creating pods" in kube.job["status"]["message"]
    kube.pods = [pod(0, "Pending"), pod(1, "Pending")]  # a later pass sees them waiting: details only
    jobs.reconcile("ml", "digits")
    assert [w[0] for w in kube.writes].count("patch_job_status") == 1


def test_a_change_in_details_alone_soon_after_a_write_waits_for_its_moment_and_a_phase_change_does_not():
    kube, queued = Unsettled({}, [pod(0, "Pending"), pod(1, "Pending")]), []
    jobs = JobReconciler(kube, Settings())
    jobs.on_due = lambda key, delay, when=None: queued.append((key, delay, when))
    jobs.reconcile("ml", "digits")
    assert kube.job["status"]["phase"] == "Pending" and "digits-worker-0" in kube.job["status"]["message"]
    written = len([w for w in kube.writes if w[0] == "patch_job_status"])

    kube.pods = [pod(0), pod(1, "Pending")]  # one started: the message and the counts change, no more
    queued.clear()
    jobs.reconcile("ml", "digits")
    assert len([w for w in kube.writes if w[0] == "patch_job_status"]) == written
    [(key, delay, when)] = [q for q in queued if q[2] is not None]
    assert 0 < delay <= DETAIL_SECONDS

    kube.pods = [pod(0), pod(1)]  # the phase changes: written at once, details and all
    jobs.reconcile("ml", "digits")
    status = kube.job["status"]
    assert status["phase"] == "Running" and status["replicaStatuses"]["worker"]["running"] == 2
    assert when() is False, "the written status left nothing for the deferred pass"


def test_a_deferred_detail_is_written_by_the_pass_at_its_moment():
    kube, queued = Unsettled({}, [pod(0, "Pending"), pod(1, "Pending")]), []
    jobs = JobReconciler(kube, Settings())
    jobs.on_due = lambda key, delay, when=None: queued.append((key, delay, when))
    jobs.reconcile("ml", "digits")
    kube.pods = [pod(0), pod(1, "Pending")]
    queued.clear()
    jobs.reconcile("ml", "digits")
    [(key, delay, when)] = [q for q in queued if q[2] is not None]
    jobs._written[key] -= DETAIL_SECONDS  # its moment came
    assert when() is True
    jobs.reconcile("ml", "digits")
    status = kube.job["status"]
    assert status["phase"] == "Pending" and status["message"] == "digits-worker-1: Pending"
    assert status["replicaStatuses"]["worker"]["running"] == 1
