"""benchmarks/soak.py, bounded: a few jobs, a short fault window with at least one kube-apiserver
restart, the nodes left alone (node faults have their own tests). It must end with every job in the
state its policy predicts."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.cluster import REPO_ROOT


def test_a_short_soak_ends_with_every_job_where_its_policy_says(cluster, crds):
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "soak.py"), "--jobs", "6", "--fault-seconds", "20",
         "--no-node-faults"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT / "benchmarks",
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "jobs in a wrong state: 0" in run.stdout and "orphaned pods: 0" in run.stdout
    assert "kube-apiserver restarts: " in run.stdout, run.stdout[-4000:]
