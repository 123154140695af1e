"""The trainer as the operator sees it: exit codes, result JSON, progress reports, metrics."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from torchyard_spec.contract import PROGRESS_FIELDS, ROLE_WORKER
from torchyard_spec.topology import Topology, loopback
from torchyard_trainer import local
from torchyard_trainer.errors import EXIT_USER_ERROR
from trainer_gang import DIGITS_MLP, assert_succeeded, process_environment, run_gang, steps_per_epoch

pytestmark = pytest.mark.trainer


@pytest.mark.parametrize("config, field", [
    ({"model": {"name": "transformer"}}, "spec.trainer.model.name"),
    ({"dataset": {"name": "file", "path": "/nonexistent/data.npz"}}, "spec.trainer.dataset.path"),
])
def test_a_bad_config_exits_2_and_names_the_field(tmp_path, config, field):
    run = run_gang(tmp_path, config, workers=2, timeout=60, stop_on_failure=False)
    assert run.codes == {"local-worker-0": EXIT_USER_ERROR, "local-worker-1": EXIT_USER_ERROR}, run.describe()
    for name in run.names:
        error = run.result(name)["error"]
        assert error["field"] == field and error["message"]


class _Receiver(BaseHTTPRequestHandler):
    reports: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reports.append((self.headers.get("Authorization"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def scrape_until_steps(port: int, gang: local.Gang) -> str:
    """The worker's /metrics once it has counted a training step (while the job still runs)."""
    while all(p.poll() is None for p in gang.popens):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith("torchyard_trainer_steps_total{") and float(line.split()[-1]) > 0:
                return text
        time.sleep(0.05)
    raise AssertionError("the job ended before its metrics showed a step")


def test_progress_reports_and_metrics_while_training(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics_port = local.free_port()
    config = {**DIGITS_MLP, "epochs": 25, "batchSize": 16, "progressIntervalSeconds": 0.2}
    names, environs = local.gang_environs(
        config=config, workers=1, checkpoint_dir=str(tmp_path / "c"), model_dir=str(tmp_path / "m"),
        result_dir=str(tmp_path / "r"), metrics_port=metrics_port, progress_token="s3cret",
        progress_url=f"http://127.0.0.1:{server.server_address[1]}/progress")
    gang = local.start([{**e, **process_environment()} for e in environs], names=names)
    try:
        metrics = scrape_until_steps(metrics_port, gang)
    finally:
        results = gang.wait(timeout=120)
        server.shutdown()
    assert results[0].returncode == 0, "\n".join(results[0].output)

    # The model's name (the job's, by default) and, while training, the run's name: the artifact directory.
    labels = 'job="local",model_name="local",model_version="m",rank="0",role="worker"'
    for name in ("loss", "samples_per_second", "progress_ratio", "steps_total", "step_seconds_count",
                 "communication_seconds_count"):
        assert f"torchyard_trainer_{name}{{{labels}}}" in metrics, name
    reports = _Receiver.reports
    assert len(reports) >= 2 and all(auth == "Bearer s3cret" for auth, _ in reports)
    assert all(set(body) == set(PROGRESS_FIELDS) for _, body in reports)
    total = 25 * steps_per_epoch(1, 16)
    steps = [body["step"] for _, body in reports]
    assert steps == sorted(steps) and reports[-1][1]["step"] == reports[-1][1]["totalSteps"] == total
    assert reports[-1][1]["percent"] == 100.0


def test_an_unreachable_progress_endpoint_does_not_stop_training(tmp_path):
    config = {**DIGITS_MLP, "epochs": 1, "progressIntervalSeconds": 0.1}
    run = run_gang(tmp_path, config, workers=1, progress_url=f"http://127.0.0.1:{local.free_port()}/p")
    assert_succeeded(run)
    assert "progress report to" in run.output("local-worker-0")


def test_a_pod_with_two_local_processes_trains_as_two_ranks(tmp_path):
    topology = Topology.of(1, worker_processes=2)
    env = topology.pod_env(
        topology.member(ROLE_WORKER, 0), loopback(local.free_port()), job_name="pod", namespace="local",
        checkpoint_dir=str(tmp_path / "c"), model_dir=str(tmp_path / "m"), model_name="pod",
        trainer_config=DIGITS_MLP, metrics_port=0, result_path=str(tmp_path / "result.json"))
    [result] = local.launch([{**env.to_environ(), **process_environment()}], timeout=120)
    assert result.returncode == 0, "\n".join(result.output)
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == DIGITS_MLP["epochs"] * steps_per_epoch(2, 32)
    assert any("[worker rank 1]" in line for line in result.output)
