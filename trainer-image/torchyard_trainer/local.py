"""Running a gang of trainer processes on one machine.

Used three ways: by a pod that runs one process per GPU, by the tests (real processes on
127.0.0.1), and by ``torchyard run`` on a laptop. :func:`start` returns a :class:`Gang` whose
processes can be watched or killed one by one; :func:`launch` starts and waits in one call.
Each process's output is read line by line, passed to ``on_line`` and kept (the last lines) for
the caller.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from torchyard_spec.topology import Topology, free_port, loopback

TRAINER_COMMAND = (sys.executable, "-m", "torchyard_trainer")
TAIL_LINES = 200
GRACE_SECONDS = 5.0

LineHandler = Callable[[str, str], None]


@dataclass
class ProcessResult:
    """How one process ended: its exit code (negative: killed by that signal) and last output."""

    name: str
    returncode: int | None
    output: list[str] = field(default_factory=list)
    timed_out: bool = False


class Gang:
    """Processes started together; stopping one on failure stops the rest."""

    def __init__(self, names: list[str], popens: list[subprocess.Popen], on_line: LineHandler | None):
        self.names = names
        self.popens = popens
        self._tails = [collections.deque(maxlen=TAIL_LINES) for _ in popens]
        self._readers = [threading.Thread(target=self._read, args=(i, on_line), daemon=True)
                         for i in range(len(popens))]
        for reader in self._readers:
            reader.start()

    def _read(self, index: int, on_line: LineHandler | None) -> None:
        for raw in self.popens[index].stdout:
            line = raw.rstrip("\n")
            self._tails[index].append(line)
            if on_line is not None:
                on_line(self.names[index], line)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process (by its position in the gang)."""
        if self.popens[index].poll() is None:
            self.popens[index].send_signal(sig)

    def stop(self) -> None:
        """SIGTERM every running process, then SIGKILL what is still there after a grace period."""
        for p in self.popens:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + GRACE_SECONDS
        for p in self.popens:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def wait(self, timeout: float | None = None, stop_on_failure: bool = True) -> list[ProcessResult]:
        """Wait for every process; a failure (with ``stop_on_failure``) or the timeout stops all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        while any(p.poll() is None for p in self.popens):
            if stop_on_failure and any(p.poll() not in (None, 0) for p in self.popens):
                break
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.05)
        running = [p.poll() is None for p in self.popens]
        self.stop()
        for reader in self._readers:
            reader.join(timeout=GRACE_SECONDS)
        return [ProcessResult(self.names[i], p.returncode, list(self._tails[i]), timed_out and running[i])
                for i, p in enumerate(self.popens)]


def start(environs: Sequence[Mapping[str, str]], *, names: Sequence[str] | None = None,
          command: Sequence[str] = TRAINER_COMMAND, on_line: LineHandler | None = None,
          cwd: str | None = None) -> Gang:
    """Start one ``command`` per entry of ``environs``, each with ``os.environ`` plus that entry."""
    names = list(names) if names is not None else [f"p{i}" for i in range(len(environs))]
    popens = []
    for overlay in environs:
        env = {**os.environ, **overlay, "PYTHONUNBUFFERED": "1"}
        popens.append(subprocess.Popen(list(command), env=env, cwd=cwd, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, bufsize=1))
    return Gang(names, popens, on_line)


def launch(environs: Sequence[Mapping[str, str]], *, timeout: float | None = None, **kwargs) -> list[ProcessResult]:
    """Start the processes and wait for all of them (see :func:`start` and :meth:`Gang.wait`)."""
    stop_on_failure = kwargs.pop("stop_on_failure", True)
    return start(environs, **kwargs).wait(timeout=timeout, stop_on_failure=stop_on_failure)


def gang_environs(*, config: dict, workers: int, parameter_servers: int = 0, checkpoint_dir: str,
                  model_dir: str, result_dir: str, job_name: str = "local", attempt: int = 0,
                  port: int | None = None, metrics_port: int = 0, progress_url: str = "",
                  progress_token: str = "") -> tuple[list[str], list[dict[str, str]]]:
    """Names and contract environments for a local job of one-process pods on 127.0.0.1.

    The layout is the cluster's (torchyard_spec.topology); each process writes its result to
    ``<result_dir>/<name>.json``.
    """
    topology = Topology.of(workers, parameter_servers)
    network = loopback(port or free_port())
    names, environs = [], []
    for member in topology.members():
        name = f"{job_name}-{member.name}"
        env = topology.pod_env(
            member, network, job_name=job_name, namespace="local", checkpoint_dir=checkpoint_dir,
            model_dir=model_dir, model_name=job_name, trainer_config=config, attempt=attempt,
            metrics_port=metrics_port + member.rank if metrics_port else 0,
            progress_url=progress_url, progress_token=progress_token,
            result_path=os.path.join(result_dir, f"{name}.json"),
        )
        names.append(name)
        environs.append(env.to_environ())
    return names, environs
