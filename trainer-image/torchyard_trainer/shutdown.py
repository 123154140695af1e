"""Stopping on SIGTERM without losing work, and without waiting out the grace period.

The kubelet stops a container with SIGTERM and, ``terminationGracePeriodSeconds`` later, SIGKILL
(a preemption, a drain, a gang restart, a suspend). Inside the training loop the process finishes
the step in flight, the gang agrees on the step to stop at, the lead writes a checkpoint and every
process exits with ``EXIT_PREEMPTED``, which the operator counts as an infrastructure restart.
Outside the loop (joining, loading, exporting) there is nothing worth saving: the process exits at
once. A stop that takes longer than ``TORCHYARD_STOP_SECONDS`` (a peer that vanished mid-step)
exits anyway, so the kubelet never has to kill it.

A process that is PID 1 in its container and sets no handler ignores SIGTERM (the kernel drops
signals PID 1 does not handle); :func:`install` gives it one. The decision is taken in a watcher
thread woken through Python's wakeup fd, so it happens even while the main thread is blocked in a
collective or a rendezvous, where a plain Python handler would not run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

from torchyard_trainer.errors import EXIT_PREEMPTED

log = logging.getLogger(__name__)

STOP_SECONDS_ENV = "TORCHYARD_STOP_SECONDS"
DEFAULT_STOP_SECONDS = 20.0  # the pod's grace period is 30 s unless the template says otherwise

_requested = threading.Event()
_guard = threading.Lock()
_deferring = 0


def _say_nothing(message: str) -> None:
    pass


_on_exit: Callable[[str], None] = _say_nothing


def stop_seconds() -> float:
    return float(os.environ.get(STOP_SECONDS_ENV, DEFAULT_STOP_SECONDS))


def requested() -> bool:
    """Whether this process has been asked to stop."""
    return _requested.is_set()


def install(on_exit: Callable[[str], None] | None = None) -> None:
    """Handle SIGTERM from now on. Main thread only, before other threads start.

    ``on_exit(message)`` runs just before an exit this module forces (to record why).
    """
    global _on_exit
    if on_exit is not None:
        _on_exit = on_exit
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the watcher acts, not the main thread
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_end,), name="sigterm", daemon=True).start()
    if os.getpid() == 1:  # without the handler above, this process would ignore SIGTERM
        log.info("handling SIGTERM as pid 1")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A region (the training loop, a parameter server's message loop) that, after SIGTERM,
    stops on its own at a safe point instead of at once."""
    global _deferring
    with _guard:
        _deferring += 1
    try:
        yield
    finally:
        with _guard:
            _deferring -= 1


def _watch(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except InterruptedError:
            continue
        if signal.SIGTERM in data:
            _on_sigterm()


def _on_sigterm() -> None:
    with _guard:
        again = _requested.is_set()
        _requested.set()
        deferring = _deferring > 0
    if again:
        return _exit("a second SIGTERM: stopping at once")
    if not deferring:
        return _exit("stopped by SIGTERM outside the training loop; nothing to save")
    limit = stop_seconds()
    log.warning("SIGTERM: finishing the step in flight, then checkpointing (at most %.0fs)", limit)
    timer = threading.Timer(limit, _exit, args=(f"stopped by SIGTERM; the orderly stop took longer than {limit:.0f}s",))
    timer.daemon = True
    timer.start()


def _exit(message: str) -> None:
    log.warning("%s; exit code %d", message, EXIT_PREEMPTED)
    try:
        _on_exit(message)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_PREEMPTED)
