"""Restart one component of a running local cluster in place, and start again any that exited.

A restart keeps the component's command line, ports and data (etcd's data directory), as an
upgrade or a crash of that one process does on a real control plane: clients see their
connections refused, then the same server back. A real control plane's components are restarted
by a supervisor (the kubelet for static pods, systemd) when they exit; kube-scheduler, for one,
exits on purpose when its cache disagrees with the API server, which an API server restart can
cause. `revive` plays that supervisor: it starts again each component whose process is gone.
"""
from __future__ import annotations

import logging
import time

from . import components as comp
from . import procs, realnode
from .cluster import COMMANDS, ClusterError, LocalCluster

log = logging.getLogger(__name__)

# kube-apiserver stops listening at once on SIGTERM but may hold its open watches for long; past
# this it is killed, as an orchestrator's shutdown grace would.
GRACE_S = 5.0
SETTLE_S = 60.0
START_ATTEMPTS = 3


def restart(cluster: LocalCluster, name: str, down_seconds: float = 0.0) -> float:
    """Stop `name` (SIGTERM, as an upgrade does), keep it down `down_seconds`, start it again;
    return the seconds from its start until it answered healthy. Returns once every component
    is healthy again (reviving any that exited meanwhile)."""
    if name not in COMMANDS:
        raise ClusterError(f"cannot restart {name}: restartable are " + ", ".join(COMMANDS))
    with cluster._locked():
        old = next((p for p in cluster.processes() if p.name == name), None)
        if old is None:
            raise ClusterError(f"{name} does not run in the cluster in {cluster.layout.root}")
        procs.stop(old, grace_s=GRACE_S)
        time.sleep(down_seconds)
        took = _start_again(cluster, name)
    settle(cluster)
    return took


def revive(cluster: LocalCluster) -> list[str]:
    """Start again each restartable component whose process has exited; their names."""
    with cluster._locked():
        dead = [p.name for p in cluster.processes() if p.name in COMMANDS and not p.alive()]
        for name in dead:
            log.warning("%s had exited; starting it again", name)
            _start_again(cluster, name)
    return dead


def settle(cluster: LocalCluster, timeout_s: float = SETTLE_S) -> list[str]:
    """Wait until every component is healthy, reviving those that exit meanwhile; the revived."""
    deadline, revived = time.monotonic() + timeout_s, []
    while not cluster.healthy():
        revived += revive(cluster)
        if time.monotonic() > deadline:
            raise ClusterError(f"not every component is healthy again: {cluster.health()}")
        time.sleep(0.2)
    return revived


def _start_again(cluster: LocalCluster, name: str) -> float:
    """Start `name` with the command line `up` gave it and record the new process; the caller
    holds the cluster's lock. The process it replaces may still hold its port or data directory
    for a moment after it is gone from /proc's view (a loaded machine): a start that exits at once
    is tried again."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_once(cluster, name)
        except RuntimeError as error:
            if attempt == START_ATTEMPTS or "exited with" not in str(error):
                raise
            log.warning("%s exited at start (attempt %d); starting it again", name, attempt)
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _start_once(cluster: LocalCluster, name: str) -> float:
    state = cluster._load() or {}
    ports = comp.Ports(**state["ports"])
    node_ports = realnode.NodePorts(**state["node_ports"]) if state.get("node_ports") else None
    proc, popen = procs.start(name, COMMANDS[name](cluster.bins, cluster.layout, ports), cluster.layout.logs)
    cluster._save(ports, [proc if p.name == name else p for p in cluster.processes()], node_ports)
    url = comp.health_urls(ports)[name]
    return procs.wait_healthy(proc, popen, url,
                              procs.client_context(cluster.layout.pki) if url.startswith("https") else None)
