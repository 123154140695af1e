"""Command line: up, down, status, kubeconfig, which."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import host, realnode, restart
from .cluster import COMMANDS, ClusterError, LocalCluster
from .config import Binaries, cache_dir, default_state_dir, versions


def _up(cluster: LocalCluster, args) -> int:
    started = time.monotonic()
    fresh = cluster.up(build=not args.no_build, real_node=args.real_node, kwok=not args.no_kwok)
    if fresh:
        print(f"cluster up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.layout.kubeconfig}")
    return 0


def _status(cluster: LocalCluster, args) -> int:
    health = cluster.health()
    if not health:
        print(f"no cluster in {cluster.layout.root}")
        return 1
    by_name = {p.name: p for p in cluster.processes()}
    for name, ok in health.items():
        pid = by_name[name].pid if name in by_name else "-"
        print(f"{name:24} {'healthy' if ok else 'DOWN':8} pid {pid}")
    print(f"kubeconfig: {cluster.layout.kubeconfig}")
    return 0 if all(health.values()) else 1


def _restart(cluster: LocalCluster, args) -> int:
    took = restart.restart(cluster, args.component, args.down_seconds)
    print(f"{args.component} restarted, healthy {took:.1f}s after its start")
    return 0


def _revive(cluster: LocalCluster, args) -> int:
    revived = restart.revive(cluster)
    print("started again: " + (", ".join(revived) or "none (all running)"))
    return 0


def _import_images(cluster: LocalCluster, args) -> int:
    if not cluster.has_real_node():
        print(f"no real node runs in {cluster.layout.root}", file=sys.stderr)
        return 1
    imported = realnode.import_images(cluster.node)
    print("imported: " + (", ".join(imported) or "nothing new"))
    return 0


# Binaries the tests run beside the cluster (hack/build-control-plane.sh builds them).
TEST_TOOLS = {
    "kueue": lambda: cache_dir() / "bin" / f"kueue-{versions()['KUEUE_VERSION']}" / "kueue",
    "prometheus": lambda: cache_dir() / "bin" / f"prometheus-{versions()['PROMETHEUS_VERSION']}" / "prometheus",
    "promtool": lambda: cache_dir() / "bin" / f"prometheus-{versions()['PROMETHEUS_VERSION']}" / "promtool",
}


def _which(cluster: LocalCluster, args) -> int:
    if args.tool in TEST_TOOLS:  # built by the default build, not needed to start a cluster
        path = TEST_TOOLS[args.tool]()
    else:
        path = getattr(Binaries.for_versions(), args.tool.replace("-", "_"))
    print(path)
    return 0 if Path(path).exists() else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="local-cluster",
                                description="A local Kubernetes control plane with kwok nodes, "
                                            "and optionally one real node.")
    p.add_argument("--dir", type=Path, default=None,
                   help="state directory (default $TORCHYARD_CLUSTER_DIR or ~/.cache/torchyard/cluster)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (no-op when a healthy one runs)")
    up.add_argument("--no-build", action="store_true", help="fail instead of building missing binaries")
    up.add_argument("--real-node", action="store_true",
                    help="add one real node (containerd, kubelet, kube-proxy, DNS) that runs the images "
                         "`make images` built; needs root and the distribution's containerd")
    up.add_argument("--no-kwok", action="store_true", help="no kwok nodes (with --real-node: only the real one)")
    up.set_defaults(run=_up)
    sub.add_parser("down", help="stop the processes this script started; remove the state").set_defaults(
        run=lambda c, a: c.down() or 0)
    sub.add_parser("status", help="health of each component").set_defaults(run=_status)
    again = sub.add_parser("restart", help="stop one control-plane component and start it again with "
                                           "the same ports and data (as an upgrade does)")
    again.add_argument("component", choices=list(COMMANDS))
    again.add_argument("--down-seconds", type=float, default=0.0, help="how long it stays down")
    again.set_defaults(run=_restart)
    sub.add_parser("revive", help="start again each component whose process exited (a supervisor's "
                                  "job)").set_defaults(run=_revive)
    sub.add_parser("kubeconfig", help="print the admin kubeconfig's path").set_defaults(
        run=lambda c, a: print(c.layout.kubeconfig) or 0)
    sub.add_parser("versions", help="print the pinned component versions").set_defaults(
        run=lambda c, a: print("\n".join(f"{k}={v}" for k, v in versions().items())) or 0)
    sub.add_parser("import-images", help="import images `make images` built into the running real node").set_defaults(
        run=_import_images)
    sub.add_parser("host-snapshot", help="print what a real node could leave on the host (JSON)").set_defaults(
        run=lambda c, a: print(json.dumps(host.snapshot(), indent=1, sort_keys=True)) or 0)
    which = sub.add_parser("which", help="print the cached path of a binary (e.g. helm)")
    which.add_argument("tool", choices=["etcd", "kube-apiserver", "kube-controller-manager",
                                        "kube-scheduler", "kwok", "helm", "kubelet", "kube-proxy",
                                        "coredns", *TEST_TOOLS])
    which.set_defaults(run=_which)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[local-cluster] %(message)s")
    args = parser().parse_args(argv)
    cluster = LocalCluster((args.dir or default_state_dir()).expanduser().resolve())
    try:
        return args.run(cluster, args)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
