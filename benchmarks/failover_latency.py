"""Failover and rollback latency of a ModelDeployment on a live cluster: figures, never pass/fail.

    make cluster-up                                  # prints the kubeconfig path
    python benchmarks/failover_latency.py [--trials 20] [--grace 1.0] [--kubeconfig PATH]

Starts the operator for a scratch namespace (with the kubeconfig's own rights), serves model
`bench` from a few hand-made ModelVersions, and measures, as a client sees it:

  (a) failover: every pod of the active version turns NotReady (written to the pod status as a
      kubelet with a failing readiness probe would) -> the Service selects the standby;
  (b) rollback: spec.activeVersion changed to the warm standby -> the Service selects it.

Times run from just before the triggering write to the moment a watch on the Service delivers
the new selector. Between trials the world is put back (pods Ready again, or the newest version
pinned again) and the script waits for traffic to return; that part is not measured. On the
local control plane the pods are kwok's, so nothing here depends on a model server's start time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from common import default_kubeconfig, free_port
from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, MODEL = "torchyard.dev", "v1alpha1", "bench"


class SelectorWatch:
    """Records when the Service's selector moves to each version, from a watch stream."""

    def __init__(self, core: client.CoreV1Api, namespace: str):
        self.core, self.namespace = core, namespace
        self.changed = threading.Condition()
        self.version: str | None = None
        self.at = 0.0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            stream = watch.Watch().stream(self.core.list_namespaced_service, self.namespace,
                                          field_selector=f"metadata.name={MODEL}", timeout_seconds=300)
            for event in stream:
                version = (event["object"].spec.selector or {}).get("torchyard.dev/version")
                with self.changed:
                    if version != self.version:
                        self.version, self.at = version, time.monotonic()
                        self.changed.notify_all()

    def wait_for(self, version: int, timeout: float = 60) -> float:
        """The monotonic time the selector moved to `version`."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.version == str(version), timeout):
                raise SystemExit(f"the Service did not select v{version} within {timeout}s (it selects v{self.version})")
            return self.at


def start_operator(kubeconfig: str, namespace: str, log_path: Path) -> subprocess.Popen:
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "torchyard.cli", "operator", "--namespace", namespace, "--standalone",
                             "--http-host", "127.0.0.1", "--http-port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": kubeconfig})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the operator did not start; see {log_path}")


def model_version(custom, namespace: str, version: int) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelVersion", "metadata": {"name": f"{MODEL}-v{version}"},
        "spec": {"modelName": MODEL, "version": version, "artifact": {"path": f"/models/{MODEL}/{version}"},
                 "metrics": {"accuracy": 0.9 + version / 100}, "metric": "accuracy"}})


def set_ready(core, namespace: str, version: int, ready: bool) -> None:
    """Every pod of a version turns (Not)Ready, as a kubelet reports a readiness probe's result."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    pods = core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/version={version}").items
    for pod in pods:
        statuses = [client.ApiClient().sanitize_for_serialization(s) for s in pod.status.container_statuses or []]
        for status in statuses:
            status["ready"] = ready
        value = "True" if ready else "False"
        core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
            "containerStatuses": statuses,
            "conditions": [{"type": t, "status": value, "lastTransitionTime": now} for t in ("Ready", "ContainersReady")]}})


def patch_active(custom, namespace: str, version: int | None) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", MODEL,
                                          {"spec": {"activeVersion": version}})


def operator_latencies(custom, namespace: str, reason: str, to: int) -> list[float]:
    """switchLatencySeconds of the switches in status.history (the last 20) with this reason and target."""
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", MODEL)
    return [h["switchLatencySeconds"] for h in obj["status"].get("history", [])
            if h["reason"] == reason and h["to"] == to]


def wait_pods_ready(core, namespace: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/version={version}").items
        if pods and all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods):
            return
        time.sleep(0.1)
    raise SystemExit(f"pods of v{version} not ready within {timeout}s")


def failover_trials(core, custom, watcher: SelectorWatch, namespace: str, trials: int) -> list[float]:
    times = []
    for _ in range(trials):
        wait_pods_ready(core, namespace, 1)
        started = time.monotonic()
        set_ready(core, namespace, 2, False)
        times.append(watcher.wait_for(1) - started)
        set_ready(core, namespace, 2, True)
        watcher.wait_for(2)  # fail-back after the grace period; not measured
    return times


def rollback_trials(core, custom, watcher: SelectorWatch, namespace: str, trials: int) -> list[float]:
    times = []
    for _ in range(trials):
        wait_pods_ready(core, namespace, 2)
        started = time.monotonic()
        patch_active(custom, namespace, 2)
        times.append(watcher.wait_for(2) - started)
        patch_active(custom, namespace, 3)  # v3 scales up again from zero; not measured
        watcher.wait_for(3)
    return times


def report(title: str, times: list[float], own: list[float], target: float) -> None:
    print(f"{title}: {len(times)} trials")
    print(f"  client-observed  median {statistics.median(times):.3f}s  worst {max(times):.3f}s  best {min(times):.3f}s"
          f"  (target < {target:g}s)")
    if own:
        print(f"  status.history   median {statistics.median(own):.3f}s  worst {max(own):.3f}s"
              f"  (the operator's own measure, last {len(own)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--grace", type=float, default=1.0, help="spec.failover.gracePeriodSeconds")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args()
    kubeconfig = args.kubeconfig or default_kubeconfig()
    api = config.new_client_from_config(config_file=kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    kubectl = Path(sys.executable).parent / "kubectl"
    subprocess.run([str(kubectl) if kubectl.exists() else "kubectl", f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts",
                    "-f", str(ROOT / "crds")], check=True, capture_output=True)
    namespace = core.create_namespace({"metadata": {"generateName": "bench-failover-"}}).metadata.name
    operator = start_operator(kubeconfig, namespace, Path(f"/tmp/{namespace}-operator.log"))
    try:
        return run(core, custom, namespace, args)
    finally:
        operator.terminate()
        operator.wait(10)
        core.delete_namespace(namespace)


def run(core, custom, namespace: str, args) -> int:
    watcher = SelectorWatch(core, namespace)
    for version in (1, 2):
        model_version(custom, namespace, version)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": MODEL},
        "spec": {"modelName": MODEL, "standby": 1, "failover": {"gracePeriodSeconds": args.grace}}})
    watcher.wait_for(2)
    print(f"operator on {namespace}; failover.gracePeriodSeconds={args.grace:g}; one replica per version\n")
    failover = failover_trials(core, custom, watcher, namespace, args.trials)
    report("(a) active pods NotReady -> selector on the standby", failover,
           operator_latencies(custom, namespace, "failover", 1), 2.0)
    print(f"  of which the grace period: {args.grace:g}s\n")
    model_version(custom, namespace, 3)
    watcher.wait_for(3)
    rollback = rollback_trials(core, custom, watcher, namespace, args.trials)
    report("(b) spec.activeVersion changed -> selector on that (warm) version", rollback,
           operator_latencies(custom, namespace, "manual", 2), 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
