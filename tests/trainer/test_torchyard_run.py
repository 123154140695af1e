"""`torchyard run`: the examples train end to end as local processes, failures and Ctrl-C stop
everything, and the summary tells the user what they got."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.trainer

REPO = Path(__file__).resolve().parents[2]
TORCHYARD = [sys.executable, "-m", "torchyard.cli"]


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(TORCHYARD + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.parametrize("example", ["digits-ps.yaml", "digits-ddp.yaml"])
def test_example_trains_digits_to_095(example, tmp_path):
    done = run(["run", str(REPO / "examples" / example), "--output", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "results" / f"{Path(example).stem}-worker-0.json").read_text())
    assert result["metrics"]["accuracy"] >= 0.95
    artifact = Path(result["artifact"]["path"])
    assert artifact == tmp_path / "model" and (artifact / "model.pt").exists()
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["sha256"] == result["artifact"]["sha256"]
    assert "SUCCEEDED" in done.stderr and f"accuracy: {result['metrics']['accuracy']:.4f}" in done.stderr
    # Logs are streamed with the pod's name as a prefix, every pod of the job included.
    assert f"[{Path(example).stem}-worker-1]" in done.stderr


def test_a_failing_rank_stops_the_run_and_names_the_field(tmp_path):
    job = yaml.safe_load((REPO / "examples" / "digits-ddp.yaml").read_text())
    job["spec"]["trainer"]["dataset"] = {"name": "file", "path": str(tmp_path / "missing.npz")}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    done = run(["run", str(path), "--output", str(tmp_path / "out")], timeout=120)
    assert done.returncode == 1
    assert "FAILED" in done.stderr
    assert "spec.trainer.dataset.path" in done.stderr


def test_a_bad_spec_is_rejected_before_anything_starts(tmp_path):
    job = yaml.safe_load((REPO / "examples" / "digits-ps.yaml").read_text())
    del job["spec"]["parameterServer"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    done = run(["run", str(path), "--output", str(tmp_path / "out")], timeout=60)
    assert done.returncode == 2
    assert "spec.parameterServer is required" in done.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_stops_every_process(tmp_path):
    proc = subprocess.Popen(TORCHYARD + ["run", str(REPO / "examples" / "digits-ps.yaml"), "--output", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    children = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(children) < 3:
        children = _children(proc.pid)
        time.sleep(0.2)
    assert len(children) == 3, "the parameter server and both workers started"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "interrupted" in output
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "gone"


def test_a_teacher_named_as_a_model_version_is_refused_locally(tmp_path):
    done = run(["run", str(REPO / "examples" / "pruned-distilled.yaml"), "--output", str(tmp_path / "out")], timeout=60)
    assert done.returncode == 2
    assert "teacher.modelVersion" in done.stderr and "teacherPath" in done.stderr
