"""Soak: many TrainingJobs on kwok nodes while faults hit them at random, then every job is judged.

N jobs (two workers each) run under the operator while, for a bounded time, a fault injector
deletes pods by hand, makes ranks fail (a user error, or a stop on SIGTERM), takes a node NotReady
for a while, SIGKILLs the operator, and restarts kube-apiserver in place (at least once; a
supervisor starts again any component that exits meanwhile, as the kubelet would). Then every
job is finished (its workers exit 0) and the script checks what its policy predicts: every job
Succeeded, each user failure counted once in `restarts`, each injected infrastructure fault
counted in `infrastructureRestarts`, no pod orphaned or beyond the job's slots, and the operator's
memory at the start and the end.

    make cluster-up
    .venv/bin/python benchmarks/soak.py [--jobs 100] [--fault-seconds 120] [--seed N] [--no-node-faults]
                                        [--no-apiserver-restarts]

Prints the faults injected and the outcome table; exits 1 if any job is in a wrong state.
Node faults act on the local cluster's kwok nodes and API server restarts on its control plane (a
cluster of hack/local-cluster.py): run it where no one else tests.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import ROOT, default_kubeconfig, free_port
from kubernetes import client, config

from torchyard.kube.client import Kube  # its clients time out instead of hanging on a dropped connection

sys.path.insert(0, str(ROOT / "tests" / "integration"))
from harness import faults  # noqa: E402  the same fault helpers as the integration tests
from harness.control_plane import ControlPlane  # noqa: E402

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"
WORKERS, BACKOFF = 2, 3
INFRA_FAULTS_PER_JOB = 5  # the operator fails a job after 10 infrastructure restarts; node faults add some
WEIGHTS = {"delete": 4, "user": 3, "sigterm": 3, "operator": 1, "node": 1, "apiserver": 1}
NODE_DOWN_SECONDS = 20


def job_object(name: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"strategy": "AllReduce", "worker": {"replicas": WORKERS},
                     "runPolicy": {"backoffLimit": BACKOFF},
                     "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}}}}


class Operator:
    def __init__(self, namespace: str, kubeconfig: str, log: Path):
        self.namespace, self.kubeconfig, self.log, self.proc = namespace, kubeconfig, log, None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "TORCHYARD_NODE_FAILURE_SECONDS": "10"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "torchyard.cli", "operator", "-n", self.namespace,
                                          "--http-host", "127.0.0.1", "--http-port", str(free_port())],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


class Soak:
    def __init__(self, core, custom, namespace: str, operator: Operator, rng: random.Random, node_faults: bool,
                 plane: ControlPlane | None = None):
        self.core, self.custom, self.ns, self.operator, self.rng = core, custom, namespace, operator, rng
        self.plane = plane
        self.kinds = (["delete", "user", "sigterm", "operator"] + (["node"] if node_faults else [])
                      + (["apiserver"] if plane else []))
        self.apiserver_back: list[float] = []  # seconds each restarted API server took to answer
        self.injected = collections.Counter()
        self.user = collections.Counter()  # job -> user failures injected
        self.infra = collections.Counter()  # job -> infrastructure faults injected on a running gang
        self.busy: dict[str, int] = {}  # job -> the attempt it must reach before the next fault

    def jobs(self) -> dict[str, dict]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]
        return {j["metadata"]["name"]: j.get("status") or {} for j in items}

    def pods(self, job: str | None = None) -> list:
        selector = f"torchyard.dev/job-name={job}" if job else "torchyard.dev/job-name"
        return self.core.list_namespaced_pod(self.ns, label_selector=selector).items

    def ready_jobs(self) -> list[str]:
        """Running jobs whose last fault has been handled (a new attempt running)."""
        out = []
        for name, st in self.jobs().items():
            if st.get("phase") == "Running" and st.get("attempt", 0) >= self.busy.get(name, 0):
                out.append(name)
        return out

    def inject(self) -> None:
        kind = self.rng.choices(self.kinds, [WEIGHTS[k] for k in self.kinds])[0]
        self.inject_kind(kind)

    def inject_kind(self, kind: str) -> None:
        try:
            self._inject(kind)
        except Exception as exc:  # the world moved under the injector (a pod replaced meanwhile)
            self.injected["skipped"] += 1
            print(f"  {kind}: not injected: {type(exc).__name__}: {str(exc)[:200]}", flush=True)

    def _inject(self, kind: str) -> None:
        if kind == "operator":
            self.operator.kill()
            self.operator.start()
        elif kind == "node":
            self.node_fault()
        elif kind == "apiserver":
            self.apiserver_back.append(self.plane.restart("kube-apiserver"))
        else:
            ready = self.ready_jobs()
            if not ready:
                return
            job = self.rng.choice(ready)
            if kind == "user" and self.user[job] >= BACKOFF:
                return
            if kind != "user" and self.infra[job] >= INFRA_FAULTS_PER_JOB:
                return
            self.pod_fault(kind, job)
        self.injected[kind] += 1

    def pod_fault(self, kind: str, job: str) -> None:
        st = self.jobs()[job]
        pod = f"{job}-worker-{self.rng.randrange(WORKERS)}"
        if kind == "delete":
            self.core.delete_namespaced_pod(pod, self.ns, grace_period_seconds=0)
        else:
            faults.terminate_container(self.core, self.ns, pod, exit_code=1 if kind == "user" else 143)
        (self.user if kind == "user" else self.infra)[job] += 1
        self.busy[job] = st.get("attempt", 0) + 1

    def node_fault(self) -> None:
        kwok = {n.metadata.name for n in self.core.list_node(label_selector=faults.MANAGED_LABEL).items}
        nodes = sorted({p.spec.node_name for p in self.pods() if p.spec.node_name in kwok})
        if not nodes:
            return
        node = self.rng.choice(nodes)
        faults.node_not_ready(self.core, node)
        time.sleep(NODE_DOWN_SECONDS)
        faults.node_ready(self.core, node)

    def finish_all(self, timeout: float) -> None:
        """Every worker of every Running job exits 0, until every job has finished."""
        deadline = time.monotonic() + timeout
        result = json.dumps({"metrics": {"accuracy": 0.9}, "metric": "accuracy"})
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if all(st.get("phase") in ("Succeeded", "Failed") for st in jobs.values()):
                return
            for name, st in jobs.items():
                if st.get("phase") != "Running":
                    continue
                for pod in self.pods(name):
                    if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp:
                        try:
                            faults.terminate_container(self.core, self.ns, pod.metadata.name, exit_code=0,
                                                       message=result, timeout=10)
                        except Exception:  # the gang restarted under it: the next round retries
                            pass
            time.sleep(1)
        raise TimeoutError("jobs did not all finish in time")

    def judge(self) -> list[tuple]:
        rows = []
        for name, st in sorted(self.jobs().items()):
            pods = self.pods(name)
            names = sorted(p.metadata.name for p in pods)
            extra = [n for n in names if n not in {f"{name}-worker-{i}" for i in range(WORKERS)}]
            problems = []
            if st.get("phase") != "Succeeded":
                problems.append(f"phase {st.get('phase')}")
            if st.get("restarts", 0) != self.user[name]:
                problems.append(f"restarts {st.get('restarts', 0)} != {self.user[name]} user failures")
            if st.get("infrastructureRestarts", 0) < self.infra[name]:
                problems.append(f"infrastructureRestarts {st.get('infrastructureRestarts', 0)} < {self.infra[name]}")
            if extra:
                problems.append(f"pods beyond its slots: {extra}")
            rows.append((name, st.get("phase"), st.get("restarts", 0), self.user[name],
                         st.get("infrastructureRestarts", 0), self.infra[name], "; ".join(problems)))
        return rows

    def orphans(self) -> list[str]:
        jobs = set(self.jobs())
        return [p.metadata.name for p in self.pods() if p.metadata.labels["torchyard.dev/job-name"] not in jobs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--fault-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-node-faults", dest="node_faults", action="store_false",
                        help="leave the shared cluster's nodes alone")
    parser.add_argument("--no-apiserver-restarts", dest="apiserver", action="store_false",
                        help="leave the control plane alone (a cluster not made by hack/local-cluster.py)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    path = default_kubeconfig()
    config.load_kube_config(path)
    kube = Kube()
    core, custom = client.CoreV1Api(kube.api), client.CustomObjectsApi(kube.api)
    subprocess.run([str(ROOT / ".venv" / "bin" / "kubectl"), "--kubeconfig", path, "apply", "--server-side",
                    "--force-conflicts", "-f", str(ROOT / "crds")], check=True, capture_output=True)
    subprocess.run([str(ROOT / ".venv" / "bin" / "kubectl"), "--kubeconfig", path, "wait", "--timeout=60s",
                    "--for=condition=Established", f"crd/{PLURAL}.{GROUP}"], check=True, capture_output=True)
    namespace = f"soak-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    log = Path(f"/tmp/{namespace}-operator.log")
    operator = Operator(namespace, path, log)
    operator.start()
    plane = ControlPlane(path) if args.apiserver else None
    soak = Soak(core, custom, namespace, operator, random.Random(seed), args.node_faults, plane)
    try:
        for i in range(args.jobs):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job_object(f"job-{i}"))
        _wait(lambda: len(soak.ready_jobs()) == args.jobs, 600)
        rss_start = operator.rss_mib()
        with plane.supervised() if plane else contextlib.nullcontext():
            inject_for(soak, args.fault_seconds)
            rss_faults = operator.rss_mib()
            _wait(lambda: len(soak.ready_jobs()) == args.jobs, 600)
            soak.finish_all(600)
            rows, orphans, rss_end = soak.judge(), soak.orphans(), operator.rss_mib()
    finally:
        operator.kill()
        core.delete_namespace(namespace)
    return report(args, seed, soak, rows, orphans, (rss_start, rss_faults, rss_end), log)


def inject_for(soak: Soak, seconds: float) -> None:
    """Faults at random for `seconds`; an API server restart at least once, halfway at the latest."""
    start = time.monotonic()
    while time.monotonic() < start + seconds:
        if soak.plane and not soak.injected["apiserver"] and time.monotonic() > start + seconds / 2:
            soak.inject_kind("apiserver")
        else:
            soak.inject()
        time.sleep(soak.rng.uniform(0.2, 1.0))


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the jobs did not get there in time")
        time.sleep(1)


def report(args, seed, soak: Soak, rows, orphans, rss, log: Path) -> int:
    wrong = [r for r in rows if r[-1]]
    print(f"soak: {args.jobs} jobs x {WORKERS} workers, faults for {args.fault_seconds:.0f} s, seed {seed}")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.injected.items())))
    if soak.apiserver_back:
        back = ", ".join(f"{s:.1f}" for s in soak.apiserver_back)
        revived = ", ".join(soak.plane.revived) or "none"
        print(f"kube-apiserver restarts: {len(soak.apiserver_back)} (answering again {back} s after each start; "
              f"components that exited and were started again: {revived})")
    states = collections.Counter(r[1] for r in rows)
    print("outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items(), key=lambda kv: str(kv[0]))))
    print(f"restarts: user {sum(r[2] for r in rows)} (injected {sum(r[3] for r in rows)}), "
          f"infrastructure {sum(r[4] for r in rows)} (injected on running gangs {sum(r[5] for r in rows)}; "
          f"node faults and operator kills add more)")
    print(f"orphaned pods: {len(orphans)}; jobs in a wrong state: {len(wrong)}")
    print(f"operator memory: {rss[0]:.0f} MiB before the faults, {rss[1]:.0f} after them, {rss[2]:.0f} at the end")
    for row in wrong[:20]:
        print(f"  {row[0]}: {row[-1]}")
    print(f"operator log: {log}")
    return 1 if wrong or orphans else 0


if __name__ == "__main__":
    sys.exit(main())
