#!/usr/bin/env python3
"""A local Kubernetes control plane for the integration tests: `up`, `down`, `status`.

    .venv/bin/python hack/local-cluster.py up      # or: make cluster-up
    export KUBECONFIG=$(.venv/bin/python hack/local-cluster.py kubeconfig)
    .venv/bin/python hack/local-cluster.py down    # or: make cluster-down

Run it with the project's virtualenv (it needs `cryptography` and PyYAML, and uses its kubectl).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
