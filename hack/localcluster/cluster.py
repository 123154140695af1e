"""Bring one local cluster up or down, recording what was started in its state directory."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from . import components as comp
from . import nodes, pki, procs
from .config import HACK_DIR, Binaries, kubectl

log = logging.getLogger(__name__)

ORDER = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
COMMANDS = {"etcd": comp.etcd, "kube-apiserver": comp.apiserver,
            "kube-controller-manager": comp.controller_manager, "kube-scheduler": comp.scheduler,
            "kwok": comp.kwok}


class ClusterError(RuntimeError):
    """The cluster could not be started; the message says why and what to do."""


class LocalCluster:
    """The processes and files of one cluster living in `state_dir`."""

    def __init__(self, state_dir: Path):
        self.layout = comp.Layout(state_dir)
        self.bins = Binaries.for_versions()

    # -- state file -------------------------------------------------------------------------
    def _load(self) -> dict | None:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save(self, ports: comp.Ports, started: list[procs.Managed]) -> None:
        state = {"ports": asdict(ports), "processes": [p.to_json() for p in started],
                 "server": f"https://127.0.0.1:{ports.apiserver}"}
        self.layout.state_file.write_text(json.dumps(state, indent=2))

    def processes(self) -> list[procs.Managed]:
        state = self._load() or {}
        return [procs.Managed(**p) for p in state.get("processes", [])]

    # -- health -----------------------------------------------------------------------------
    def health(self) -> dict[str, bool]:
        """Each component: its recorded process is alive and its health endpoint answers."""
        state = self._load()
        if not state:
            return {}
        urls = comp.health_urls(comp.Ports(**state["ports"]))
        context = procs.client_context(self.layout.pki)
        running = {p.name: p.alive() for p in self.processes()}
        return {name: running.get(name, False)
                and procs.probe(urls[name], context if urls[name].startswith("https") else None)
                for name in ORDER}

    def healthy(self) -> bool:
        status = self.health()
        return bool(status) and all(status.values())

    # -- up / down --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        """One `up` or `down` at a time per state directory: concurrent test sessions that all
        find no cluster start one and share it, instead of replacing each other's."""
        lock_path = self.layout.root.with_name(self.layout.root.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self, build: bool = True) -> bool:
        """Start the cluster unless a healthy one runs already; True when it was started now."""
        with self._locked():
            return self._up(build)

    def down(self) -> None:
        """Stop every recorded process (newest first) and remove the state directory."""
        with self._locked():
            self._down()

    def _up(self, build: bool) -> bool:
        if self.healthy():
            log.info("cluster in %s is already running and healthy", self.layout.root)
            return False
        if self.layout.root.exists():
            self._down()
        self._ensure_binaries(build)
        self.layout.root.mkdir(parents=True)
        self.layout.state_file.write_text("{}")  # marks the directory as ours, for `down`
        try:
            self._start_all()
        except BaseException:
            log.error("start failed; logs are in %s", self.layout.logs)
            for proc in reversed(self.processes()):
                procs.stop(proc)
            raise
        return True

    def _down(self) -> None:
        root = self.layout.root
        if not root.exists():
            return
        if not self.layout.state_file.exists():
            raise ClusterError(f"{root} exists but holds no cluster state; not touching it")
        for proc in reversed(self.processes()):
            procs.stop(proc)
        shutil.rmtree(root)
        log.info("cluster in %s stopped and removed", root)

    def _ensure_binaries(self, build: bool) -> None:
        if not self.bins.missing():
            return
        if not build:
            raise ClusterError("control-plane binaries are missing: "
                               + ", ".join(map(str, self.bins.missing()))
                               + "\nbuild them with `make cluster-up` (about 30 minutes the first "
                               "time, cached afterwards) or point KUBECONFIG at a cluster")
        log.info("building missing binaries (cached afterwards)")
        subprocess.run(["bash", str(HACK_DIR / "build-control-plane.sh")], check=True)

    def _start_all(self) -> None:
        layout, started = self.layout, []
        ports = comp.Ports(*(procs.free_port() for _ in range(6)))
        pki.write_pki(layout.pki)
        pki.write_admin_kubeconfig(layout.kubeconfig, layout.pki, f"https://127.0.0.1:{ports.apiserver}")
        context, urls = procs.client_context(layout.pki), comp.health_urls(ports)
        kubectl_ = nodes.Kubectl(kubectl(), layout.kubeconfig)
        for name in ORDER:
            if name == "kwok":
                nodes.apply_stages(kubectl_, self.bins.kwok_kustomize)
            proc, popen = procs.start(name, COMMANDS[name](self.bins, layout, ports), layout.logs)
            started.append(proc)
            self._save(ports, started)
            url = urls[name]
            took = procs.wait_healthy(proc, popen, url, context if url.startswith("https") else None)
            log.info("%s ready in %.1fs", name, took)
            if name == "kube-controller-manager":
                self._wait_default_service_account(kubectl_)
        nodes.create_nodes(kubectl_)
        log.info("nodes Ready")

    @staticmethod
    def _wait_default_service_account(kubectl_: nodes.Kubectl, timeout_s: float = 60) -> None:
        """The ServiceAccount controller creating `default` proves controllers can act."""
        deadline = time.monotonic() + timeout_s
        while kubectl_("get", "serviceaccount", "default", "-n", "default", check=False) == "":
            if time.monotonic() > deadline:
                raise ClusterError("the default ServiceAccount never appeared: see "
                                   "kube-controller-manager.log")
            time.sleep(0.3)
