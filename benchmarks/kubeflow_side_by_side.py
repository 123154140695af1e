"""torchyard against the Kubeflow training-operator v1.9.2, side by side on one control plane.

Each round starts one operator out of cluster, in a fresh namespace, behind its own request
counter (apicount.py), and creates a burst of N jobs of three pods as fast as one client can:
TrainingJobs of 1 parameter server + 2 workers for torchyard, PyTorchJobs of Master 1 + Worker 2
for Kubeflow, the latter as shipped (20 requests/s, 1 thread) and tuned (`--kube-api-qps=1000
--kube-api-burst=2000 --controller-threads=8`). Rounds are interleaved so both see the same
machine. The pods land on kwok nodes added for the run (tainted, so nothing else lands there)
and removed after it. Each round ends with the direct-API floor (skip it with --no-floor): one
client creating the same Services and pods itself, one after another, as fast as it can.

    make cluster-up
    .venv/bin/python benchmarks/kubeflow_side_by_side.py [--jobs 200] [--rounds 1]

Kubeflow needs its binary (hack/build-control-plane.sh --bench builds it into the cache). Out of
cluster it waits for its webhook certificate files on disk: they are copied from the Secret its
cert rotator fills. Its ValidatingWebhookConfiguration exists but lists no webhook: the API server
cannot reach an out-of-cluster webhook by its Service name, so admission is not on its path
(torchyard's checks run in the API server, as CEL rules, on every create).

Prints figures per operator and the ratios; with each round, its requests by verb and resource,
their answers by status code (a pod create answered 409 met a pod already there) and the latency
of each verb, p50 and p95, as the counter saw it; the CPU seconds of every process on the machine
in the burst; and how fast the operator's own endpoints answered during it (its health endpoint,
and torchyard's progress endpoint). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import apicount
import kwoknodes
from common import default_kubeconfig, free_port
from kubernetes import client, config, watch

from torchyard.api.trainingjob import parse_training_job
from torchyard.builders.pods import build_pods, build_service
from torchyard.progress import job_token
from torchyard.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TY = ("torchyard.dev", "v1alpha1", "trainingjobs")
KF = ("kubeflow.org", "v1", "pytorchjobs")
TUNED = ["--kube-api-qps=1000", "--kube-api-burst=2000", "--controller-threads=8"]
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # where Kubeflow's cert rotator looks
SETTLE_SECONDS = 5.0  # from every job Running to the idle window (--settle)
PROGRESS_KEY = uuid.uuid4().hex  # torchyard's progress key for the run: the prober signs its reports
PROBE_SECONDS = 0.1  # how often the prober asks each endpoint during the burst
KF_SECRET, KF_WEBHOOK = "training-operator-webhook-cert", "validator.training-operator.kubeflow.org"


def placement() -> dict:
    return {"nodeSelector": {kwoknodes.NODE_LABEL: "true"},
            "tolerations": [{"key": kwoknodes.NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}]}


def training_job(name: str) -> dict:
    role = {"replicas": 1, **placement()}
    return {"apiVersion": f"{TY[0]}/{TY[1]}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"strategy": "ParameterServer", "parameterServer": role, "worker": {**role, "replicas": 2},
                     "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}}}}


def pytorch_job(name: str) -> dict:
    def replicas(n: int) -> dict:
        return {"replicas": n, "restartPolicy": "OnFailure", "template": {"spec": {
            "containers": [{"name": "pytorch", "image": "torchyard-trainer:local",
                            "command": ["python", "-m", "torchyard_trainer"]}], **placement()}}}
    return {"apiVersion": f"{KF[0]}/{KF[1]}", "kind": "PyTorchJob", "metadata": {"name": name},
            "spec": {"pytorchReplicaSpecs": {"Master": replicas(1), "Worker": replicas(2)}}}


def ty_running(job: dict) -> bool:
    return (job.get("status") or {}).get("phase") == "Running"


def kf_running(job: dict) -> bool:
    return any(c.get("type") == "Running" and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class Operator:
    """One operator process under test: how to start it, when it is ready, what it counted."""

    def __init__(self, label: str, kind: tuple, make_job, running, argv_extra=()):
        self.label, self.kind, self.make_job, self.running = label, kind, make_job, running
        self.argv_extra = list(argv_extra)

    def start(self, namespace: str, kubeconfig: str, core) -> subprocess.Popen:
        self.port = free_port()
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        if self.kind == TY:
            env["TORCHYARD_PROGRESS_KEY"] = PROGRESS_KEY
            argv = [sys.executable, "-m", "torchyard.cli", "operator", "-n", namespace, "--http-host",
                    "127.0.0.1", "--http-port", str(self.port), "--log-level", "WARNING"]
            return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.probe = free_port()
        argv = [str(kubeflow_binary()), "--enable-scheme=pytorchjob", f"--namespace={namespace}",
                f"--metrics-bind-address=127.0.0.1:{self.port}",
                f"--health-probe-bind-address=127.0.0.1:{self.probe}",
                f"--webhook-server-port={free_port()}", "--zap-log-level=error", *self.argv_extra]
        proc = subprocess.Popen(argv, env={**env, "MY_POD_NAMESPACE": namespace},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        copy_certs_when_issued(core, namespace, proc)
        return proc

    def ready(self) -> bool:
        text = http_get(f"http://127.0.0.1:{self.port}/{'healthz' if self.kind == TY else 'metrics'}")
        if self.kind == TY or text is None:
            return text is not None
        return 'controller_runtime_reconcile_total{controller="pytorchjob-controller"' in text

    def passes(self) -> float:
        """Passes that read and decided (Kubeflow: every reconcile it counts)."""
        return self._metric('torchyard_reconcile_duration_seconds_count{kind="TrainingJob"' if self.kind == TY
                            else 'controller_runtime_reconcile_total{controller="pytorchjob-controller"')

    def waits(self) -> float:
        """torchyard's passes that ended at once, its own writes not yet all in the watch (Kubeflow
        counts none such: its reconciles that wait on expectations are in its passes)."""
        return self._metric('torchyard_reconcile_waits_total{kind="TrainingJob"') if self.kind == TY else 0.0

    def _metric(self, prefix: str) -> float:
        text = http_get(f"http://127.0.0.1:{self.port}/metrics") or ""
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def kubeflow_binary() -> Path:
    version = dict(line.split("=", 1) for line in (REPO / "hack" / "versions.env").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))["KUBEFLOW_TRAINING_OPERATOR_VERSION"].strip()
    version = os.environ.get("KUBEFLOW_TRAINING_OPERATOR_VERSION", version)
    cache = Path(os.environ.get("TORCHYARD_CACHE", Path.home() / ".cache" / "torchyard"))
    return cache / "bin" / f"kubeflow-training-operator-{version}" / "training-operator"


def kubeflow_manifests() -> Path:
    return kubeflow_binary().parent / "manifests"


def copy_certs_when_issued(core, namespace: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Write the serving certificate its rotator put in the Secret where the rotator waits for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        data = core.read_namespaced_secret(KF_SECRET, namespace).data or {}
        if data.get("tls.crt") and data.get("tls.key"):
            CERT_DIR.mkdir(parents=True, exist_ok=True)
            for key in ("tls.crt", "tls.key"):
                (CERT_DIR / key).write_bytes(__import__("base64").b64decode(data[key]))
            return
        time.sleep(0.2)
    raise RuntimeError("Kubeflow's cert rotator did not fill its Secret")


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


class Sampler(threading.Thread):
    """Peak RSS of a process, sampled every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.peak = max(self.peak, rss_mib(self.pid))


class Prober(threading.Thread):
    """The operator's own endpoints during the burst: its health endpoint every PROBE_SECONDS
    (torchyard's /healthz; Kubeflow's health probe), and for torchyard, every tenth time, a
    progress report for the first job, signed as its pods' reports are, once that job exists (a
    trainer reports every few seconds; each report is a status write). Records each answer's
    latency and its HTTP status; a request that gets no answer in 2 s is counted as failed."""

    def __init__(self, op: "Operator", namespace: str, first_job: dict):
        super().__init__(daemon=True)
        self.op, self.namespace, self.first_job = op, namespace, first_job
        self.latency: dict[str, list[float]] = {}
        self.failed: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        health = (f"http://127.0.0.1:{self.op.port}/healthz" if self.op.kind == TY
                  else f"http://127.0.0.1:{self.op.probe}/healthz")
        step = tick = 0
        while not self.stopped.wait(PROBE_SECONDS):
            tick += 1
            self._time("health", urllib.request.Request(health))
            uid = self.first_job.get("uid")
            if self.op.kind == TY and uid and tick % 10 == 0:
                step += 1
                token = job_token(PROGRESS_KEY.encode(), self.namespace, "job-0", uid)
                self._time("progress report", urllib.request.Request(
                    f"http://127.0.0.1:{self.op.port}/v1/progress/{self.namespace}/job-0", method="POST",
                    data=json.dumps({"step": step, "totalSteps": 1000000}).encode(),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}))

    def _time(self, label: str, request: urllib.request.Request) -> None:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                response.read()
                code = response.status
        except urllib.error.HTTPError as exc:  # an answer all the same (404: the job not yet seen)
            code = exc.code
        except OSError:
            self.failed[label] = self.failed.get(label, 0) + 1
            return
        self.latency.setdefault(label, []).append(1000 * (time.monotonic() - start))
        self.codes[f"{label} {code}"] = self.codes.get(f"{label} {code}", 0) + 1


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller", "kwok")


def control_plane_pids() -> dict[str, int]:
    """The local control plane's processes on this host, by name (none when it runs elsewhere)."""
    pids = {}
    for entry in Path("/proc").iterdir():
        try:
            name = (entry / "comm").read_text().strip() if entry.name.isdigit() else ""
        except OSError:
            continue
        if name in CONTROL_PLANE:
            pids.setdefault(name, int(entry.name))
    return pids


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process, and of the whole machine (busy time, all cores)."""
    seconds = {}
    for name, pid in pids.items():
        try:
            seconds[name] = cpu_seconds(pid)
        except OSError:
            pass
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    seconds["machine"] = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return seconds


class Observer:
    """Watches the namespace's pods and jobs; records when each job first has all pods Running
    and when its status first says Running."""

    def __init__(self, namespace: str, op: Operator, jobs: int):
        self.namespace, self.op, self.jobs = namespace, op, jobs
        self.pods_running: dict[str, set] = {}
        self.pods_at: dict[str, float] = {}
        self.status_at: dict[str, float] = {}
        self.stop = threading.Event()

    def start(self) -> None:
        for target in (self._pods, self._jobs):
            threading.Thread(target=self._forever, args=(target,), daemon=True).start()

    def _forever(self, target) -> None:
        while not self.stop.is_set():
            try:
                target()
            except Exception:  # a watch that ends or breaks is opened again
                time.sleep(0.2)

    def _pods(self) -> None:
        for event in watch.Watch().stream(client.CoreV1Api().list_namespaced_pod, self.namespace,
                                          timeout_seconds=60):
            pod = event["object"]
            owner = (pod.metadata.owner_references or [None])[0]
            if owner is None or pod.status.phase != "Running":
                continue
            names = self.pods_running.setdefault(owner.name, set())
            names.add(pod.metadata.name)
            if len(names) == 3 and owner.name not in self.pods_at:
                self.pods_at[owner.name] = time.monotonic()

    def _jobs(self) -> None:
        group, version, plural = self.op.kind
        for event in watch.Watch().stream(client.CustomObjectsApi().list_namespaced_custom_object, group,
                                          version, self.namespace, plural, timeout_seconds=60):
            job = event["object"]
            name = job["metadata"]["name"]
            if self.op.running(job) and name not in self.status_at:
                self.status_at[name] = time.monotonic()

    def done(self) -> bool:
        return len(self.pods_at) == self.jobs and len(self.status_at) == self.jobs


def one_round(op: Operator, jobs: int, kubeconfig: str, core, settle: float = SETTLE_SECONDS) -> dict:
    namespace = f"bench-sbs-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    counter_port = free_port()
    counter = subprocess.Popen([sys.executable, str(Path(__file__).with_name("apicount.py")),
                                "--kubeconfig", kubeconfig, "--port", str(counter_port)],
                               stderr=subprocess.DEVNULL)
    counted = Path(tempfile.mkdtemp(prefix="sbs-")) / "kubeconfig"
    counted.write_text(apicount.kubeconfig_for(counter_port))
    if op.kind == KF:
        core.create_namespaced_secret(namespace, {"metadata": {"name": KF_SECRET}})
    proc = None
    try:
        wait(lambda: http_get(f"http://127.0.0.1:{counter_port}/__counts") is not None, 30)
        proc = op.start(namespace, str(counted), core)
        wait(op.ready, 120)
        return measure(op, proc, namespace, jobs, counter_port, settle, counter.pid)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        counter.terminate()
        counter.wait(10)
        shutil.rmtree(counted.parent, ignore_errors=True)
        core.delete_namespace(namespace)
        wait(lambda: not namespace_exists(core, namespace), 600)


def measure(op: Operator, proc, namespace: str, jobs: int, counter_port: int, settle: float,
            counter_pid: int) -> dict:
    custom = client.CustomObjectsApi()
    sampler = Sampler(proc.pid)
    sampler.start()
    observer = Observer(namespace, op, jobs)
    observer.start()
    first_job: dict = {}
    prober = Prober(op, namespace, first_job)
    prober.start()
    pids = {"operator": proc.pid, "counter": counter_pid, "client": os.getpid(), **control_plane_pids()}
    cpu0, requests0, stats0 = cpu_seconds(proc.pid), counts(counter_port), stats(counter_port)
    processes0 = cpu_by_process(pids)
    created_at = {}
    start = time.monotonic()
    for i in range(jobs):
        name = f"job-{i}"
        made = custom.create_namespaced_custom_object(*op.kind[:2], namespace, op.kind[2], op.make_job(name))
        created_at[name] = time.monotonic()
        first_job.setdefault("uid", made["metadata"]["uid"])
    created = time.monotonic() - start
    wait(observer.done, 1200)
    prober.stopped.set()
    busy = {"created": created, "pods": max(observer.pods_at.values()) - start, "status": max(observer.status_at.values()) - start,
            "cpu": cpu_seconds(proc.pid) - cpu0, "requests": diff(counts(counter_port), requests0),
            "processes": diff(cpu_by_process(pids), processes0),
            "passes": op.passes() / jobs, "waits": op.waits() / jobs, **burst_stats(stats(counter_port), stats0),
            "probes": dict(prober.latency), "probes_failed": dict(prober.failed), "probe_codes": dict(prober.codes)}
    per_job = sorted(observer.status_at[n] - created_at[n] for n in created_at)
    time.sleep(settle)  # let the last status writes and their echoes settle
    cpu1, requests1 = cpu_seconds(proc.pid), counts(counter_port)
    time.sleep(10)
    idle_requests = diff(counts(counter_port), requests1)
    sampler.stopped.set()
    observer.stop.set()
    return {**busy, "load": os.getloadavg()[0], "p50": statistics.median(per_job), "p95": per_job[int(0.95 * (len(per_job) - 1))],
            "rss": sampler.peak, "idle_cpu": cpu_seconds(proc.pid) - cpu1,
            "idle_requests": sum(v for k, v in idle_requests.items() if not k.startswith("watch "))}


def floor_round(jobs: int, core) -> dict:
    """The direct-API floor: one client creates the Service and pods of every job itself, one
    request after another as fast as it can (answers not turned into models), then waits until
    all pods are Running: the least the control plane needs for what the operators create."""
    namespace = f"bench-floor-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        running: set[str] = set()
        done = threading.Event()
        threading.Thread(target=_count_running, args=(namespace, 3 * jobs, running, done), daemon=True).start()
        pids = {"client": os.getpid(), **control_plane_pids()}
        processes0 = cpu_by_process(pids)
        start = time.monotonic()
        for i in range(jobs):
            obj = {**training_job(f"job-{i}"), "metadata": {"name": f"job-{i}", "namespace": namespace,
                                                            "uid": str(uuid.uuid4())}}
            job = parse_training_job(obj)
            for manifest in [build_service(job), *build_pods(job, attempt=0, settings=Settings())]:
                manifest["metadata"].pop("ownerReferences", None)  # no TrainingJob exists to own them
                create = core.create_namespaced_service if manifest["kind"] == "Service" else core.create_namespaced_pod
                create(namespace, manifest, _preload_content=False).drain_conn()
        created = time.monotonic() - start
        if not done.wait(1200):
            raise TimeoutError(f"{len(running)} of {3 * jobs} pods Running after 1200 s")
        return {"created": created, "pods": time.monotonic() - start, "load": os.getloadavg()[0],
                "processes": diff(cpu_by_process(pids), processes0)}
    finally:
        core.delete_namespace(namespace)
        wait(lambda: not namespace_exists(core, namespace), 600)


def _count_running(namespace: str, target: int, running: set, done: threading.Event) -> None:
    while not done.is_set():
        try:
            for event in watch.Watch().stream(client.CoreV1Api().list_namespaced_pod, namespace, timeout_seconds=60):
                if event["object"].status.phase == "Running":
                    running.add(event["object"].metadata.name)
                if len(running) >= target:
                    done.set()
                    return
        except Exception:  # a watch that ends or breaks is opened again
            time.sleep(0.2)


def counts(port: int) -> dict:
    return json.loads(http_get(f"http://127.0.0.1:{port}/__counts") or "{}")


def stats(port: int) -> dict:
    """The counter's answers by status code and its latencies (ms) by verb and resource."""
    return json.loads(http_get(f"http://127.0.0.1:{port}/__stats") or '{"codes": {}, "latency": {}}')


def burst_stats(after: dict, before: dict) -> dict:
    """What came between two `stats`: answers by status code, and the latencies by verb."""
    latency: dict[str, list[float]] = {}
    for label, samples in after["latency"].items():
        latency.setdefault(label.split(" ", 1)[0], []).extend(samples[len(before["latency"].get(label, [])):])
    return {"codes": diff(after["codes"], before["codes"]), "latency": latency}


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"p50 {ordered[len(ordered) // 2]:.0f} / p95 {ordered[int(0.95 * (len(ordered) - 1))]:.0f} ms"
            f" (n={len(ordered)})") if ordered else "none"


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def by_verb(requests: dict) -> dict:
    verbs: dict[str, int] = {}
    for key, value in requests.items():
        verb = key.split(" ", 1)[0]
        verbs[verb] = verbs.get(verb, 0) + value
    return dict(sorted(verbs.items()))


def namespace_exists(core, name: str) -> bool:
    try:
        core.read_namespace(name)
        return True
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def wait(predicate, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not there after {timeout:.0f} s")
        time.sleep(interval)


def install_kubeflow(kubectl) -> None:
    """Kubeflow's PyTorchJob CRD, and the webhook configuration its cert rotator wants to fill."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f",
            str(kubeflow_manifests() / "crds" / "kubeflow.org_pytorchjobs.yaml"))
    wait(lambda: "Established" in established(kubectl, "crd/pytorchjobs.kubeflow.org"), 60)
    webhook = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
               "metadata": {"name": KF_WEBHOOK}, "webhooks": []}
    kubectl("apply", "-f", "-", input=json.dumps(webhook))


def established(kubectl, crd: str) -> str:
    """The CRD's true conditions; empty while it has none yet (the jsonpath filter then fails)."""
    try:
        return kubectl("get", crd, "-o", "jsonpath={.status.conditions[?(@.status=='True')].type}")
    except RuntimeError:
        return ""


def report(jobs: int, results: dict[str, list[dict]], floors: list[dict]) -> None:
    print(f"\n{jobs} jobs x 3 pods = {3 * jobs} pods per round; "
          f"{max(len(r) for r in results.values())} round(s) each, interleaved")
    rows = [("all jobs created (client), s", "created"), ("all pods Running, s", "pods"), ("all statuses Running, s", "status"), ("p50 per job, s", "p50"),
            ("p95 per job, s", "p95"), ("reconcile passes per job", "passes"),
            ("passes that waited, per job", "waits"), ("CPU seconds (burst)", "cpu"),
            ("peak RSS, MiB", "rss"), ("idle CPU s per 10 s", "idle_cpu"), ("idle requests per 10 s", "idle_requests"),
            ("load average (1 min) at end", "load")]
    labels = list(results)
    print(f"{'':28}" + "".join(f"{label:>26}" for label in labels))
    for title, key in rows:
        cells = [" / ".join(f"{r[key]:.2f}" for r in results[label]) for label in labels]
        print(f"{title:28}" + "".join(f"{c:>26}" for c in cells))
    for label in labels:
        for i, r in enumerate(results[label]):
            print(f"requests by verb, {label} round {i + 1}: {by_verb(r['requests'])}")
            print(f"    by verb and resource: {dict(sorted(r['requests'].items()))}")
            print(f"    answers by status code: {dict(sorted(r['codes'].items()))}")
            print("    CPU seconds in the burst by process: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["processes"].items(), key=lambda kv: -kv[1])))
            for verb, samples in sorted((v, s) for v, s in r["latency"].items() if s):
                print(f"    latency of {verb}: {percentiles(samples)}")
            for endpoint, samples in sorted(r["probes"].items()):
                print(f"    the operator's {endpoint} during the burst: {percentiles(samples)}, "
                      f"max {max(samples):.0f} ms; no answer {r['probes_failed'].get(endpoint, 0)}; answers "
                      + ", ".join(f"{k.rsplit(' ', 1)[1]}: {v}" for k, v in sorted(r["probe_codes"].items())
                                  if k.rsplit(" ", 1)[0] == endpoint))
    base = results[labels[0]]
    for floor in floors:
        print(f"direct-API floor: all {3 * jobs} pods Running in {floor['pods']:.2f} s "
              f"(client's creates {floor['created']:.2f} s; load {floor['load']:.2f}); CPU seconds by process: "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(floor["processes"].items(), key=lambda kv: -kv[1])))
    for label in labels:
        ratios = [r["pods"] / f["pods"] for r, f in zip(results[label], floors)]
        if ratios:
            print(f"ratio {label} / direct-API floor, all pods Running: " + " / ".join(f"{x:.2f}" for x in ratios))
    for label in labels[1:]:
        for key, title in (("pods", "all pods Running"), ("status", "all statuses Running"),
                           ("cpu", "CPU seconds"), ("rss", "peak RSS")):
            ratios = [b[key] / o[key] for b, o in zip(base, results[label]) if o[key]]
            print(f"ratio {labels[0]} / {label}, {title}: " + " / ".join(f"{x:.2f}" for x in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                        help="seconds from every job Running to the 10 s idle window (default 5)")
    parser.add_argument("--no-floor", action="store_true", help="skip the direct-API floor round")
    parser.add_argument("--only", action="append", choices=["torchyard", "shipped", "tuned"],
                        help="run only these operators (repeatable; default all three)")
    args = parser.parse_args()
    path = default_kubeconfig()
    config.load_kube_config(path)
    core = client.CoreV1Api()
    with_kubeflow = not args.only or bool({"shipped", "tuned"} & set(args.only))
    if with_kubeflow and not kubeflow_binary().exists():
        sys.exit(f"no Kubeflow training-operator at {kubeflow_binary()}: run hack/build-control-plane.sh --bench")
    kubectl = kwoknodes.Kubectl(str(REPO / ".venv" / "bin" / "kubectl"), path)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    if with_kubeflow:
        install_kubeflow(kubectl)
    operators = [Operator("torchyard", TY, training_job, ty_running),
                 Operator("kubeflow as shipped", KF, pytorch_job, kf_running),
                 Operator("kubeflow tuned", KF, pytorch_job, kf_running, TUNED)]
    if args.only:
        operators = [op for op in operators if op.label.split()[-1] in args.only]
    results: dict[str, list[dict]] = {op.label: [] for op in operators}
    floors: list[dict] = []
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr, flush=True)
    nodes = kwoknodes.add_nodes(core, pods=3 * args.jobs)
    try:
        for r in range(args.rounds):
            first = r % len(operators)  # each round starts with the next operator: no one always goes first
            for op in operators[first:] + operators[:first]:
                print(f"round: {op.label}, {args.jobs} jobs", file=sys.stderr, flush=True)
                results[op.label].append(one_round(op, args.jobs, path, core, args.settle))
            if not args.no_floor:
                print(f"round: direct-API floor, {args.jobs} jobs", file=sys.stderr, flush=True)
                floors.append(floor_round(args.jobs, core))
    finally:
        kwoknodes.remove_nodes(core, nodes)
        kubectl("delete", "validatingwebhookconfiguration", KF_WEBHOOK, "--ignore-not-found")
    report(args.jobs, results, floors)


if __name__ == "__main__":
    main()
