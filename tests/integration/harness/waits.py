"""Polling until the cluster shows what a test expects, with a message that says what it saw."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.2) -> T:
    """Call `probe` until it returns something truthy and return that; fail after `timeout`.

    The failure names `what` was awaited and the last value the probe returned.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def read_or_none(read: Callable[[], T]) -> T | None:
    """The object, or None when the API answers 404."""
    try:
        return read()
    except ApiException as err:
        if err.status == 404:
            return None
        raise
