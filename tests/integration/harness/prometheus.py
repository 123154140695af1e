"""A real Prometheus for the tests, and the shipped Grafana dashboard's queries to ask it.

The binary is the pinned build of hack/build-control-plane.sh (`hack/local-cluster.py which
prometheus`). It listens on 127.0.0.1, keeps its data under the test's directory and scrapes what
the test's configuration names; the test asks it through the HTTP API, as Grafana does.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from torchyard_spec.topology import free_port

from .cluster import REPO_ROOT, local_cluster
from .waits import wait_for

DASHBOARD = REPO_ROOT / "charts" / "torchyard" / "files" / "dashboards" / "torchyard.json"


def binary() -> str:
    """The pinned Prometheus, or a failure saying how to build it."""
    found = local_cluster("which", "prometheus")
    if found.returncode != 0:
        raise AssertionError(f"prometheus not built ({found.stdout.strip()}): run `bash hack/build-control-plane.sh`")
    return found.stdout.strip()


class Prometheus:
    """One Prometheus process over ``scrape_configs``, every target scraped each ``interval``."""

    def __init__(self, workdir: Path, scrape_configs: list[dict], interval: str = "1s"):
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": scrape_configs}))
        self.log_path = workdir / "prometheus.log"
        self._popen: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Prometheus":
        argv = [binary(), f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._ready, f"prometheus ready at {self.url}", timeout, interval=0.3)
        return self

    def _ready(self) -> bool:
        if self._popen.poll() is not None:
            raise AssertionError(f"prometheus exited with {self._popen.returncode}:\n{self.logs()[-4000:]}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(15)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params) -> dict | list:
        """GET /api/v1/<path>; the `data` of a success, else an AssertionError with Prometheus's error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> list[dict]:
        """The series of a range query: [{"metric": labels, "values": [[t, "v"], ...]}, ...]."""
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def wait_up(self, scrape_pool: str, timeout: float = 60) -> list[dict]:
        """The pool's targets once at least one is up and none is down."""
        def up():
            pool = [t for t in self.targets() if t["scrapePool"] == scrape_pool]
            return pool if pool and all(t["health"] == "up" for t in pool) else None
        return wait_for(up, f"scrape pool {scrape_pool} up", timeout, interval=0.5)


def with_data(series: list[dict]) -> list[dict]:
    """The series that hold at least one number (NaN, the quantile of no observations, is no data)."""
    return [s for s in series if any(not math.isnan(float(v)) for _, v in s["values"])]


@dataclass(frozen=True)
class Query:
    row: str  # the title of the row the panel sits in
    panel: str
    legend: str
    expr: str  # as the dashboard has it, variables unresolved

    def resolved(self, variables: dict[str, str]) -> str:
        """The expression with ${name} / $name replaced, longest names first ($__rate_interval too)."""
        expr = self.expr
        for name in sorted(variables, key=len, reverse=True):
            expr = re.sub(r"\$\{" + re.escape(name) + r"\}|\$" + re.escape(name) + r"\b", variables[name], expr)
        unresolved = re.findall(r"\$\{?\w+", expr)
        assert not unresolved, f"{self.panel}: no value for {unresolved} in {self.expr}"
        return expr


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    """Every panel target of the dashboard, with the row it sits in (collapsed rows' panels too)."""
    board, row, found = json.loads(path.read_text()), "", []
    for top in board["panels"]:
        row = top["title"] if top["type"] == "row" else row
        for panel in [top, *top.get("panels", [])]:
            found += [Query(row, panel["title"], t.get("legendFormat", ""), t["expr"]) for t in panel.get("targets", [])]
    return found


def _meta(label: str) -> str:
    """A pod label's name in Prometheus's Kubernetes discovery (every other character becomes _)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_monitor_scrape_config(monitor: dict, kubeconfig: str, namespaces: list[str], interval: str) -> dict:
    """What the Prometheus Operator makes of a PodMonitor, for a Prometheus without it: Kubernetes
    pod discovery through `kubeconfig`, keeping the pods the monitor selects and the port it names,
    with the `namespace` and `pod` target labels the operator attaches."""
    spec, endpoint = monitor["spec"], monitor["spec"]["podMetricsEndpoints"][0]
    keep = []
    for expr in spec["selector"].get("matchExpressions", []):
        if expr["operator"] == "Exists":
            keep.append((f"__meta_kubernetes_pod_labelpresent_{_meta(expr['key'])}", "true"))
        elif expr["operator"] == "In":
            keep.append((f"__meta_kubernetes_pod_label_{_meta(expr['key'])}", "|".join(map(re.escape, expr["values"]))))
        else:
            raise ValueError(f"{monitor['metadata']['name']}: operator {expr['operator']} not translated")
    for key, value in spec["selector"].get("matchLabels", {}).items():
        keep.append((f"__meta_kubernetes_pod_label_{_meta(key)}", re.escape(value)))
    keep.append(("__meta_kubernetes_pod_container_port_name", endpoint["port"]))
    relabel = [{"source_labels": [source], "regex": regex, "action": "keep"} for source, regex in keep]
    relabel += [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]
    return {"job_name": monitor["metadata"]["name"], "honor_labels": bool(endpoint.get("honorLabels")),
            "metrics_path": endpoint.get("path", "/metrics"), "scrape_interval": interval, "scrape_timeout": interval,
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": kubeconfig,
                                       "namespaces": {"names": namespaces}}],
            "relabel_configs": relabel}


def chart_pod_monitors(helm: str) -> list[dict]:
    """The chart's PodMonitors as `helm template` renders them with metrics.podMonitor.enabled."""
    chart = REPO_ROOT / "charts" / "torchyard"
    out = subprocess.run([helm, "template", "torchyard", str(chart), "--set", "metrics.podMonitor.enabled=true",
                          "--show-only", "templates/podmonitor.yaml"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc and doc["kind"] == "PodMonitor"]
