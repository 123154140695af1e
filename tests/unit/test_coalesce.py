"""Triggers that arrive during a reconcile fold into one more pass, never into parallel passes."""

import threading
import time

from torchyard.coalesce import Coalescer


def test_triggers_during_a_pass_fold_into_one_more_pass():
    coalescer, calls, inside = Coalescer(), [], threading.Event()
    release = threading.Event()

    def work():
        calls.append(time.monotonic())
        if len(calls) == 1:
            inside.set()
            release.wait(5)

    first = threading.Thread(target=coalescer.run, args=("job", work))
    first.start()
    inside.wait(5)
    for _ in range(10):
        coalescer.run("job", work)  # returns at once: the running pass will go again
    assert len(calls) == 1
    release.set()
    first.join(5)
    assert len(calls) == 2


def test_different_keys_do_not_wait_for_each_other():
    coalescer, release, done = Coalescer(), threading.Event(), []
    blocker = threading.Thread(target=coalescer.run, args=("a", lambda: release.wait(5)))
    blocker.start()
    coalescer.run("b", lambda: done.append("b"))
    assert done == ["b"]
    release.set()
    blocker.join(5)


def test_an_error_frees_the_key():
    coalescer = Coalescer()

    def boom():
        raise RuntimeError("api down")

    try:
        coalescer.run("job", boom)
    except RuntimeError:
        pass
    ran = []
    coalescer.run("job", lambda: ran.append(1))
    assert ran == [1]


class _HookedLock:
    """A lock that calls a hook once, right after its next release."""

    def __init__(self):
        self._lock = threading.Lock()
        self.after_release = None

    def __enter__(self):
        self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()
        hook, self.after_release = self.after_release, None
        if hook:
            hook()


def test_a_trigger_just_after_the_last_check_gets_a_pass():
    # A pod deleted by hand went unnoticed: its event came after the running pass had checked for
    # more triggers but before it gave up the key, so it marked a pass dirty that never ran again.
    coalescer, calls = Coalescer(), []
    coalescer._guard = guard = _HookedLock()

    def trigger():
        late = threading.Thread(target=coalescer.run, args=("job", work))
        late.start()
        late.join(5)

    def work():
        calls.append(len(calls))
        if len(calls) == 1:
            guard.after_release = trigger  # fires when the pass releases the lock after its check

    coalescer.run("job", work)
    assert calls == [0, 1]
