"""Model-server throughput and latency against MLServer, measured in one run on 127.0.0.1.

Subjects, all serving the same TorchScript artifact (an MLP [128] trained on scikit-learn's digits
for a few seconds) and all started at once, then measured in interleaved rounds so that machine
load hits them alike:

  torchyard            python -m torchyard_trainer.serve, as a ModelDeployment runs it
  torchyard-batching   the same with adaptive batching (--batch-max-size 32, no wait)
  mlserver             MLServer 1.7.1 at its defaults (one inference worker process)
  mlserver-pw0         MLServer 1.7.1 with parallel_workers: 0 (inference in the server process)

MLServer loads the model through a small custom runtime (torch.jit.load, one forward pass per
request). It is installed, with the uvloop it needs, into a virtualenv of its own under the cache
directory, never into this interpreter's; that virtualenv reads torch from this interpreter's
site-packages (a .pth file) rather than downloading it again. Every server gets one torch thread.

Each cell (subject x concurrency) sends batch-1 Open Inference Protocol v2 requests from one
client process, over one keep-alive connection per concurrent client, for --seconds or
--max-requests, whichever ends first. Prints requests/s, p50 and p99 latency and errors per cell,
and the ratios to each MLServer configuration. Figures, never pass or fail. Example:

    .venv/bin/python benchmarks/serving_throughput.py --rounds 3 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
import uvloop
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port  # noqa: E402

from torchyard_trainer.artifact import save_artifact  # noqa: E402
from torchyard_trainer.models import build_model  # noqa: E402

MLSERVER = ("mlserver==1.7.1", "uvloop==0.21.0")  # later uvloop makes its worker crash-loop
MODEL, VERSION, FEATURES = "digits", "1", 64
HOST = "127.0.0.1"

RUNTIME = '''
import os
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchScriptRuntime(MLModel):
    """One TorchScript module, one forward pass per request."""

    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._module = torch.jit.load(os.path.join(self.settings.parameters.uri, "model.pt")).eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        with torch.inference_mode():
            y = self._module(torch.as_tensor(x, dtype=torch.float32)).numpy()
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output("output", y)])
'''


# --- the model ---------------------------------------------------------------------------------------


def train_digits(directory: Path) -> list[float]:
    """Write the artifact both servers load; returns one input row for the requests."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hiddenSizes": [128]}, (FEATURES,), 10)
    model.set_input_stats(x.mean(0), x.std(0).clamp_min(1e-3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    accuracy = float((model(x).argmax(1) == y).float().mean())
    config = {"architecture": {"name": "mlp", "hiddenSizes": [128]}, "inputShape": [FEATURES], "numOutputs": 10,
              "task": "classification", "classes": list(range(10))}
    save_artifact(model, directory, config=config, metrics={"accuracy": accuracy}, metric="accuracy",
                  lineage={"job": "benchmark"}, model_name=MODEL)
    return x[0].tolist()


# --- the servers -------------------------------------------------------------------------------------


def mlserver_venv(cache: Path) -> Path:
    """MLServer's own virtualenv, created once; returns its bin directory."""
    venv = cache / "mlserver-1.7.1" / "venv"
    marker = venv / ".torchyard-installed"
    if not marker.exists():
        print(f"installing {' '.join(MLSERVER)} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *MLSERVER], check=True)
        marker.write_text(" ".join(MLSERVER) + "\n")
    site = next((venv / "lib").glob("python3.*/site-packages"))
    # Appended after MLServer's own packages, so its pins win; torch comes from this interpreter.
    (site / "torchyard-bench-torch.pth").write_text(str(Path(torch.__file__).resolve().parents[1]) + "\n")
    return venv / "bin"


@dataclass
class Subject:
    name: str
    port: int
    command: list[str]
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"/v2/models/{MODEL}/infer"

    def start(self, logs: Path) -> None:
        self.log = logs / f"{self.name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/v2/models/{MODEL}/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{self.name} not ready within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def torchyard_subject(name: str, artifact: Path, *extra: str) -> Subject:
    port = free_port()
    command = [sys.executable, "-m", "torchyard_trainer.serve", "--model-dir", str(artifact), "--model-name", MODEL,
               "--model-version", VERSION, "--host", HOST, "--port", str(port), "--threads", "1", *extra]
    return Subject(name, port, command)


def mlserver_subject(name: str, bin_dir: Path, artifact: Path, root: Path, settings: dict) -> Subject:
    directory = root / name
    (directory / MODEL).mkdir(parents=True)
    port = free_port()
    (directory / "runtime.py").write_text(RUNTIME)
    (directory / "settings.json").write_text(json.dumps(
        {"host": HOST, "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), **settings}))
    (directory / MODEL / "model-settings.json").write_text(json.dumps(
        {"name": MODEL, "implementation": "runtime.TorchScriptRuntime",
         "parameters": {"uri": str(artifact), "version": VERSION}}))
    return Subject(name, port, [str(bin_dir / "mlserver"), "start", str(directory)], cwd=directory)


# --- the client --------------------------------------------------------------------------------------


@dataclass
class Cell:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


async def _client(port: int, request: bytes, stop_at: float, budget: list[int], cell: Cell) -> None:
    """One keep-alive connection sending requests back to back until the time or request budget ends."""
    reader = writer = None
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            if head[9:12] != b"200":
                cell.errors += 1
                continue
            cell.latencies.append(time.perf_counter() - started)
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, StopIteration, ValueError):
            cell.errors += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def measure(subject: Subject, body: bytes, concurrency: int, seconds: float, max_requests: int) -> Cell:
    request = (f"POST {subject.url} HTTP/1.1\r\nHost: {HOST}:{subject.port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    cell, budget = Cell(), [max_requests]
    started = time.perf_counter()
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_client(subject.port, request, stop_at, budget, cell) for _ in range(concurrency)))
    cell.seconds = time.perf_counter() - started
    return cell


# --- the run -----------------------------------------------------------------------------------------


def run(coroutine):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def summarize(cells: list[Cell]) -> dict:
    latencies = sorted(x for c in cells for x in c.latencies)
    seconds = sum(c.seconds for c in cells)
    if not latencies:
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": sum(c.errors for c in cells)}
    return {"rps": len(latencies) / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "errors": sum(c.errors for c in cells), "requests": len(latencies)}


def report(results: dict[tuple[str, int], dict], subjects: list[str], levels: list[int]) -> None:
    print(f"\n{'subject':<20}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for level in levels:
        for name in subjects:
            r = results[(name, level)]
            print(f"{name:<20}{level:>8}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}")
    mlservers = [s for s in subjects if s.startswith("mlserver")]
    print("\nthroughput ratios (torchyard subject / MLServer configuration; best = the better MLServer)")
    for level in levels:
        best = max(results[(m, level)]["rps"] for m in mlservers) or float("nan")
        for name in (s for s in subjects if s.startswith("torchyard")):
            rps = results[(name, level)]["rps"]
            ratios = "  ".join(f"/{m} {rps / (results[(m, level)]['rps'] or float('nan')):.2f}" for m in mlservers)
            print(f"  {level:>3} clients  {name:<20} {ratios}  /best {rps / best:.2f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every cell")
    parser.add_argument("--seconds", type=float, default=3.0, help="longest time of one cell in one round")
    parser.add_argument("--max-requests", type=int, default=20000, help="most requests of one cell in one round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "torchyard")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    bin_dir = mlserver_venv(args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        artifact = root / "artifact"
        row = train_digits(artifact)
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                                       "data": row}]}).encode()
        subjects = [torchyard_subject("torchyard", artifact),
                    torchyard_subject("torchyard-batching", artifact, "--batch-max-size", "32"),
                    mlserver_subject("mlserver", bin_dir, artifact, root, {}),
                    mlserver_subject("mlserver-pw0", bin_dir, artifact, root, {"parallel_workers": 0})]
        try:
            for s in subjects:
                s.start(root)
            for s in subjects:
                s.wait_ready(180)
                run(measure(s, body, 8, 1.0, 2000))  # warm-up: TorchScript optimizes on its first calls
            results = run_rounds(subjects, body, args)
        finally:
            for s in subjects:
                s.stop()
    names = [s.name for s in subjects]
    report(results, names, args.concurrency)
    if args.json:
        args.json.write_text(json.dumps({f"{n}@{c}": r for (n, c), r in results.items()}, indent=1))
    return 0


def run_rounds(subjects: list[Subject], body: bytes, args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    cells: dict[tuple[str, int], list[Cell]] = {(s.name, c): [] for s in subjects for c in args.concurrency}
    for round_index in range(args.rounds):
        for level in args.concurrency:
            order = subjects[round_index % len(subjects):] + subjects[:round_index % len(subjects)]
            for subject in order:
                cell = run(measure(subject, body, level, args.seconds, args.max_requests))
                cells[(subject.name, level)].append(cell)
                print(f"round {round_index + 1} {subject.name:<20} {level:>3} clients: "
                      f"{len(cell.latencies) / cell.seconds:8.0f} req/s, {cell.errors} errors", flush=True)
    return {key: summarize(value) for key, value in cells.items()}


if __name__ == "__main__":
    sys.exit(main())
