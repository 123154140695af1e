"""Command lines of the control plane's components and the URLs that say they are ready.

Everything binds to 127.0.0.1 on ports chosen at start. No aggregated API is registered, so the
apiserver never dials a (fake) Service address. Admission webhooks are on (the API server's
defaults): a test that registers one serves it on loopback and points the webhook's `url` there,
with the local CA as its caBundle (pki.issue_loopback_serving).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Binaries

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"  # kwok hands out pod IPs from here; a /16 leaves room for benchmarks
KWOK_MANAGED_LABEL = "torchyard.dev/kwok-managed"
# kwok renews each node's Lease every quarter of this; the node lifecycle controller declares a
# node whose Lease is older than NODE_GRACE "Unknown" (NotReady), so a node that kwok stops
# managing goes NotReady in about NODE_GRACE rather than the default 50s.
NODE_LEASE_SECONDS = 20
NODE_GRACE = "20s"
# Kubernetes' own gang scheduling (alpha in 1.35, docs/gang-scheduling.md): the apiserver serves
# the Workload API and keeps a pod's spec.workloadRef; the scheduler's GangScheduling plugin
# binds a Workload's pods all together or not at all.
GANG_FEATURE_GATES = "--feature-gates=GenericWorkload=true,GangScheduling=true"
GANG_RUNTIME_CONFIG = "--runtime-config=scheduling.k8s.io/v1alpha1=true"


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    # Where the apiserver listens: loopback, or with a real node the node's address, so that its
    # pods reach it through the `kubernetes` Service.
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Layout:
    """Files of one cluster inside its state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


def _tls(layout: Layout) -> list[str]:
    return [f"--tls-cert-file={layout.pki / 'serving.crt'}",
            f"--tls-private-key-file={layout.pki / 'serving.key'}"]


def _as_client(layout: Layout) -> list[str]:
    kubeconfig = layout.kubeconfig
    return [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}"]


def etcd(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    client, peer = f"http://127.0.0.1:{ports.etcd}", f"http://127.0.0.1:{ports.etcd_peer}"
    return [str(bins.etcd), "--name=torchyard-local", f"--data-dir={layout.root / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=torchyard-local={peer}", "--unsafe-no-fsync=true", "--log-level=warn"]


def apiserver(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    pki = layout.pki
    if ports.host == "127.0.0.1":
        # A loopback advertise address is refused unless the `kubernetes` endpoints are left alone.
        where = ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
                 "--authorization-mode=RBAC"]
    else:
        # With a real node: the `kubernetes` Service points at the node's address, the kubelet is
        # called with a client certificate and checked against the CA, and the Node authorizer
        # and NodeRestriction confine the kubelet's own credentials.
        where = [f"--advertise-address={ports.host}", "--authorization-mode=Node,RBAC",
                 "--enable-admission-plugins=NodeRestriction",
                 f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                 f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                 f"--kubelet-certificate-authority={pki / 'ca.crt'}"]
    return [str(bins.kube_apiserver), f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
            f"--bind-address={ports.host}", f"--secure-port={ports.apiserver}", *where,
            *_tls(layout), f"--client-ca-file={pki / 'ca.crt'}", f"--cert-dir={pki}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Node addresses first: a node's hostname resolves nowhere on this machine.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            GANG_FEATURE_GATES, GANG_RUNTIME_CONFIG, "--profiling=false"]


def controller_manager(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    pki = layout.pki
    return [str(bins.kube_controller_manager), *_as_client(layout), *_tls(layout),
            "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
            "--leader-elect=false", "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--node-monitor-period=2s", f"--node-monitor-grace-period={NODE_GRACE}",
            "--profiling=false"]


def scheduler(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    return [str(bins.kube_scheduler), *_as_client(layout), *_tls(layout),
            "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}", "--leader-elect=false",
            GANG_FEATURE_GATES, "--profiling=false"]


def kwok(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    # An explicit config file, so a ~/.kwok/kwok.yaml on the machine cannot change behaviour. It
    # holds no KwokConfiguration: kwok defaults only a configuration it did not load from a file
    # (one with `options: {}` starts with zero workers and manages nothing).
    config = layout.root / "kwok.yaml"
    config.write_text("# no KwokConfiguration here: kwok's built-in defaults apply\n")
    return [str(bins.kwok), f"--kubeconfig={layout.kubeconfig}", f"--config={config}",
            f"--manage-nodes-with-label-selector={KWOK_MANAGED_LABEL}=true",
            "--node-ip=127.0.0.1", f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--server-address=127.0.0.1:{ports.kwok}", "--enable-crds=Stage", f"--cidr={POD_CIDR}"]


def health_urls(ports: Ports) -> dict[str, str]:
    return {
        "etcd": f"http://127.0.0.1:{ports.etcd}/readyz",
        "kube-apiserver": f"https://{ports.host}:{ports.apiserver}/readyz",
        "kube-controller-manager": f"https://127.0.0.1:{ports.controller_manager}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{ports.scheduler}/healthz",
        "kwok": f"http://127.0.0.1:{ports.kwok}/healthz",
    }
