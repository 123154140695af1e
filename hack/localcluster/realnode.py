"""One real node for the local cluster: containerd, kubelet, kube-proxy and a cluster DNS, run as
the cluster's own processes, so that the end-to-end tier runs real containers.

The node's IP is the pod bridge's gateway (host.NODE_IP): no loopback (a kubelet refuses it), no
other interface of the machine. Everything the node serves listens there or on 127.0.0.1. The
kubelet has a serving certificate and trusts client certificates from the cluster CA; the
apiserver talks to it with a client certificate of its own (no anonymous access).

Choices this machine forces, each also written in docs/development.md:
- containerd never asks runc for an oom_score_adj below its own (`restrict_oom_score_adj`): the
  machine's root lacks CAP_SYS_RESOURCE, and every sandbox would fail to start;
- cgroup v1 without systemd: the cgroupfs driver, and `failCgroupV1: false` for kubelet >= 1.35;
- no registry: images are imported from hack/build-images.sh's exports, pods never pull.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import host
from .config import Binaries, cache_dir

log = logging.getLogger(__name__)

NODE_NAME = "torchyard-node-0"
NODE_LABEL = "torchyard.dev/real-node"
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
PAUSE_IMAGE = "docker.io/torchyard/pause:local"
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip6tables", "ip")
# Volumes the tests can claim (a StorageClass with pre-made volumes on the node's disk).
STORAGE_CLASS = "torchyard-local"
VOLUMES = 12
VOLUME_SIZE = "2Gi"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a real node (empty when it can)."""
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    missing += [f"CNI plugin {p}" for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps things: its state in the cluster's directory, its image store in the
    cache (so images survive `down` and are imported once)."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return cache_dir() / "node" / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd"

    @property
    def socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def host_record(self) -> Path:
        return self.root / "host-record.json"


@dataclass(frozen=True)
class NodePorts:
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int
    dns_ready: int


def containerd_config(layout: NodeLayout) -> Path:
    config = f"""\
version = 2
root = "{layout.containerd_root}"
state = "{layout.containerd_state}"
[grpc]
  address = "{layout.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.cni_conf}"
"""
    path = layout.root / "containerd.toml"
    path.write_text(config)
    return path


def cni_config(layout: NodeLayout) -> None:
    layout.cni_conf.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "0.4.0", "name": "torchyard",
        "plugins": [
            {"type": "bridge", "bridge": host.BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(layout.root / "cni" / "ipam"),
                      "ranges": [[{"subnet": host.NODE_CIDR, "gateway": host.NODE_IP}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }
    (layout.cni_conf / "10-torchyard.conflist").write_text(json.dumps(conflist, indent=2))


def kubelet_config(layout: NodeLayout, pki: Path, ports: NodePorts) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": host.NODE_IP, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "podLogsDir": str(layout.root / "pod-logs"),
        "clusterDNS": [host.NODE_IP], "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(_resolv_conf(layout)),
        "failSwapOn": False, "maxPods": 40, "serializeImagePulls": False,
        # The images exist only in the node's store: never garbage-collect them, and never evict
        # pods because a shared disk looks full.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        # Leave the host's kernel settings alone; `down` restores them anyway.
        "protectKernelDefaults": False, "makeIPTablesUtilChains": True,
        "staticPodPath": "", "enableDebuggingHandlers": True,
    }
    path = layout.root / "kubelet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _resolv_conf(layout: NodeLayout) -> Path:
    """Pods resolve cluster names only: an upstream resolver would send queries off the machine."""
    path = layout.root / "resolv.conf"
    path.write_text(f"nameserver {host.NODE_IP}\n")
    return path


def kube_proxy_config(layout: NodeLayout, kubeconfig: Path, ports: NodePorts) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME, "bindAddress": host.NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "mode": "iptables", "clusterCIDR": host.NODE_CIDR,
        "nodePortAddresses": [f"{host.NODE_IP}/32"],
        # Leave conntrack's global settings as they are.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    path = layout.root / "kube-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def corefile(layout: NodeLayout, kubeconfig: Path, ports: NodePorts) -> Path:
    """Cluster names from the API; every other name gets NXDOMAIN at once. There is no upstream:
    a query never leaves the machine, and a name outside the cluster fails fast and plainly (an
    unanswered query would read as a temporary failure to the pod's resolver, which retries)."""
    text = f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {host.NODE_IP}
    errors
    health 127.0.0.1:{ports.dns_health}
    ready 127.0.0.1:{ports.dns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
}}
.:53 {{
    bind {host.NODE_IP}
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""
    path = layout.root / "Corefile"
    path.write_text(text)
    return path


# -- command lines ------------------------------------------------------------------------------
def containerd_cmd(layout: NodeLayout) -> list[str]:
    return [shutil.which("containerd"), f"--config={containerd_config(layout)}"]


def kubelet_cmd(bins: Binaries, layout: NodeLayout, pki: Path, kubeconfig: Path,
                ports: NodePorts) -> list[str]:
    return [str(bins.kubelet), f"--config={kubelet_config(layout, pki, ports)}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={layout.kubelet_dir}",
            f"--cert-dir={layout.kubelet_dir / 'pki'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={host.NODE_IP}", f"--node-labels={NODE_LABEL}=true", "--v=1"]


def kube_proxy_cmd(bins: Binaries, layout: NodeLayout, kubeconfig: Path, ports: NodePorts) -> list[str]:
    return [str(bins.kube_proxy), f"--config={kube_proxy_config(layout, kubeconfig, ports)}"]


def coredns_cmd(bins: Binaries, layout: NodeLayout, kubeconfig: Path, ports: NodePorts) -> list[str]:
    return [str(bins.coredns), "-conf", str(corefile(layout, kubeconfig, ports))]


def health_urls(ports: NodePorts) -> dict[str, str | None]:
    return {
        "containerd": None,  # alive and answering `ctr version` (see wait_containerd)
        "kubelet": f"http://127.0.0.1:{ports.kubelet_healthz}/healthz",
        "kube-proxy": f"http://127.0.0.1:{ports.proxy_healthz}/healthz",
        "coredns": f"http://127.0.0.1:{ports.dns_ready}/ready",
    }


# -- containerd -----------------------------------------------------------------------------------
def ctr(layout: NodeLayout, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["ctr", f"--address={layout.socket}", "--namespace=k8s.io", *args],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
    return result


def containerd_ready(layout: NodeLayout) -> bool:
    return layout.socket.exists() and ctr(layout, "version", check=False, timeout=10).returncode == 0


def import_images(layout: NodeLayout) -> list[str]:
    """Import each image hack/build-images.sh exported whose ID the node has not imported yet;
    return the names imported. Images the node no longer needs (older builds) are removed, so the
    node's store holds one copy of each. The pause image must be there: no pod starts without it."""
    exports = cache_dir() / "images"
    if not (exports / "pause.tar").exists():
        raise RuntimeError(f"no images in {exports}: build them first with `make images` "
                           "(hack/build-images.sh)")
    marker = layout.containerd_root / "imported.json"
    try:
        imported = _import_new(layout, exports, marker)
    except RuntimeError as error:
        # A node stopped in the middle of an import can leave layers without their parents; the
        # store is a cache, so start it over once.
        log.warning("importing failed (%s); removing the node's images and importing them again", error)
        refs = [ref for ref, _ in _image_refs(layout)]
        if refs:
            ctr(layout, "images", "rm", "--sync", *refs, check=False)
        marker.unlink(missing_ok=True)
        imported = _import_new(layout, exports, marker)
    prune_images(layout)
    return imported


def _import_new(layout: NodeLayout, exports: Path, marker: Path) -> list[str]:
    done = json.loads(marker.read_text()) if marker.exists() else {}
    imported = []
    for tar in sorted(exports.glob("*.tar")):
        image_id = (exports / f"{tar.stem}.id").read_text().strip()  # the image IDs it holds
        if done.get(tar.stem) == image_id and _has_image(layout, tar.stem):
            continue
        started = time.monotonic()
        ctr(layout, "images", "import", str(tar))
        done[tar.stem] = image_id
        marker.write_text(json.dumps(done, indent=2))
        log.info("imported %s into the node in %.0fs", tar.stem, time.monotonic() - started)
        imported.append(tar.stem)
    return imported


def _image_refs(layout: NodeLayout) -> list[tuple[str, str]]:
    """(reference, target digest) of every image in the node's store."""
    listing = ctr(layout, "images", "ls", check=False, timeout=60).stdout.decode().splitlines()
    return [(cols[0], cols[2]) for cols in (line.split() for line in listing[1:]) if len(cols) >= 3]


def prune_images(layout: NodeLayout) -> list[str]:
    """Remove every image reference whose target is not one of the current `torchyard/*:local`
    images (an older build, and the ID references the CRI plugin adds for it), so containerd can
    collect its layers; return the references removed."""
    refs = _image_refs(layout)
    current = {target for ref, target in refs if ref.startswith("docker.io/torchyard/") and ref.endswith(":local")}
    stale = [ref for ref, target in refs if target not in current]
    if stale:
        ctr(layout, "images", "rm", "--sync", *stale, check=False)
        log.info("removed %d image references of older builds from the node", len(stale))
    return stale


def _has_image(layout: NodeLayout, name: str) -> bool:
    return any(ref.startswith(f"docker.io/torchyard/{name}:") for ref, _ in _image_refs(layout))


def remove_containers(layout: NodeLayout) -> None:
    """Kill and delete every container of the node, so none outlives `down`."""
    if not containerd_ready(layout):
        return
    tasks = ctr(layout, "tasks", "ls", "-q", check=False, timeout=30).stdout.decode().split()
    for task in tasks:
        ctr(layout, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False, timeout=30)
    deadline = time.monotonic() + 20
    for task in tasks:
        while ctr(layout, "tasks", "delete", task, check=False, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
    for container in ctr(layout, "containers", "ls", "-q", check=False, timeout=30).stdout.decode().split():
        ctr(layout, "containers", "delete", container, check=False, timeout=30)


def storage_manifests(layout: NodeLayout) -> dict:
    """A StorageClass and pre-made volumes on the node's disk: the tests' claims bind to them, so a
    job's checkpoints and artifact outlive its pods and a model server can read them."""
    items = [{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
              "metadata": {"name": STORAGE_CLASS,
                           "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
              "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate",
              "reclaimPolicy": "Retain"}]
    for i in range(VOLUMES):
        path = layout.volumes / f"pv-{i}"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o1777)  # pods run as non-root users of their own choosing
        items.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"torchyard-local-{i}", "labels": {NODE_LABEL: "true"}},
            "spec": {"capacity": {"storage": VOLUME_SIZE},
                     "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                     "hostPath": {"path": str(path), "type": "Directory"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}},
        })
    return {"apiVersion": "v1", "kind": "List", "items": items}


def wait_containerd(layout: NodeLayout, proc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not containerd_ready(layout):
        if not proc.alive():
            raise RuntimeError(f"containerd exited: see {proc.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"containerd did not answer on {layout.socket}: see {proc.log}")
        time.sleep(0.3)


def stop_leftovers(layout: NodeLayout, bins: Binaries) -> None:
    """After the node's processes: the container shims of this node's containerd (each is its own
    process) and kube-proxy's rules (`kube-proxy --cleanup`, the documented way)."""
    address = str(layout.socket).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address in argv:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    if bins.kube_proxy.exists():
        subprocess.run([str(bins.kube_proxy), "--cleanup"], capture_output=True, timeout=60)
