"""The real Kueue controller (hack/build-control-plane.sh builds it from its Go module), run out of
cluster against the local control plane.

Its CRDs and webhook configurations are Kueue's own, from the copy of its module's config/ kept
beside the binary. The webhooks are served on a free loopback port with a certificate signed by
the local cluster's CA, and registered with a `url` there and that CA as caBundle (the local API
server calls admission webhooks). Only Kueue's own API group's webhooks are registered, and the
namespaced ones only for namespaces labelled NAMESPACE_LABEL, so nothing else on the cluster
(other tests' pods and jobs) ever waits on Kueue; they are removed when Kueue stops, and any left
by a run that was killed are removed before Kueue starts.
"""
from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .cluster import REPO_ROOT, Cluster, local_cluster
from .waits import wait_for

sys.path.insert(0, str(REPO_ROOT / "hack"))
from localcluster import pki  # noqa: E402  (the local cluster's own PKI and port helpers)
from localcluster.procs import free_port  # noqa: E402

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
NAMESPACE_LABEL = "torchyard.dev/kueue-test"  # namespaces whose Kueue objects Kueue's webhooks see
WEBHOOK_PREFIX = "torchyard-test-kueue-"
WEBHOOK_KINDS = {"MutatingWebhookConfiguration": "mutating", "ValidatingWebhookConfiguration": "validating"}
CLUSTER_SCOPED = {"clusterqueues", "resourceflavors", "cohorts", "workloadpriorityclasses", "topologies",
                  "admissionchecks", "multikueueclusters", "multikueueconfigs", "provisioningrequestconfigs"}
SYSTEM_NAMESPACE = "kueue-system"
# Without its internal certificate management Kueue reads its metrics serving certificate from this
# fixed path, where its Deployment mounts a Secret. Out of cluster the same certificate is put there
# in a private view of /etc (an overlay in a mount namespace of its own): nothing on the host changes.
METRICS_CERTS = "/etc/kueue/metrics/certs"
PRIVATE_ETC = """set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
mkdir -p "$(dirname "$2")" && cp -r "$3" "$2"
shift 3
exec "$@"
"""


def binary() -> Path:
    """The Kueue controller built into the cache, or a failure that says how to build it."""
    found = local_cluster("which", "kueue")
    path = Path(found.stdout.strip())
    if found.returncode != 0 or not path.exists():
        raise AssertionError(f"the Kueue controller is not built ({path}): run hack/build-control-plane.sh")
    return path


def install_crds(cluster: Cluster, config_dir: Path) -> None:
    """Kueue's CRDs as its module ships them (no conversion webhook: only v1beta2 is used here)."""
    bases = sorted((config_dir / "crd" / "bases").glob("*.yaml"))
    for path in bases:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for path in bases:
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


def webhook_configurations(manifests: str, url: str, ca_bundle: bytes) -> list[dict]:
    """Kueue's webhook configurations for its own API group, pointed at `url` on loopback."""
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in WEBHOOK_KINDS:
            continue
        hooks = [_loopback(hook, url, ca_bundle) for hook in doc["webhooks"]
                 if all(rule["apiGroups"] == [GROUP] for rule in hook["rules"])]
        out.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                    "metadata": {"name": WEBHOOK_PREFIX + WEBHOOK_KINDS[doc["kind"]]}, "webhooks": hooks})
    return out


def _loopback(hook: dict, url: str, ca_bundle: bytes) -> dict:
    hook = dict(hook)
    path = hook["clientConfig"]["service"]["path"]
    hook["clientConfig"] = {"url": url + path, "caBundle": base64.b64encode(ca_bundle).decode()}
    resources = {r for rule in hook["rules"] for r in rule["resources"]}
    if not resources <= CLUSTER_SCOPED:
        hook["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: "true"}}
    hook["timeoutSeconds"] = 10
    return hook


def remove_webhooks(cluster: Cluster) -> None:
    for kind, suffix in WEBHOOK_KINDS.items():
        cluster.kubectl("delete", kind.lower(), WEBHOOK_PREFIX + suffix, "--ignore-not-found", "--wait=false")


class KueueController:
    """Kueue's controller manager as a subprocess with the admin's kubeconfig; see the module doc."""

    def __init__(self, cluster: Cluster, work_dir: Path):
        self.cluster, self.work_dir = cluster, work_dir
        self.binary = binary()
        self.config_dir = self.binary.parent / "config"
        self.pki_dir = Path(cluster.kubeconfig).parent / "pki"
        if not (self.pki_dir / "ca.key").exists():
            raise AssertionError(f"the real Kueue needs the local control plane's CA ({self.pki_dir}): its "
                                 "API server must call Kueue's webhooks on loopback")
        self.log_path = work_dir / "kueue.log"
        self.webhook_port, self.health_port, self.metrics_port = free_port(), free_port(), free_port()
        self._popen: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "KueueController":
        remove_webhooks(self.cluster)  # a killed run's, which would refuse every Kueue object
        install_crds(self.cluster, self.config_dir)
        self.cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
        certs = pki.issue_loopback_serving(self.pki_dir, self.work_dir / "kueue-certs", "kueue-webhook")
        config = self.work_dir / "kueue-config.yaml"
        config.write_text(yaml.safe_dump(self._config(certs)))
        env = {**os.environ, "KUBECONFIG": self.cluster.kubeconfig}
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(self._argv(config, certs), stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env, cwd=self.work_dir)
        wait_for(self._ready, f"Kueue's readyz at 127.0.0.1:{self.health_port}", timeout, interval=0.5)
        url = f"https://127.0.0.1:{self.webhook_port}"
        ca = (self.pki_dir / "ca.crt").read_bytes()
        manifests = (self.config_dir / "webhook" / "manifests.yaml").read_text()
        for doc in webhook_configurations(manifests, url, ca):
            self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        wait_for(lambda: self._webhook_answers(ca), f"Kueue's webhook server at {url}", timeout)
        return self

    def _argv(self, config: Path, certs: Path) -> list[str]:
        """Kueue in a mount namespace whose /etc holds its metrics certificate (see METRICS_CERTS);
        a non-root user gets the namespace through a user namespace."""
        overlay = self.work_dir / "etc-overlay"
        for part in ("upper", "work"):
            (overlay / part).mkdir(parents=True, exist_ok=True)
        userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        return ["unshare", *userns, "--mount", "--propagation", "private", "--", "sh", "-c", PRIVATE_ETC, "sh",
                str(overlay), METRICS_CERTS, str(certs), str(self.binary), f"--config={config}",
                "--zap-log-level=2"]

    def _config(self, certs: Path) -> dict:
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": SYSTEM_NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.metrics_port}"},
            "webhook": {"port": self.webhook_port, "host": "127.0.0.1", "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            # A queued TrainingJob is the operator's Workload; Kueue needs no job integration for
            # it. batch/job is the smallest set Kueue starts with.
            "integrations": {"frameworks": ["batch/job"]},
            "featureGates": {"VisibilityOnDemand": False},
        }

    def _ready(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            raise AssertionError(f"kueue exited with {self._popen.returncode}:\n{self.logs()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _webhook_answers(self, ca: bytes) -> bool:
        context = ssl.create_default_context(cadata=ca.decode())
        try:
            with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return True
        except OSError:
            return False

    def stop(self, grace: float = 10) -> None:
        """Its webhooks first (nothing may call a stopped server), then the process."""
        remove_webhooks(self.cluster)
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
