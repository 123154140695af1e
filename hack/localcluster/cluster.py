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
from . import host, nodes, pki, procs, realnode
from .config import HACK_DIR, Binaries, kubectl

log = logging.getLogger(__name__)

CONTROL_PLANE = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
NODE = ["containerd", "kubelet", "kube-proxy", "coredns"]
COMMANDS = {"etcd": comp.etcd, "kube-apiserver": comp.apiserver,
            "kube-controller-manager": comp.controller_manager, "kube-scheduler": comp.scheduler,
            "kwok": comp.kwok}


PORT_TAKEN = "address already in use"


class ClusterError(RuntimeError):
    """The cluster could not be started; the message says why and what to do."""


class LocalCluster:
    """The processes and files of one cluster living in `state_dir`."""

    def __init__(self, state_dir: Path):
        self.layout = comp.Layout(state_dir)
        self.node = realnode.NodeLayout(state_dir / "node")
        self.bins = Binaries.for_versions()

    # -- state file -------------------------------------------------------------------------
    def _load(self) -> dict | None:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save(self, ports: comp.Ports, started: list[procs.Managed],
              node_ports: realnode.NodePorts | None) -> None:
        state = {"ports": asdict(ports), "processes": [p.to_json() for p in started],
                 "server": f"https://{ports.host}:{ports.apiserver}",
                 "node_ports": asdict(node_ports) if node_ports else None}
        self.layout.state_file.write_text(json.dumps(state, indent=2))

    def has_real_node(self) -> bool:
        return bool((self._load() or {}).get("node_ports"))

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
        if state.get("node_ports"):
            urls.update(realnode.health_urls(realnode.NodePorts(**state["node_ports"])))
        context = procs.client_context(self.layout.pki)
        health = {}
        for proc in self.processes():
            url = urls.get(proc.name)
            health[proc.name] = proc.alive() and (url is None or procs.probe(
                url, context if url.startswith("https") else None))
        for name in CONTROL_PLANE:
            health.setdefault(name, False)
        return health

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

    def up(self, build: bool = True, real_node: bool = False, kwok: bool = True) -> bool:
        """Start the cluster unless a healthy one of the same shape runs already; True when it was
        started now. `real_node` adds one real node (containerd, kubelet, kube-proxy, DNS);
        `kwok` the four kwok nodes."""
        if real_node and (missing := realnode.missing_prerequisites()):
            raise ClusterError("a real node needs " + ", ".join(missing)
                               + ": run hack/install-node-packages.sh as root")
        with self._locked():
            return self._up(build, real_node, kwok)

    def down(self) -> None:
        """Stop every recorded process (newest first) and remove the state directory."""
        with self._locked():
            self._down()

    def outdated(self) -> list[str]:
        """The control-plane components whose running command line differs from the one this
        checkout starts: the cluster was started by another checkout, with other flags."""
        state = self._load() or {}
        if not state.get("ports"):
            return []
        ports = comp.Ports(**state["ports"])
        return [proc.name for proc in self.processes() if proc.name in COMMANDS
                and proc.argv() != [str(arg) for arg in COMMANDS[proc.name](self.bins, self.layout, ports)]]

    def _up(self, build: bool, real_node: bool, kwok: bool) -> bool:
        running = {p.name for p in self.processes()}
        if self.healthy() and ("kubelet" in running) == real_node and ("kwok" in running) == kwok:
            if not (outdated := self.outdated()):
                log.info("cluster in %s is already running and healthy", self.layout.root)
                return False
            log.warning("%s run with flags other than this checkout's; starting the cluster again",
                        ", ".join(outdated))
        if self.layout.root.exists():
            self._down()
        self._ensure_binaries(build)
        for attempt in (1, 2):
            self.layout.root.mkdir(parents=True)
            self.layout.state_file.write_text("{}")  # marks the directory as ours, for `down`
            try:
                self._start_all(real_node, kwok)
                return True
            except BaseException as error:
                log.error("start failed; logs are in %s", self.layout.logs)
                self._stop_all()
                # Ports are chosen free, then bound by each component a moment later; another
                # process can take one in between. That, and only that, is worth a second try.
                if attempt == 2 or PORT_TAKEN not in str(error):
                    raise
                log.warning("a port was taken between choosing and binding it; starting again")
                shutil.rmtree(self.layout.root)
        return True

    def _down(self) -> None:
        root = self.layout.root
        if not root.exists():
            return
        if not self.layout.state_file.exists():
            raise ClusterError(f"{root} exists but holds no cluster state; not touching it")
        self._stop_all()
        shutil.rmtree(root)
        log.info("cluster in %s stopped and removed", root)

    def _stop_all(self) -> None:
        """Stop every recorded process, newest first; with a real node, first its containers, and
        last undo what the node changed on the host."""
        for proc in reversed(self.processes()):
            if proc.name == "containerd":
                realnode.remove_containers(self.node)
            procs.stop(proc)
        if self.node.host_record.exists():
            realnode.stop_leftovers(self.node, self.bins)
            host.undo(host.HostRecord.load(self.node.host_record), self.layout.root)

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

    def _start_all(self, real_node: bool, kwok: bool) -> None:
        layout, started = self.layout, []
        node_ports = realnode.NodePorts(*(procs.free_port() for _ in range(5))) if real_node else None
        ports = comp.Ports(*(procs.free_port() for _ in range(6)),
                           host=host.NODE_IP if real_node else "127.0.0.1")
        server = f"https://{ports.host}:{ports.apiserver}"
        if real_node:
            # Recorded before the host is touched, so `down` can put back exactly this.
            self.node.root.mkdir(parents=True)
            host.HostRecord.take().save(self.node.host_record)
            host.create_bridge(comp.SERVICE_CIDR)
        pki.write_pki(layout.pki, (realnode.NODE_NAME, host.NODE_IP) if real_node else None)
        pki.write_admin_kubeconfig(layout.kubeconfig, layout.pki, server)
        context, urls = procs.client_context(layout.pki), comp.health_urls(ports)
        kubectl_ = nodes.Kubectl(kubectl(), layout.kubeconfig)

        def start(name: str, argv: list[str], url: str | None) -> procs.Managed:
            proc, popen = procs.start(name, argv, layout.logs)
            started.append(proc)
            self._save(ports, started, node_ports)
            if url:
                took = procs.wait_healthy(proc, popen, url, context if url.startswith("https") else None)
                log.info("%s ready in %.1fs", name, took)
            return proc

        for name in CONTROL_PLANE:
            start(name, COMMANDS[name](self.bins, layout, ports), urls[name])
            if name == "kube-controller-manager":
                self._wait_default_service_account(kubectl_)
        if kwok:
            nodes.apply_stages(kubectl_, self.bins.kwok_kustomize)
            start("kwok", comp.kwok(self.bins, layout, ports), urls["kwok"])
            nodes.create_nodes(kubectl_)
            log.info("kwok nodes Ready")
        if real_node:
            self._start_node(start, server, node_ports, kubectl_)

    def _start_node(self, start, server: str, node_ports: realnode.NodePorts,
                    kubectl_: nodes.Kubectl) -> None:
        """containerd (with the images imported), then the kubelet, kube-proxy and DNS."""
        node, pki_dir, urls = self.node, self.layout.pki, realnode.health_urls(node_ports)
        kubeconfigs = {}
        for identity in ("kubelet-client", "kube-proxy"):
            kubeconfigs[identity] = self.layout.root / f"{identity}.kubeconfig"
            pki.write_admin_kubeconfig(kubeconfigs[identity], pki_dir, server, identity)
        realnode.cni_config(node)
        node.containerd_root.mkdir(parents=True, exist_ok=True)
        containerd = start("containerd", realnode.containerd_cmd(node), None)
        realnode.wait_containerd(node, containerd)
        realnode.import_images(node)
        start("kubelet", realnode.kubelet_cmd(self.bins, node, pki_dir, kubeconfigs["kubelet-client"],
                                               node_ports), urls["kubelet"])
        nodes.wait_for_condition(kubectl_, "--for=condition=Ready", f"node/{realnode.NODE_NAME}", timeout=120)
        start("kube-proxy", realnode.kube_proxy_cmd(self.bins, node, kubeconfigs["kube-proxy"], node_ports),
              urls["kube-proxy"])
        start("coredns", realnode.coredns_cmd(self.bins, node, self.layout.kubeconfig, node_ports),
              urls["coredns"])
        kubectl_("apply", "-f", "-", input=json.dumps(realnode.storage_manifests(node)))
        log.info("real node %s Ready", realnode.NODE_NAME)

    @staticmethod
    def _wait_default_service_account(kubectl_: nodes.Kubectl, timeout_s: float = 60) -> None:
        """The ServiceAccount controller creating `default` proves controllers can act."""
        deadline = time.monotonic() + timeout_s
        while kubectl_("get", "serviceaccount", "default", "-n", "default", check=False) == "":
            if time.monotonic() > deadline:
                raise ClusterError("the default ServiceAccount never appeared: see "
                                   "kube-controller-manager.log")
            time.sleep(0.3)
