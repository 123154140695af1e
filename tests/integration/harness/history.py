"""Every version of some objects, in the order the API server wrote them, kept for a test to judge
afterwards (a status that went backwards, a pod made twice, a selector that flapped).

A watch runs in a thread. While the API server is down it retries; when it is back it resumes
from the last resourceVersion it saw, or, when that is too old (410 Gone: a restarted API server's
watch cache begins at the present), lists afresh at once. Only versions written between the API
server's return and that listing (well under a second) can be missed; `relists` counts them.
"""
from __future__ import annotations

import json
import threading
from typing import Callable

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

RETRY_SECONDS = 0.5


class History:
    """`start()` it before the fault, `stop()` it after; `.events` holds (type, object) pairs."""

    def __init__(self, list_fn: Callable, *args, **kwargs):
        self._list = lambda **more: list_fn(*args, **kwargs, **more)
        self.events: list[tuple[str, dict]] = []
        self.relists = 0  # listings after the first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "History":
        self._thread.start()
        return self

    def stop(self) -> "History":
        self._stop.set()
        self._thread.join(timeout=30)
        return self

    def versions(self, name: str) -> list[dict]:
        """Each version of the object called `name`, oldest first (deletions left out)."""
        return [obj for kind, obj in self.events if kind != "DELETED" and obj["metadata"]["name"] == name]

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                version = self._watch(version)
            except ApiException as exc:
                if exc.status == 410:
                    version = None
            except Exception:  # the API server is down or restarting: try again shortly
                pass
            self._stop.wait(RETRY_SECONDS)

    def _watch(self, version: str | None) -> str | None:
        if version is None:
            listing = json.loads(self._list(_preload_content=False, _request_timeout=10).data)
            self.relists += bool(self.events)
            self.events.extend(("LISTED", obj) for obj in listing["items"])
            version = listing["metadata"]["resourceVersion"]
        stream = watch.Watch().stream(self._list, resource_version=version, timeout_seconds=5,
                                      _request_timeout=15)
        for event in stream:
            obj = event["raw_object"]  # a 410 Gone in the stream raises ApiException(410)
            self.events.append((event["type"], obj))
            version = obj["metadata"]["resourceVersion"]
            if self._stop.is_set():
                break
        return version

