"""What the benchmarks that use a cluster share: where the cluster is, and a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_kubeconfig() -> str:
    """$KUBECONFIG, else the local control plane's (make cluster-up)."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    out = subprocess.run([sys.executable, str(ROOT / "hack" / "local-cluster.py"), "kubeconfig"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
