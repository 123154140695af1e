"""The changes a real node makes to the host, and how `down` undoes every one of them.

A real kubelet, kube-proxy and the CNI bridge plugin change the machine they run on: a bridge and
a route, iptables chains, kernel settings, mounts of network namespaces and volumes, cgroups. The
cluster records what the host looked like before anything started (`HostRecord`, written to the
state directory first), and `undo` puts back exactly that, whatever the node did meanwhile.

Nothing here listens on or sends to any address: the bridge carries the pod network the cluster
creates itself (NODE_CIDR), and the route keeps Service addresses on that bridge.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BRIDGE = "tycni0"
NODE_CIDR = "10.245.0.0/24"  # the real node's pods; kwok's fake pod IPs use 10.244.0.0/16
NODE_IP = "10.245.0.1"       # the bridge's address: the node's IP, its kubelet, DNS and apiserver
# Kernel settings a kubelet, kube-proxy or the bridge plugin may change; restored on `down`.
SYSCTLS = [
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
]
# Chains made by kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY), kube-proxy (KUBE-*) and the CNI
# portmap plugin (CNI-*).
CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


@dataclass
class HostRecord:
    """What the host looked like before the node started."""

    sysctls: dict[str, str] = field(default_factory=dict)
    bridge_existed: bool = False

    @classmethod
    def take(cls) -> "HostRecord":
        values = {}
        for name in SYSCTLS:
            try:
                values[name] = (Path("/proc/sys") / name).read_text().strip()
            except OSError:
                pass
        return cls(sysctls=values, bridge_existed=Path(f"/sys/class/net/{BRIDGE}").exists())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "HostRecord | None":
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def create_bridge(service_cidr: str) -> None:
    """The pod bridge with the node's address, and the Service range routed onto it (without the
    route, a Service address that has no DNAT rule yet would follow the default route away)."""
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        raise RuntimeError(f"a network interface named {BRIDGE} already exists: another real node "
                           "runs on this machine (stop it with `hack/local-cluster.py down`)")
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{NODE_IP}/{NODE_CIDR.split('/')[1]}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    run("ip", "route", "add", service_cidr, "dev", BRIDGE, "src", NODE_IP)


def undo(record: HostRecord | None, state_dir: Path) -> None:
    """Put the host back as `record` found it; each step is safe to repeat."""
    unmount_under(state_dir)
    remove_cgroups("kubepods")
    remove_chains()
    if record is None or not record.bridge_existed:
        run("ip", "link", "del", BRIDGE, check=False)  # its address and routes go with it
    for name, value in (record.sysctls if record else {}).items():
        try:
            current = (Path("/proc/sys") / name).read_text().strip()
            if current != value:
                (Path("/proc/sys") / name).write_text(value)
                log.info("restored %s = %s", name.replace("/", "."), value)
        except OSError as err:
            log.warning("could not restore %s: %s", name, err)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    root_s = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == root_s or point.startswith(root_s + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    if not root.exists():
        return
    for point in mounts_under(root):
        if run("umount", point, check=False).returncode != 0:
            run("umount", "-l", point, check=False)


def remove_cgroups(name: str) -> None:
    """Remove the kubelet's cgroup tree (`kubepods`) from every cgroup v1 hierarchy (and v2)."""
    base = Path("/sys/fs/cgroup")
    roots = [p / name for p in base.iterdir() if p.is_dir()] + [base / name]
    for top in roots:
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: w[0].count("/"), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _rules(binary: str, table: str) -> list[str]:
    result = run(binary, "-w", "-t", table, "-S", check=False)
    return result.stdout.splitlines() if result.returncode == 0 else []


def remove_chains() -> None:
    """Delete every rule that jumps to a KUBE-/CNI- chain, then flush and delete those chains."""
    owned = re.compile(r"^(KUBE-|CNI-)")
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            rules = _rules(binary, table)
            chains = [line.split()[1] for line in rules
                      if line.startswith("-N ") and owned.match(line.split()[1])]
            for line in rules:
                words = shlex.split(line)
                if words[0] == "-A" and not owned.match(words[1]) and "-j" in words \
                        and owned.match(words[words.index("-j") + 1]):
                    run(binary, "-w", "-t", table, "-D", *words[1:], check=False)
            for chain in chains:
                run(binary, "-w", "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(binary, "-w", "-t", table, "-X", chain, check=False)


def snapshot() -> dict:
    """What a real node could leave behind, as plain data: network interfaces, routes, iptables
    chains, kernel settings, mounts and container shims. Two snapshots taken before `up` and
    after `down` must be equal (hack/e2e.sh compares them)."""
    chains = {}
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            chains[f"{binary}/{table}"] = sorted(line for line in _rules(binary, table)
                                                 if line.startswith(("-N", "-P", "-A")))
    mounts = sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    shims = sorted(p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                   and _cmd(p).startswith("containerd-shim"))
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0]
                        for line in run("ip", "-o", "link", "show").stdout.splitlines()),
        "routes": sorted(run("ip", "route", "show", "table", "all", check=False).stdout.splitlines()),
        "iptables": chains,
        "sysctls": HostRecord.take().sysctls,
        "mounts": mounts,
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods*")),
        "shims": len(shims),
    }


def _cmd(proc: Path) -> str:
    try:
        return Path((proc / "cmdline").read_bytes().split(b"\0")[0].decode()).name
    except (OSError, IndexError, UnicodeDecodeError):
        return ""
