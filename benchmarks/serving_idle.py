"""The operator's API requests while N ModelDeployments serve and nothing changes: figures, never pass/fail.

    make cluster-up
    python benchmarks/serving_idle.py [--models 20] [--window 30] [--kubeconfig PATH]

Starts the counting proxy (apicount.py) and the operator for a scratch namespace behind it, serves
N models of one ModelVersion each (the pods are kwok's, Ready at once), waits until every one
serves, lets it settle, then counts the requests the operator makes during the window, by verb and
resource. Watches are counted apart: they are opened once and stay open.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import apicount
from common import default_kubeconfig, free_port
from kubernetes import client, config

GROUP, VERSION = "torchyard.dev", "v1alpha1"
HERE = Path(__file__).resolve().parent
SETTLE_SECONDS = 10.0


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def serve_models(custom, namespace: str, models: int) -> None:
    for i in range(models):
        model = f"idle-{i}"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelVersion", "metadata": {"name": f"{model}-v1"},
            "spec": {"modelName": model, "version": 1, "artifact": {"path": f"/models/{model}/1"}}})
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": model},
            "spec": {"modelName": model, "standby": 0}})


def all_serving(custom, namespace: str, models: int) -> bool:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments")["items"]
    return sum(1 for md in items if (md.get("status") or {}).get("activeVersion") == 1) == models


def start_operator(kubeconfig: str, namespace: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "torchyard.cli", "operator", "--namespace", namespace, "--standalone",
                             "--http-host", "127.0.0.1", "--http-port", str(port)],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": kubeconfig})
    return proc, port


def window_counts(counter_port: int, window: float) -> dict[str, int]:
    before = get_json(f"http://127.0.0.1:{counter_port}/__counts") or {}
    time.sleep(window)
    after = get_json(f"http://127.0.0.1:{counter_port}/__counts") or {}
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--window", type=float, default=30.0, help="seconds counted once all serve")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args()
    kubeconfig = args.kubeconfig or default_kubeconfig()
    api = config.new_client_from_config(config_file=kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = core.create_namespace({"metadata": {"generateName": "bench-serving-idle-"}}).metadata.name
    counter_port = free_port()
    counter = subprocess.Popen([sys.executable, str(HERE / "apicount.py"), "--kubeconfig", kubeconfig,
                                "--port", str(counter_port)], stderr=subprocess.DEVNULL)
    counted = Path(tempfile.mkdtemp(prefix="serving-idle-")) / "kubeconfig"
    counted.write_text(apicount.kubeconfig_for(counter_port))
    operator = None
    try:
        wait(lambda: get_json(f"http://127.0.0.1:{counter_port}/__counts") is not None, 30, "the counting proxy")
        operator, port = start_operator(str(counted), namespace, Path(f"/tmp/{namespace}-operator.log"))
        wait(lambda: get_json(f"http://127.0.0.1:{port}/healthz") is not None or operator.poll() is not None, 60,
             "the operator")
        serve_models(custom, namespace, args.models)
        wait(lambda: all_serving(custom, namespace, args.models), 300, f"{args.models} ModelDeployments to serve")
        time.sleep(SETTLE_SECONDS)
        counts = window_counts(counter_port, args.window)
        report(counts, args.models, args.window)
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(10)
        counter.terminate()
        counter.wait(10)
        core.delete_namespace(namespace)


def report(counts: dict[str, int], models: int, window: float) -> None:
    requests = {k: v for k, v in counts.items() if not k.startswith("watch ")}
    total = sum(requests.values())
    print(f"{models} ModelDeployments serving, idle; {window:g}s counted")
    print(f"  requests other than watches: {total} ({total * 10 / window:.1f} per 10 s)")
    for label, n in requests.items():
        print(f"    {label:40s} {n}")
    watches = sum(v for k, v in counts.items() if k.startswith("watch "))
    print(f"  watch requests (re)opened: {watches}")


if __name__ == "__main__":
    sys.exit(main())
