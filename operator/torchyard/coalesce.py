"""Run one reconcile per object at a time, folding the triggers that arrive meanwhile into one.

A job's pods send many events in a burst (scheduled, started, ready). Each would reconcile the job
again, though one pass after the burst sees the same world. While a pass for a key runs, further
triggers for that key only mark it dirty; the running pass then goes once more, reading fresh.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable


class Coalescer:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._running: set[Hashable] = set()
        self._dirty: set[Hashable] = set()

    def run(self, key: Hashable, work: Callable[[], None]) -> None:
        """Do `work` for `key` now, or leave it to the pass already running for `key`.

        Whether to go again and giving up the key are one step under the lock: a trigger that
        arrives after the last check then finds the key free and runs a pass itself, instead of
        marking a pass dirty that has already decided to stop (and losing, say, a deleted pod).
        """
        with self._guard:
            if key in self._running:
                self._dirty.add(key)
                return
            self._running.add(key)
        try:
            while True:
                work()
                with self._guard:
                    if key not in self._dirty:
                        self._running.discard(key)
                        return
                    self._dirty.discard(key)
        except BaseException:
            with self._guard:  # the resync loop retries; a later trigger must find the key free
                self._running.discard(key)
                self._dirty.discard(key)
            raise
