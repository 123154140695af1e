"""Command line: up, down, status, kubeconfig, which."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .cluster import ClusterError, LocalCluster
from .config import Binaries, default_state_dir, versions


def _up(cluster: LocalCluster, args) -> int:
    started = time.monotonic()
    fresh = cluster.up(build=not args.no_build)
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


def _which(cluster: LocalCluster, args) -> int:
    path = getattr(Binaries.for_versions(), args.tool.replace("-", "_"))
    print(path)
    return 0 if Path(path).exists() else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="local-cluster",
                                description="A local Kubernetes control plane with kwok nodes.")
    p.add_argument("--dir", type=Path, default=None,
                   help="state directory (default $TORCHYARD_CLUSTER_DIR or ~/.cache/torchyard/cluster)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (no-op when a healthy one runs)")
    up.add_argument("--no-build", action="store_true", help="fail instead of building missing binaries")
    up.set_defaults(run=_up)
    sub.add_parser("down", help="stop the processes this script started; remove the state").set_defaults(
        run=lambda c, a: c.down() or 0)
    sub.add_parser("status", help="health of each component").set_defaults(run=_status)
    sub.add_parser("kubeconfig", help="print the admin kubeconfig's path").set_defaults(
        run=lambda c, a: print(c.layout.kubeconfig) or 0)
    sub.add_parser("versions", help="print the pinned component versions").set_defaults(
        run=lambda c, a: print("\n".join(f"{k}={v}" for k, v in versions().items())) or 0)
    which = sub.add_parser("which", help="print the cached path of a binary (e.g. helm)")
    which.add_argument("tool", choices=["etcd", "kube-apiserver", "kube-controller-manager",
                                        "kube-scheduler", "kwok", "helm"])
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
