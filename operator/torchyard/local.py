"""`torchyard run`: a TrainingJob file run as local processes, with no cluster.

The pods are built by the same builders the operator uses; each pod's command then runs as a
process on this machine with that pod's environment, rewritten where a cluster would have
provided something: DNS names become 127.0.0.1 with free ports, the shared volume becomes a
local directory, and progress reports come to this process instead of the operator.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from torchyard.api.trainingjob import TrainingJob
from torchyard.builders.pods import build_pods
from torchyard.builders.serving import teacher_of
from torchyard.progress import ProgressError, clean_report, job_token
from torchyard.settings import Settings
from torchyard_spec import contract
from torchyard_spec.topology import free_port, loopback

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10


@dataclass
class LocalProcess:
    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    result_path: Path
    proc: subprocess.Popen | None = None


def plan_processes(job: TrainingJob, workdir: Path, progress_url: str, key: bytes) -> list[LocalProcess]:
    """The job's pods as local processes: the same builders, command and env, on 127.0.0.1.

    Each pod gets its own loopback port for its peers, and the rendezvous one more; the shared
    volume becomes ``workdir``.
    """
    settings = Settings(progress_url_base=progress_url, progress_key=key)
    members = job.spec.topology.members()
    network = loopback(free_port(), {(m.role, m.index): free_port() for m in members})
    pods = build_pods(job, attempt=0, settings=settings, network=network)
    (workdir / "results").mkdir(parents=True, exist_ok=True)
    out = []
    for pod in pods:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        result_path = workdir / "results" / f"{name}.json"
        env.update({
            contract.CHECKPOINT_DIR: str(workdir / "checkpoints"),
            contract.MODEL_DIR: str(workdir / "model"),
            contract.RESULT_PATH: str(result_path),
            contract.METRICS_PORT: "0",
        })
        argv = list(container["command"]) + list(container.get("args", []))
        if argv[:1] == ["python"]:
            argv[0] = sys.executable
        out.append(LocalProcess(name, pod["metadata"]["labels"]["torchyard.dev/role"], argv, env, result_path))
    return out


class ProgressBar:
    """Progress from rank 0's reports: a redrawn line on a terminal, a line every few seconds elsewhere."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.line = ""
        self.last_print = 0.0

    def update(self, report: dict) -> None:
        pct = float(report.get("percent", 0.0))
        filled = int(pct / 5)
        text = (f"[{'#' * filled}{'.' * (20 - filled)}] {pct:5.1f}%  step {int(report.get('step', 0))}"
                f"/{int(report.get('totalSteps', 0))}  epoch {int(report.get('epoch', 0))}"
                f"  loss {report.get('loss', float('nan')):.4f}  {report.get('samplesPerSecond', 0):.0f} samples/s"
                f"  eta {report.get('etaSeconds', 0):.0f}s")
        with self.lock:
            self.line = text
            if self.tty:
                self.stream.write("\r" + text)
                self.stream.flush()
            elif time.monotonic() - self.last_print >= 5 or pct >= 100:
                self.stream.write(text + "\n")
                self.last_print = time.monotonic()

    def log(self, text: str) -> None:
        with self.lock:
            if self.tty and self.line:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            if self.tty and self.line:
                self.stream.write(self.line)
            self.stream.flush()


def _progress_server(job: TrainingJob, key: bytes, bar: ProgressBar) -> ThreadingHTTPServer:
    token = job_token(key, job.namespace, job.name, job.uid)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = min(int(self.headers.get("Content-Length") or 0), 4096)
            body = self.rfile.read(length)
            if self.headers.get("Authorization", "") != f"Bearer {token}":
                return self._reply(403)
            try:
                bar.update(clean_report(json.loads(body)))
            except (ValueError, ProgressError):
                return self._reply(400)
            self._reply(202)

        def _reply(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stream(process: LocalProcess, bar: ProgressBar) -> None:
    assert process.proc is not None and process.proc.stdout is not None
    prefix = f"[{process.name}]"
    for line in process.proc.stdout:
        bar.log(f"{prefix} {line.rstrip()}")


def local_problem(job: TrainingJob) -> str:
    """What a cluster would provide that a laptop cannot; empty when the job can run here."""
    if teacher_of(job)[0]:
        return ("spec.trainer.compression.distillation.teacher.modelVersion names a ModelVersion, which only "
                "exists in a cluster; locally, give the teacher's artifact directory as teacherPath")
    for name, field in ((contract.ROLE_WORKER, "spec.worker"), (contract.ROLE_PARAMETER_SERVER, "spec.parameterServer")):
        role = job.spec.role(name)
        if role is not None and role.image and not role.command:
            return (f"{field}.template.command is needed to run locally: the role runs its image's own "
                    "entrypoint, and torchyard run starts processes, not images")
    return ""


def run(job: TrainingJob, workdir: Path, timeout: float | None = None) -> int:
    """Run the job; return 0 when every worker succeeded. Prints a summary either way."""
    problem = local_problem(job)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    job = _with_identity(job)
    _interrupt_on(signal.SIGINT, signal.SIGTERM)
    workdir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    bar = ProgressBar()
    server = _progress_server(job, key, bar)
    progress_url = f"http://127.0.0.1:{server.server_address[1]}"
    processes = plan_processes(job, workdir, progress_url, key)
    bar.log(f"running {job.name}: {len(processes)} processes ({job.spec.strategy}), output in {workdir}")
    try:
        for p in processes:
            p.proc = subprocess.Popen(p.argv, env={**os.environ, **p.env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
            threading.Thread(target=_stream, args=(p, bar), daemon=True).start()
        failed = _wait(processes, timeout)
    except KeyboardInterrupt:
        bar.log("interrupted: stopping every process")
        failed = "interrupted"
    finally:
        _stop_all(processes)
        server.shutdown()
    return _summarise(processes, failed, bar)


def _interrupt_on(*signums: int) -> None:
    """Ctrl-C or a SIGTERM stop the run and everything it started, even when the shell that
    launched us in the background told it to ignore SIGINT (Python then installs no handler)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in signums:
        signal.signal(signum, interrupt)


def _with_identity(job: TrainingJob) -> TrainingJob:
    return replace(job, uid=job.uid or str(uuid.uuid4()), namespace=job.namespace or "local")


def _wait(processes: list[LocalProcess], timeout: float | None) -> str | None:
    """Until every worker has exited 0 (None), or one process failed or time ran out (why)."""
    deadline = time.monotonic() + timeout if timeout else None
    workers = [p for p in processes if p.role == contract.ROLE_WORKER]
    while True:
        for p in processes:
            code = p.proc.poll()
            if code not in (None, 0):
                return f"{p.name} exited with code {code}"
        if all(p.proc.poll() == 0 for p in workers):
            return None
        if deadline and time.monotonic() > deadline:
            return f"timed out after {timeout:.0f}s"
        time.sleep(0.2)


def _stop_all(processes: list[LocalProcess]) -> None:
    running = [p for p in processes if p.proc and p.proc.poll() is None]
    for p in running:
        os.killpg(p.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in running:
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


def _summarise(processes: list[LocalProcess], failed: str | None, bar: ProgressBar) -> int:
    worker0 = next(p for p in processes if p.role == contract.ROLE_WORKER)
    result = {}
    if worker0.result_path.exists():
        try:
            result = json.loads(worker0.result_path.read_text() or "{}")
        except json.JSONDecodeError:
            result = {}
    if failed:
        bar.log(f"\nFAILED: {failed}")
        if "error" in result:
            bar.log(f"  {result['error'].get('field', '')}: {result['error'].get('message', '')}")
        return 1
    bar.log("\nSUCCEEDED")
    for name, value in sorted((result.get("metrics") or {}).items()):
        bar.log(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    artifact = result.get("artifact") or {}
    if artifact:
        bar.log(f"  artifact: {artifact.get('path')}  sha256 {artifact.get('sha256', '')[:16]}...")
    return 0
