"""Start, recognise and stop the cluster's processes, and wait for their health endpoints.

Every process is started in its own session with its output in a log file, and recorded by pid
and executable path. A recorded pid is only ever signalled after /proc confirms that it still runs
that executable, so a recycled pid can never take down an unrelated process.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Managed:
    """One started process as recorded in the state file."""

    name: str
    pid: int
    exe: str
    log: str

    def alive(self) -> bool:
        """True when the pid exists, is not a zombie, and still runs the recorded executable."""
        proc = Path(f"/proc/{self.pid}")
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return argv0 == self.exe and state != "Z"

    def to_json(self) -> dict:
        return asdict(self)

    def argv(self) -> list[str] | None:
        """The command line it runs, or None when it is gone."""
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [arg.decode() for arg in raw.split(b"\0")[:-1]]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, argv: list[str], log_dir: Path, env: dict | None = None) -> tuple[Managed, subprocess.Popen]:
    """Start `argv` detached from this process (it outlives `up`), logging to log_dir/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, close_fds=True,
                                 env={**os.environ, **(env or {})})
    log.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return Managed(name=name, pid=popen.pid, exe=argv[0], log=str(log_path)), popen


def stop(proc: Managed, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; a pid that runs something else is left alone."""
    if not proc.alive():
        return
    log.info("stopping %s (pid %d)", proc.name, proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not proc.alive():
            return
        time.sleep(0.1)
    if proc.alive():
        log.warning("%s (pid %d) ignored SIGTERM; killing", proc.name, proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        while proc.alive():
            time.sleep(0.05)


def tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def probe(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def wait_healthy(proc: Managed, popen: subprocess.Popen, url: str,
                 context: ssl.SSLContext | None = None, timeout_s: float = 120.0) -> float:
    """Wait until `url` answers 200; fail early, with the log's tail, if the process exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {popen.returncode}:\n{tail(proc.log)}")
        if probe(url, context):
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not healthy at {url} after {timeout_s:.0f}s:\n{tail(proc.log)}")


def client_context(pki_dir: Path) -> ssl.SSLContext:
    """TLS context that trusts the cluster CA and presents the admin certificate."""
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return context
