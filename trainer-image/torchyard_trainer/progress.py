"""Live progress: a log line and a POST to ``TORCHYARD_PROGRESS_URL``, every few seconds.

The training loop only stores the latest numbers (a lock and a few assignments); a background
thread formats, logs and sends them. A report that cannot be delivered within a short timeout is
dropped, so a slow or absent receiver never slows training down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)

POST_TIMEOUT_SECONDS = 2.0
# The receiver is the operator, inside the cluster: never route reports through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Snapshot:
    step: int
    total_steps: int
    epoch: int
    loss: float
    samples_per_second: float


class ProgressReporter:
    """Reports the latest :class:`Snapshot` every ``interval`` seconds until closed."""

    def __init__(self, url: str = "", token: str = "", interval: float = 2.0):
        self.url = url
        self.token = token
        self.interval = interval
        self._latest: Snapshot | None = None
        self._origin: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._warned = False

    def start(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def update(self, step: int, total_steps: int, epoch: int, loss: float, samples_per_second: float) -> None:
        """Record the latest numbers; called every step, so it does no I/O."""
        with self._lock:
            self._latest = Snapshot(step, total_steps, epoch, loss, samples_per_second)
            if self._origin is None:
                self._origin = (time.monotonic(), step)

    def close(self) -> None:
        """Stop the thread and deliver the final numbers once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=POST_TIMEOUT_SECONDS + 1)
        self._report()

    def body(self) -> dict | None:
        """The JSON object a report carries (the fields of docs/contract.md), or None before any step."""
        with self._lock:
            snap, origin = self._latest, self._origin
        if snap is None:
            return None
        percent = 100.0 * snap.step / snap.total_steps if snap.total_steps else 100.0
        eta = None
        if origin is not None and snap.step > origin[1]:
            per_step = (time.monotonic() - origin[0]) / (snap.step - origin[1])
            eta = round(per_step * max(0, snap.total_steps - snap.step), 1)
        return {
            "step": snap.step,
            "totalSteps": snap.total_steps,
            "epoch": snap.epoch,
            "loss": round(snap.loss, 6),
            "samplesPerSecond": round(snap.samples_per_second, 1),
            "percent": round(percent, 2),
            "etaSeconds": eta,
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._report()

    def _report(self) -> None:
        body = self.body()
        if body is None:
            return
        eta = "?" if body["etaSeconds"] is None else f"{body['etaSeconds']:.0f}s"
        log.info(
            "step %d/%d (%.1f%%) epoch %d loss %.4f %.0f samples/s eta %s",
            body["step"], body["totalSteps"], body["percent"], body["epoch"], body["loss"],
            body["samplesPerSecond"], eta,
        )
        if self.url:
            self._post(body)

    def _post(self, body: dict) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with _OPENER.open(request, timeout=POST_TIMEOUT_SECONDS) as response:
                response.read()
        except Exception as exc:  # any failure to deliver is dropped; training goes on
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "progress report to %s dropped: %s", self.url, exc)
            self._warned = True
