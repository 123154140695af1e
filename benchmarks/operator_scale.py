"""How fast the operator turns many TrainingJobs into running pods, against the floor.

Baseline: the same pods and Services created directly through the API by one client, as fast as
it can, then waited on until Running; that is the least time the control plane needs for them.
Operator: N TrainingJobs created at once, the operator running as a subprocess; measured until
every job's pods exist and until every job reports Running. Also the operator's peak memory.

    make cluster-up
    .venv/bin/python benchmarks/operator_scale.py [--jobs 100] [--workers 2]

Prints figures and the ratio operator / baseline; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from common import default_kubeconfig, free_port
from kubernetes import client, config

from torchyard.api.trainingjob import parse_training_job
from torchyard.builders.pods import build_pods, build_service
from torchyard.settings import Settings

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"


def job_object(name: str, workers: int) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"strategy": "AllReduce", "worker": {"replicas": workers},
                     "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}}}}


def wait(predicate, timeout: float = 600, interval: float = 0.25) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the cluster did not get there in time")
        time.sleep(interval)
    return time.monotonic() - start


def running_pods(core, namespace: str) -> int:
    return sum(1 for p in core.list_namespaced_pod(namespace).items if p.status.phase == "Running")


def baseline(core, namespace: str, jobs: int, workers: int) -> float:
    """Create the pods and Services directly; seconds until all are Running."""
    start = time.monotonic()
    for i in range(jobs):
        obj = job_object(f"direct-{i}", workers)
        obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
        job = parse_training_job(obj)
        core.create_namespaced_service(namespace, _unowned(build_service(job)))
        for pod in build_pods(job, attempt=0, settings=Settings()):
            core.create_namespaced_pod(namespace, _unowned(pod))
    wait(lambda: running_pods(core, namespace) == jobs * workers)
    return time.monotonic() - start


def _unowned(manifest: dict) -> dict:
    manifest["metadata"].pop("ownerReferences", None)  # no TrainingJob exists to own them
    return manifest


def with_operator(core, custom, namespace: str, jobs: int, workers: int, config_path: str) -> dict:
    port = free_port()
    env = {**os.environ, "KUBECONFIG": config_path}
    proc = subprocess.Popen([sys.executable, "-m", "torchyard.cli", "operator", "-n", namespace,
                             "--http-host", "127.0.0.1", "--http-port", str(port), "--log-level", "WARNING"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(lambda: _healthy(port), timeout=60)
        rss_idle = _rss_mib(proc.pid)
        start = time.monotonic()
        for i in range(jobs):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job_object(f"job-{i}", workers))
        wait(lambda: len(core.list_namespaced_pod(namespace).items) == jobs * workers)
        created = time.monotonic() - start
        peak = rss_idle

        def all_running() -> bool:
            nonlocal peak
            peak = max(peak, _rss_mib(proc.pid))
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            return sum(1 for j in items if (j.get("status") or {}).get("phase") == "Running") == jobs

        wait(all_running)
        return {"created": created, "running": time.monotonic() - start, "rss_idle": rss_idle, "rss_peak": peak}
    finally:
        proc.terminate()
        proc.wait(30)


def _healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    path = default_kubeconfig()
    config.load_kube_config(path)
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    subprocess.run([str(REPO / ".venv" / "bin" / "kubectl"), "--kubeconfig", path, "apply", "--server-side",
                    "--force-conflicts", "-f", str(REPO / "crds")], check=True, capture_output=True)
    namespaces = [f"bench-scale-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns}})
    try:
        floor = baseline(core, namespaces[0], args.jobs, args.workers)
        result = with_operator(core, custom, namespaces[1], args.jobs, args.workers, path)
    finally:
        for ns in namespaces:
            core.delete_namespace(ns)
    pods = args.jobs * args.workers
    print(f"{args.jobs} jobs x {args.workers} workers = {pods} pods")
    print(f"baseline  direct API creates, all pods Running:   {floor:7.2f} s")
    print(f"operator  all pods created:                        {result['created']:7.2f} s")
    print(f"operator  all jobs Running (status):               {result['running']:7.2f} s")
    print(f"ratio     operator Running / baseline Running:     {result['running'] / floor:7.2f}")
    print(f"operator  memory idle / peak:                      {result['rss_idle']:.0f} / {result['rss_peak']:.0f} MiB")


if __name__ == "__main__":
    main()
