"""Backing off from an object whose reconcile keeps meeting transient API errors.

A 5xx, a 429 or a timeout is retried by the next trigger or resync pass; without a pause every
job would ask a struggling API server again every few seconds. After each failure in a row an
object waits twice as long (up to a cap) before its next pass, and the time since its first
failure in the row tells when the trouble has lasted long enough to show the user. Time is passed
in, so the rules are tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

FIRST_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 60.0
# Trouble that lasts this long becomes a condition on the object, not just a log line.
LASTING_SECONDS = 20.0


@dataclass
class _Trouble:
    since: float
    failures: int
    next_try: float


class Backoff:
    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS):
        self.first = first
        self.cap = cap
        self._trouble: dict[Hashable, _Trouble] = {}

    def due(self, key: Hashable, now: float) -> bool:
        """Whether a pass over ``key`` may run now."""
        trouble = self._trouble.get(key)
        return trouble is None or now >= trouble.next_try

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until a pass over ``key`` may run (0 when it may now)."""
        trouble = self._trouble.get(key)
        return max(0.0, trouble.next_try - now) if trouble else 0.0

    def failed(self, key: Hashable, now: float) -> float:
        """Record a transient failure; returns how long the failures in a row have lasted."""
        trouble = self._trouble.get(key) or _Trouble(since=now, failures=0, next_try=now)
        trouble.failures += 1
        trouble.next_try = now + min(self.cap, self.first * 2 ** (trouble.failures - 1))
        self._trouble[key] = trouble
        return now - trouble.since

    def succeeded(self, key: Hashable) -> bool:
        """Forget ``key``'s trouble; True when it had any."""
        return self._trouble.pop(key, None) is not None
