"""The local cluster's control plane as a test drives it: restart kube-apiserver or etcd in place,
with a supervisor that starts again any component that exits meanwhile (as the kubelet or systemd
does on a real control plane; kube-scheduler exits on purpose when an API server restart leaves
its cache disagreeing with the server).

Only a cluster of hack/local-cluster.py can be driven: its kubeconfig lies in its state directory.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

from .cluster import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "hack"))

from localcluster import restart as _restart  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402

SUPERVISE_SECONDS = 1.0


class ControlPlane:
    def __init__(self, kubeconfig: str | Path):
        state_dir = Path(kubeconfig).resolve().parent
        if not (state_dir / "state.json").exists():
            raise AssertionError(f"{kubeconfig} is not a local cluster's: its control plane cannot be restarted")
        self.local = LocalCluster(state_dir)
        self.revived: list[str] = []  # components the supervisor had to start again

    def restart(self, component: str, down_seconds: float = 0.0) -> float:
        """Restart `component` in place; returns once every component is healthy again (the
        seconds it took to answer healthy after its start)."""
        return _restart.restart(self.local, component, down_seconds)

    def fresh_controllers(self) -> None:
        """Restart kube-controller-manager and kube-scheduler. After an API server restart they
        recover on their own, but the controller-manager's informers back off for a minute or two
        (a Deployment made then waits ~90 s for its pod); the tests that follow should not."""
        for component in ("kube-controller-manager", "kube-scheduler"):
            self.restart(component)

    def settle(self) -> None:
        """Every component healthy (any that exited started again)."""
        self.revived += _restart.settle(self.local)

    @contextlib.contextmanager
    def supervised(self):
        """While inside, a component that exits is started again within about a second."""
        stop = threading.Event()

        def watch():
            while not stop.wait(SUPERVISE_SECONDS):
                try:
                    self.revived += _restart.revive(self.local)
                except Exception:  # a start that failed is tried again next round
                    pass

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=30)
            self.settle()
