"""The watch cache listed afresh soon after kopf listed afresh.

kopf lists a kind again when its watch cannot resume: at its start, and when the API server answers
410 Gone (a restarted kube-apiserver's watch cache begins at the present, so every watch does). An
object deleted while the watch was away never comes as a DELETED event, so the cache would keep it
until the safety resync, minutes later: a pod deleted by hand during an API server restart would
still count in its gang. kopf shows its listing as events of type None; the first of such a burst
asks for one listing of the cache a moment later (the burst over), then every job is queued.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import kopf

log = logging.getLogger(__name__)
DELAY_SECONDS = 1.0
RETRY_SECONDS = 5.0


class Relister:
    def __init__(self, relist: Callable[[], None], after: Callable[[], None], delay: float = DELAY_SECONDS):
        self._relist, self._after, self._delay = relist, after, delay
        self._lock = threading.Lock()
        self._pending = False

    def request(self) -> None:
        """One listing soon, however many times this is called before it starts."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._later(self._delay)

    def _later(self, delay: float) -> None:
        timer = threading.Timer(delay, self._run)
        timer.daemon = True
        timer.start()

    def _run(self) -> None:
        with self._lock:  # a request from here on asks for another listing, after this one
            self._pending = False
        try:
            self._relist()
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.warning("listing the watch cache afresh after a watch listed afresh: %s; again in %.0fs",
                        exc, RETRY_SECONDS)
            self._later(RETRY_SECONDS)
            return
        log.info("watch cache listed afresh after a watch listed afresh")
        self._after()
