"""The work queue in front of the reconciles: each key waits at most once, a key that changes
while it is worked on goes once more, and add_after holds a key until its moment."""

from __future__ import annotations

import threading

from torchyard.workqueue import WorkQueue


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def release(queue):
    with queue._cond:
        return queue._release_due()


def test_a_key_added_many_times_while_it_waits_is_worked_once():
    done = []
    queue = WorkQueue(done.append, workers=1)
    for _ in range(5):
        queue.add(("ml", "a"))
    queue.add(("ml", "b"))
    assert queue.depth() == 2
    assert queue._take() == ("ml", "a") and queue._take() == ("ml", "b")


def test_a_key_changed_while_worked_on_goes_once_more_after():
    queue = WorkQueue(lambda key: None, workers=1)
    queue.add("a")
    assert queue._take() == "a"
    queue.add("a")
    queue.add("a")
    assert queue.depth() == 0, "never two passes of one key at once"
    queue._done("a")
    assert queue.depth() == 1
    assert queue._take() == "a"
    queue._done("a")
    assert queue.depth() == 0


def test_add_after_holds_the_key_until_it_is_due_and_keeps_the_earliest():
    clock = Clock()
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    queue.add_after("a", 30)
    queue.add_after("a", 10)
    queue.add_after("a", 20)
    assert release(queue) == 10 and queue.depth() == 0
    clock.now += 10
    release(queue)
    assert queue.depth() == 1
    clock.now += 30
    queue._take()
    queue._done("a")
    assert release(queue) is None and queue.depth() == 0, "the later wishes were folded in"


def test_workers_take_every_key_and_survive_a_failing_one():
    seen, all_done = [], threading.Event()

    def work(key):
        seen.append(key)
        if len(seen) == 3:
            all_done.set()
        if key == "bad":
            raise RuntimeError("boom")

    queue = WorkQueue(work, workers=2)
    queue.start()
    for key in ("bad", "x", "y"):
        queue.add(key)
    assert all_done.wait(10)
    queue.stop()
    assert sorted(seen) == ["bad", "x", "y"]


def test_a_conditional_wish_goes_in_only_if_its_condition_holds_at_its_moment():
    clock, still = Clock(), {"a": True, "b": False}
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    queue.add_after("a", 30, when=lambda: still["a"])
    queue.add_after("b", 30, when=lambda: still["b"])
    queue.add_after("a", 5)  # a plain wish beside it is neither folded into it nor displaced by it
    clock.now += 5
    release(queue)
    assert queue._take() == "a"
    queue._done("a")
    clock.now += 25
    still["a"] = False  # what the safety was for happened meanwhile
    release(queue)
    assert queue.depth() == 0
    queue.add_after("b", 1, when=lambda: True)
    clock.now += 1
    release(queue)
    assert queue._take() == "b" and queue.depth() == 0


def test_a_condition_that_fails_to_answer_queues_the_key():
    clock = Clock()
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    queue.add_after("a", 1, when=lambda: 1 / 0)
    clock.now += 1
    release(queue)
    assert queue.depth() == 1


def test_a_held_key_goes_in_when_its_hold_ends_and_every_add_meanwhile_folds_into_it():
    clock = Clock()
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    queue.add("a", hold=0.5)
    clock.now += 0.3
    queue.add("a", hold=0.5)  # folds into the first hold: it does not push it back
    release(queue)
    assert queue.depth() == 0
    clock.now += 0.2
    release(queue)
    assert queue._take() == "a" and queue.depth() == 0


def test_an_add_without_a_hold_ends_the_hold_and_the_key_goes_once():
    clock = Clock()
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    queue.add("a", hold=0.5)
    queue.add("a")
    assert queue._take() == "a"
    queue._done("a")
    clock.now += 1
    release(queue)
    assert queue.depth() == 0, "the hold's timer was spent by the add"


def test_a_key_added_with_a_hold_while_worked_on_goes_back_in_after_the_hold():
    clock = Clock()
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    queue.add("a")
    assert queue._take() == "a"
    queue.add("a", hold=0.5)
    queue._done("a")
    assert queue.depth() == 0
    clock.now += 0.5
    release(queue)
    assert queue._take() == "a"
    queue.add("a", hold=0.5)
    queue.add("a")  # a change that must not wait: back in at once
    queue._done("a")
    assert queue.depth() == 1


def test_a_hold_lasts_until_the_adds_pause_but_no_longer_than_its_bound():
    clock = Clock()
    queue = WorkQueue(lambda key: None, workers=1, clock=clock)
    for _ in range(3):  # adds 0.4 s apart keep it held: the gang is still moving
        queue.add("a", hold=0.5, most=1.0)
        clock.now += 0.1
        release(queue)
        assert queue.depth() == 0
        clock.now += 0.3
    clock.now -= 0.15  # just past 1.0 s after the first add: the bound, though the last came 0.25 s ago
    release(queue)
    assert queue.depth() == 1


def test_the_depth_gauge_counts_the_keys_waiting_for_a_worker():
    from torchyard import metrics

    queue = WorkQueue(lambda key: None, workers=1)  # not started: every key waits
    gauge = metrics.QUEUE_DEPTH.labels(queue="test")
    gauge.set_function(queue.depth)
    for key in ["a", "b", "a"]:
        queue.add(key)
    queue.add("c", hold=5.0)  # held for a moment: not yet waiting for a worker
    try:
        assert metrics.REGISTRY.get_sample_value("torchyard_workqueue_depth", {"queue": "test"}) == 2
    finally:
        metrics.QUEUE_DEPTH.remove("test")
