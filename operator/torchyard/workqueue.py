"""A keyed work queue in front of the reconciles, in the shape of client-go's workqueue.

A burst of watch events for one job (its pods scheduled, started, ready; its own status echoed)
should cost a few passes, not one each. So a trigger only names the object: a key waits in the
queue at most once however often it is added; a key added while a worker holds it is marked and
goes back in once, when that pass ends, so the change is seen; a fixed number of workers take
keys in order. ``add_after`` holds a key back until a moment falls due (a deadline, a TTL, a
retry), so time-based rules cost nothing until then; given a condition, the key goes in at that
moment only if the condition still holds (a safety that is moot once something else happened).
``add`` with a hold waits until the key has had no add for that long (up to a bound) before it
goes in, and every add meanwhile folds into it: the events of pods that move together (a gang
scheduled, then started) cost one pass.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Callable, Hashable

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(self, work: Callable[[Hashable], None], workers: int, clock: Callable[[], float] = time.monotonic):
        self._work, self._workers, self._clock = work, workers, clock
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._waiting: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: dict[Hashable, tuple[float, float]] = {}  # key -> the hold it goes back in with
        self._timers: list[tuple[float, int, Hashable, Callable[[], bool] | None]] = []
        self._due: dict[Hashable, float] = {}
        self._held: dict[Hashable, tuple[float, float]] = {}  # key -> when its hold ends, and the latest it may
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def add(self, key: Hashable, hold: float = 0.0, most: float = 0.0) -> None:
        """Queue `key` unless it already waits; mark it if a worker has it now. With `hold`, the key
        goes in (or, marked, back in after its pass) once it had no add for `hold` seconds, but no
        later than `most` seconds (at least `hold`) after the first; at once when added without a
        hold meanwhile."""
        with self._cond:
            if hold <= 0 or key in self._waiting:
                self._push(key)
            elif key in self._active:
                self._dirty[key] = min(self._dirty.get(key, (hold, most)), (hold, most))
            else:
                self._hold(key, hold, most)

    def _hold(self, key: Hashable, hold: float, most: float) -> None:
        now = self._clock()
        due, latest = self._held.get(key, (now, now + max(hold, most)))
        if now + hold > due and due < latest:
            due = min(now + hold, latest)
            self._held[key] = (due, latest)
            self._timer((due, next(self._order), key, _hold_marker))

    def add_after(self, key: Hashable, delay: float, when: Callable[[], bool] | None = None) -> None:
        """Queue `key` once `delay` seconds have passed (the earliest of several such wishes). With
        `when`, a wish of its own, kept apart from the others: at its moment the key goes in only if
        `when()` says so then. `when` runs under the queue's lock, so it must not call the queue."""
        if delay <= 0 and when is None:
            return self.add(key)
        due = self._clock() + delay
        with self._cond:
            if when is None:
                if self._due.get(key, float("inf")) <= due:
                    return
                self._due[key] = due
            self._timer((due, next(self._order), key, when))

    def _timer(self, entry: tuple) -> None:
        """Keep a moment; wake a worker only if it comes before every other. The workers sleep until
        the first moment, so a later one (most holds extended by the next event) costs no wake-up."""
        heapq.heappush(self._timers, entry)
        if self._timers[0] is entry:
            self._cond.notify()

    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"reconcile-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _push(self, key: Hashable) -> None:
        self._held.pop(key, None)  # whatever held it is in this pass
        if key in self._active:
            self._dirty[key] = (0.0, 0.0)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.append(key)
            self._cond.notify()

    def _release_due(self) -> float | None:
        """Move the keys whose time has come into the queue; seconds until the next, if any."""
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            due, _, key, when = heapq.heappop(self._timers)
            if when is _hold_marker:
                if self._held.get(key, (None,))[0] == due:
                    self._push(key)
            elif when is not None:
                if _holds(when, key):
                    self._push(key)
            elif self._due.get(key) == due:
                del self._due[key]
                self._push(key)
        return self._timers[0][0] - now if self._timers else None

    def _take(self) -> Hashable | None:
        with self._cond:
            while not self._stopped:
                wait = self._release_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._waiting.discard(key)
                    self._active.add(key)
                    return key
                self._cond.wait(wait)
            return None

    def _done(self, key: Hashable) -> None:
        with self._cond:
            self._active.discard(key)
            hold = self._dirty.pop(key, None)
            if hold is not None and hold[0] > 0:
                self._hold(key, *hold)
            elif hold is not None:
                self._push(key)

    def _run(self) -> None:
        while (key := self._take()) is not None:
            try:
                self._work(key)
            except Exception:  # the work function reports its own errors; a worker never dies
                log.exception("work on %s failed", key)
            finally:
                self._done(key)


def _hold_marker() -> bool:
    """Marks a hold's timer (WorkQueue.add): it ends only if nothing queued the key meanwhile."""
    return True


def _holds(when: Callable[[], bool], key: Hashable) -> bool:
    """A condition that fails to answer counts as met: one pass too many is safe, one too few not."""
    try:
        return bool(when())
    except Exception:
        log.exception("the condition to queue %s failed", key)
        return True
