"""What the TrainingJob and ModelDeployment reconcilers share: how a pass is started.

Triggers for one object fold into one pass at a time (``Coalescer``); each pass is timed and
counted; a pass that meets a transient API error (not a mere conflict with another writer) is
retried only after a backoff that doubles per failure in a row, and trouble that lasts becomes the object's ``Stalled`` condition, which
the kind's own status computation drops again once a pass gets through (``clear_trouble``).
Each kind supplies ``_reconcile`` and how to read and patch its status.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable

import kopf

from torchyard import metrics
from torchyard.coalesce import Coalescer
from torchyard.kube.client import Conflict
from torchyard.reconcile import conditions as cond
from torchyard.reconcile.backoff import LASTING_SECONDS, Backoff

log = logging.getLogger(__name__)
CONFLICT_RETRY_SECONDS = 0.2


class Reconciler:
    kind = ""

    def __init__(self) -> None:
        self._passes = Coalescer()
        self._backoff = Backoff()

    def reconcile(self, namespace: str, name: str) -> None:
        """Reconcile now, or leave it to the pass already running for this object (it goes again)."""
        self._passes.run((namespace, name), lambda: self._timed(namespace, name))

    def _timed(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if not self._backoff.due(key, time.monotonic()):
            return
        if self._waits(namespace, name):
            metrics.RECONCILE_WAITS.labels(self.kind).inc()
            return
        try:
            with metrics.reconciling(self.kind):
                self._reconcile(namespace, name)
        except Conflict:
            raise  # a race, not trouble: the next trigger goes again at once
        except kopf.TemporaryError as exc:
            lasted = self._backoff.failed(key, time.monotonic())
            if lasted >= LASTING_SECONDS:
                self._show_trouble(namespace, name, exc, lasted)
            raise
        self._backoff.succeeded(key)

    def take(self, key: tuple[str, str], requeue: Callable[[tuple[str, str], float], None]) -> None:
        """One pass for a key from the work queue. A pass that met a conflict goes again shortly
        (the watch event that made its view stale queues it too); one that met API trouble goes
        again when its backoff ends; nothing else retries it."""
        namespace, name = key
        try:
            self.reconcile(namespace, name)
        except Conflict:
            requeue(key, CONFLICT_RETRY_SECONDS)
        except kopf.TemporaryError as exc:
            log.warning("reconcile of %s %s/%s: %s", self.kind, namespace, name, exc)
            requeue(key, max(self._backoff.wait(key, time.monotonic()), 0.1))
        except kopf.PermanentError as exc:
            log.warning("reconcile of %s %s/%s: %s", self.kind, namespace, name, exc)

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop what was kept about it."""
        self._backoff.succeeded((namespace, name))

    def _waits(self, namespace: str, name: str) -> bool:
        """Whether this pass should end at once, reading and deciding nothing (counted apart)."""
        return False

    def _reconcile(self, namespace: str, name: str) -> None:
        raise NotImplementedError

    def _read(self, namespace: str, name: str) -> dict | None:
        """The object as the API server has it (None when it is gone)."""
        raise NotImplementedError

    def _patch_status(self, namespace: str, name: str, status: dict) -> None:
        raise NotImplementedError

    def _show_trouble(self, namespace: str, name: str, exc: Exception, lasted: float) -> None:
        """Transient API errors that last become the Stalled condition, so a user sees why the
        object does not move."""
        try:
            obj = self._read(namespace, name)
            if obj is None:
                return
            status = obj.get("status") or {}
            conditions = cond.set_condition(
                list(status.get("conditions") or []), cond.STALLED, True, cond.API_TROUBLE,
                f"retrying with backoff for {lasted:.0f}s: {exc}", datetime.now(timezone.utc),
                int(obj["metadata"].get("generation") or 0))
            self._patch_status(namespace, name, {"conditions": conditions})
        except (kopf.TemporaryError, kopf.PermanentError) as more:
            log.warning("%s %s/%s: cannot record the API trouble either: %s", self.kind, namespace, name, more)


def clear_trouble(status: dict) -> None:
    """A pass that got this far reached the API server: the Stalled condition no longer holds."""
    if any(_api_trouble(c) for c in status.get("conditions") or []):
        status["conditions"] = [c for c in status["conditions"] if not _api_trouble(c)]


def _api_trouble(condition: dict) -> bool:
    return condition.get("type") == cond.STALLED and condition.get("reason") == cond.API_TROUBLE
