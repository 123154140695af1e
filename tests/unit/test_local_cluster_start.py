"""Starting the local cluster survives the one race it cannot avoid: a port chosen free and taken
by another process before the component binds it. Any other failure is reported at once."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from localcluster import cluster as cluster_mod  # noqa: E402


def _cluster(tmp_path, monkeypatch, failures: list[Exception]) -> tuple[cluster_mod.LocalCluster, list]:
    local = cluster_mod.LocalCluster(tmp_path / "cluster")
    attempts = []

    def start_all(real_node, kwok):
        attempts.append(local.layout.state_file.exists())
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(local, "_ensure_binaries", lambda build: None)
    monkeypatch.setattr(local, "_start_all", start_all)
    monkeypatch.setattr(local, "_stop_all", lambda: None)
    monkeypatch.setattr(local, "healthy", lambda: False)
    return local, attempts


def test_a_port_taken_before_binding_starts_the_cluster_again(tmp_path, monkeypatch):
    taken = RuntimeError("kwok exited with 1:\nlisten tcp 127.0.0.1:4321: bind: address already in use")
    local, attempts = _cluster(tmp_path, monkeypatch, [taken])
    assert local.up(build=False) is True
    assert attempts == [True, True]  # the second start has a fresh, marked state directory


def test_a_second_port_race_is_reported(tmp_path, monkeypatch):
    taken = RuntimeError("bind: address already in use")
    local, attempts = _cluster(tmp_path, monkeypatch, [taken, taken])
    with pytest.raises(RuntimeError, match="address already in use"):
        local.up(build=False)
    assert len(attempts) == 2


def test_any_other_failure_is_reported_without_a_retry(tmp_path, monkeypatch):
    local, attempts = _cluster(tmp_path, monkeypatch, [RuntimeError("etcd exited with 2")])
    with pytest.raises(RuntimeError, match="etcd exited"):
        local.up(build=False)
    assert len(attempts) == 1


@pytest.fixture
def sleeping(tmp_path):
    """A cluster whose recorded etcd is a running `sleep 60`."""
    import json
    import subprocess

    popen = subprocess.Popen(["sleep", "60"])
    cmdline = Path(f"/proc/{popen.pid}/cmdline")
    deadline = time.monotonic() + 10
    while not cmdline.read_bytes().startswith(b"sleep\0") and time.monotonic() < deadline:
        time.sleep(0.01)  # forked, not yet exec'd: its command line is still this interpreter's
    local = cluster_mod.LocalCluster(tmp_path / "cluster")
    local.layout.root.mkdir(parents=True)
    ports = dict(etcd=1, etcd_peer=2, apiserver=3, controller_manager=4, scheduler=5, kwok=6)
    process = {"name": "etcd", "pid": popen.pid, "exe": "sleep", "log": str(tmp_path / "etcd.log")}
    local.layout.state_file.write_text(json.dumps({"ports": ports, "processes": [process]}))
    yield local
    popen.kill()
    popen.wait()


def test_a_cluster_started_with_this_checkouts_flags_is_current(sleeping, monkeypatch):
    monkeypatch.setitem(cluster_mod.COMMANDS, "etcd", lambda bins, layout, ports: ["sleep", "60"])
    assert sleeping.outdated() == []


def test_a_cluster_started_with_other_flags_is_outdated(sleeping, monkeypatch):
    # A checkout that adds a flag (a feature gate, an admission plugin) must not reuse a cluster
    # started without it: tests would run against flags the code does not expect.
    monkeypatch.setitem(cluster_mod.COMMANDS, "etcd", lambda bins, layout, ports: ["sleep", "60", "--v=2"])
    assert sleeping.outdated() == ["etcd"]
