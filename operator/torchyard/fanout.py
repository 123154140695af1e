"""The writes of one pass sent at once, instead of one after another.

A pass that starts a gang creates its Service and every pod; one after another, each waits for
the API server's answer to the last, and under load the reconcile workers spend their time
waiting (a profile of a 1000-job burst had them waiting 95% of it). Sent together from a bounded
pool, a pass costs one round trip for its creates. Each write still records what it expects the
watch to show before it is sent (kube/cache.py), so nothing is created twice.

Events go out after the status they describe, without the pass waiting for them: an Event is a
note for `kubectl describe`, and a lost one costs nothing a later pass would repair.

Without threads (the default, and what the unit tests use) every call runs in order, in the
caller's thread.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable

log = logging.getLogger(__name__)


class Fanout:
    def __init__(self, threads: int = 0):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fanout") if threads else None

    def all(self, calls: list[Callable[[], None]]) -> None:
        """Run every call (at once, with a pool) and wait for all; raise the first failure in the
        order given, after all have ended, so none is still running when the pass decides what next."""
        if self._pool is None or len(calls) < 2:
            return _in_order(calls)
        futures = [self._pool.submit(call) for call in calls]
        wait(futures)
        for future in futures:
            if future.exception() is not None:
                raise future.exception()

    def later(self, call: Callable[[], None], what: str) -> None:
        """Run `call` without waiting for it; a failure is logged, naming `what`."""
        if self._pool is None:
            return _logged(call, what)
        self._pool.submit(_logged, call, what)

    def stop(self, drain: bool = False) -> None:
        """Stop taking calls; with `drain`, wait for those already given instead of dropping them."""
        if self._pool is not None:
            self._pool.shutdown(wait=drain, cancel_futures=not drain)


def _in_order(calls: list[Callable[[], None]]) -> None:
    first: BaseException | None = None
    for call in calls:
        try:
            call()
        except Exception as exc:  # the rest still run, as they would in the pool
            first = first or exc
    if first is not None:
        raise first


def _logged(call: Callable[[], None], what: str) -> None:
    try:
        call()
    except Exception as exc:
        log.warning("%s: %s", what, exc)
