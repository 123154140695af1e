"""Several training processes per CPU pod (a role's nprocPerNode): `torchyard run` starts each pod,
the pod's bundled trainer starts nprocPerNode processes, and they train as one gang whose world
size counts processes, with each pod's ranks consecutive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.trainer

REPO = Path(__file__).resolve().parents[2]


def test_two_pods_of_two_processes_train_as_a_world_of_four(tmp_path):
    job = yaml.safe_load((REPO / "examples" / "digits-ddp.yaml").read_text())
    job["metadata"]["name"] = "nproc"
    job["spec"]["worker"]["nprocPerNode"] = 2
    job["spec"]["trainer"]["epochs"] = 3
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    done = subprocess.run([sys.executable, "-m", "torchyard.cli", "run", str(path), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    joined = re.findall(r"\[(nproc-worker-\d)\].* as rank (\d) of (\d)", done.stderr)
    assert sorted(joined) == [("nproc-worker-0", "0", "4"), ("nproc-worker-0", "1", "4"),
                              ("nproc-worker-1", "2", "4"), ("nproc-worker-1", "3", "4")], done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results" / "nproc-worker-0.json").read_text())
    assert result["metrics"]["accuracy"] > 0.8
