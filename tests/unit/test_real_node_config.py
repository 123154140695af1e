"""The real node's configuration keeps to the network rule: everything it serves listens on
loopback or on the node address of the pod network the cluster creates, pods resolve cluster names
only, and the kubelet accepts no anonymous caller. Checked on the generated files, before anything
runs (tests/e2e runs the node itself)."""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from localcluster import components, host, realnode  # noqa: E402

ALLOWED = {"127.0.0.1", host.NODE_IP}


@pytest.fixture
def node(tmp_path, monkeypatch) -> realnode.NodeLayout:
    monkeypatch.setenv("TORCHYARD_CACHE", str(tmp_path / "cache"))
    layout = realnode.NodeLayout(tmp_path / "node")
    layout.root.mkdir()
    return layout


PORTS = realnode.NodePorts(kubelet_healthz=1001, proxy_healthz=1002, proxy_metrics=1003,
                           dns_health=1004, dns_ready=1005)


def address(value: str) -> str:
    return value.rsplit(":", 1)[0] if ":" in value else value


def test_the_kubelet_listens_on_the_node_address_and_loopback_only(node, tmp_path):
    config = yaml.safe_load(realnode.kubelet_config(node, tmp_path / "pki", PORTS).read_text())
    assert config["address"] in ALLOWED and config["healthzBindAddress"] in ALLOWED
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authorization"]["mode"] == "Webhook"
    assert config["clusterDNS"] == [host.NODE_IP]
    # This machine's cgroup v1 host without systemd.
    assert config["cgroupDriver"] == "cgroupfs" and config["failCgroupV1"] is False


def test_pods_resolve_through_cluster_dns_only(node, tmp_path):
    config = yaml.safe_load(realnode.kubelet_config(node, tmp_path / "pki", PORTS).read_text())
    assert Path(config["resolvConf"]).read_text().split() == ["nameserver", host.NODE_IP]
    corefile = realnode.corefile(node, tmp_path / "kubeconfig", PORTS).read_text()
    assert "forward" not in corefile, "an upstream would send queries off the machine"
    binds = [line.split()[1:] for line in corefile.splitlines() if line.strip().startswith(("bind", "health", "ready"))]
    assert all(address(words[0]) in ALLOWED for words in binds)


def test_kube_proxy_binds_and_serves_node_ports_on_the_node_address_only(node, tmp_path):
    config = yaml.safe_load(realnode.kube_proxy_config(node, tmp_path / "kc", PORTS).read_text())
    assert {address(config[k]) for k in ("bindAddress", "healthzBindAddress", "metricsBindAddress")} <= ALLOWED
    assert config["nodePortAddresses"] == [f"{host.NODE_IP}/32"]
    assert config["conntrack"]["maxPerCore"] == 0, "the host's conntrack table is left alone"


def test_containerd_never_lowers_oom_score_and_uses_the_local_pause_image(node):
    text = realnode.containerd_config(node).read_text()
    assert "restrict_oom_score_adj = true" in text
    assert f'sandbox_image = "{realnode.PAUSE_IMAGE}"' in text
    assert str(node.socket) in text and "tcp" not in text


def test_pods_get_addresses_from_the_clusters_own_range_apart_from_kwoks(node):
    realnode.cni_config(node)
    conflist = json.loads((node.cni_conf / "10-torchyard.conflist").read_text())
    subnet = ipaddress.ip_network(conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    assert subnet == ipaddress.ip_network(host.NODE_CIDR)
    assert not subnet.overlaps(ipaddress.ip_network(components.POD_CIDR))
    assert not subnet.overlaps(ipaddress.ip_network(components.SERVICE_CIDR))
    assert conflist["plugins"][0]["ipMasq"] is False, "no masquerading: pod traffic never leaves the host"


def test_the_storage_class_offers_volumes_on_the_node_that_non_root_pods_can_write(node):
    items = realnode.storage_manifests(node)["items"]
    storage_class, volumes = items[0], items[1:]
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert len(volumes) == realnode.VOLUMES
    for volume in volumes:
        path = Path(volume["spec"]["hostPath"]["path"])
        assert path.is_dir() and path.stat().st_mode & 0o7777 == 0o1777
        assert path.is_relative_to(node.root)
        assert set(volume["spec"]["accessModes"]) == {"ReadWriteOnce", "ReadWriteMany"}


def test_mounts_under_lists_deepest_first(tmp_path, monkeypatch):
    lines = [f"1 2 0:1 / {tmp_path}/a rw - tmpfs tmpfs rw",
             f"3 1 0:2 / {tmp_path}/a/b/c rw - tmpfs tmpfs rw",
             "4 1 0:3 / /elsewhere rw - tmpfs tmpfs rw",
             f"5 1 0:4 / {tmp_path}/a/b rw - tmpfs tmpfs rw"]
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "\n".join(lines)
                        if str(self) == "/proc/self/mountinfo" else real_read(self, *a, **k))
    assert host.mounts_under(tmp_path / "a") == [f"{tmp_path}/a/b/c", f"{tmp_path}/a/b", f"{tmp_path}/a"]


def test_an_older_build_of_an_image_is_removed_from_the_node(node, monkeypatch):
    # Each trainer build is ~6 GB: the node's store must keep only the images now tagged.
    refs = [("docker.io/torchyard/trainer:local", "sha256:new"), ("sha256:trainer-id-new", "sha256:new"),
            ("sha256:trainer-id-old", "sha256:old"), ("docker.io/torchyard/pause:local", "sha256:p")]
    removed = []
    monkeypatch.setattr(realnode, "_image_refs", lambda layout: refs)
    monkeypatch.setattr(realnode, "ctr", lambda layout, *args, **kw: removed.extend(args))
    assert realnode.prune_images(node) == ["sha256:trainer-id-old"]
    assert removed == ["images", "rm", "--sync", "sha256:trainer-id-old"]
