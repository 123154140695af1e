"""Which watch events queue a TrainingJob's pass: none while the watch has yet to show the job's
own creates (the pass would only wait for them), the one that shows the last of them does."""

from __future__ import annotations

import asyncio

import kopf

from torchyard import labels as keys
from torchyard.handlers.trainingjob import pod_event, service_event
from torchyard.kube.cache import EXPECTATION_SECONDS, WatchCache

LABELS = {keys.JOB_NAME: "digits", keys.MANAGED_BY: keys.MANAGER}


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Queue:
    def __init__(self):
        self.added = []

    def add(self, key, hold=0.0, most=0.0):
        self.added.append(key)
        self.hold = hold


def memo(clock=None) -> kopf.Memo:
    return kopf.Memo(cache=WatchCache(clock) if clock else WatchCache(), queue=Queue())


def shown(memo, name, version=1, phase="Pending", kind="ADDED"):
    obj = {"metadata": {"namespace": "ml", "name": name, "resourceVersion": str(version), "labels": LABELS},
           "status": {"phase": phase}}
    handler = service_event if name == "digits" else pod_event
    asyncio.run(handler(event={"type": kind, "object": obj}, namespace="ml", labels=LABELS, memo=memo))


def test_the_echoes_of_a_pass_own_creates_queue_no_pass():
    """The pass that created them counted on them, and wrote the status that says so."""
    m = memo()
    for what in ("service/digits", "pod/digits-worker-0", "pod/digits-worker-1"):
        m.cache.expect("ml", "digits", what, "create")
    shown(m, "digits-worker-0")
    shown(m, "digits")
    shown(m, "digits-worker-1")
    assert m.queue.added == []
    shown(m, "digits-worker-1", version=2, phase="Running", kind="MODIFIED")  # news: a pass
    assert m.queue.added == [("ml", "digits")]


def test_a_pod_first_shown_already_moved_is_news():
    """kopf hands over only the last of an object's events within its batch window: the event that
    first shows a created pod may show it already scheduled or running."""
    m = memo()
    m.cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    shown(m, "digits-worker-0", phase="Running")
    assert m.queue.added == [("ml", "digits")]


def test_a_change_while_a_pass_own_creates_have_yet_to_show_queues_the_job_when_the_last_shows():
    m = memo()
    for what in ("pod/digits-worker-0", "pod/digits-worker-1"):
        m.cache.expect("ml", "digits", what, "create")
    shown(m, "digits-worker-0")
    shown(m, "digits-worker-0", version=2, phase="Running", kind="MODIFIED")  # news, but writes in flight
    assert m.queue.added == []
    shown(m, "digits-worker-1", version=3)
    assert m.queue.added == [("ml", "digits")]


def test_a_pod_the_operator_deleted_queues_its_job_once_it_shows_going():
    """A deletion is never only an echo: the next pass has the pod's replacement to create."""
    m = memo()
    shown(m, "digits-worker-0", phase="Running")
    m.queue.added.clear()
    m.cache.expect("ml", "digits", "pod/digits-worker-0", "delete")
    shown(m, "digits-worker-0", version=2, phase="Running", kind="DELETED")  # force-deleted: gone at once
    assert m.queue.added == [("ml", "digits")]


def test_an_event_after_the_writes_lapsed_queues_the_job():
    clock = Clock()
    m = memo(clock)
    m.cache.expect("ml", "digits", "pod/digits-worker-0", "create")
    m.cache.expect("ml", "digits", "pod/digits-worker-1", "create")
    shown(m, "digits-worker-0")
    assert m.queue.added == []
    clock.now = EXPECTATION_SECONDS
    shown(m, "digits-worker-0", version=2, phase="Running")  # worker-1 never showed: no longer waited for
    assert m.queue.added == [("ml", "digits")]


def test_an_event_with_nothing_in_flight_queues_the_job_after_a_hold_that_folds_the_gang():
    m = memo()
    shown(m, "digits-worker-0")
    assert m.queue.added == [("ml", "digits")] and m.queue.hold > 0


def test_a_pod_that_failed_or_vanished_queues_its_job_at_once():
    """Its peers wait on it in a collective: the restart is not held back to fold other events."""
    m = memo()
    shown(m, "digits-worker-0", phase="Running")
    assert m.queue.hold > 0
    shown(m, "digits-worker-0", version=2, phase="Failed", kind="MODIFIED")
    assert m.queue.hold == 0
    shown(m, "digits-worker-1", phase="Running")
    shown(m, "digits-worker-1", version=3, phase="Running", kind="DELETED")
    assert m.queue.hold == 0 and m.queue.added[-1] == ("ml", "digits")
