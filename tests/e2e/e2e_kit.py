"""What the end-to-end tests do and read, as a user would with kubectl: apply the examples, wait
for status, read pod logs, and run small clients in pods of the cluster (the trainer image has
Python, urllib and scikit-learn's bundled digits).

Every object a test creates goes through a `Resources`, which deletes it again afterwards and
waits until its pods are gone, so the next test finds the node's two CPUs free. Objects of the
same name left over by an earlier, interrupted run are removed before they are created again.
"""
from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Callable

import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "torchyard.dev", "v1alpha1"
PLURALS = {"TrainingJob": "trainingjobs", "ModelDeployment": "modeldeployments", "ModelVersion": "modelversions"}
JOB_LABEL = "torchyard.dev/job-name"
DEPLOYMENT_LABEL = "torchyard.dev/model-deployment"
TRAINING_TIMEOUT = 600  # seconds; training takes one to three minutes on two busy CPUs
TERMINAL = ("Succeeded", "Failed")


FIGURES: list[str] = []  # what the tests measured; conftest.py repeats them at the end of the run


def figure(line: str) -> None:
    """Print a measured figure (failover, restart, accuracy) and keep it for the run's summary, so
    the figures reach the log without `pytest -s`."""
    print(line)
    FIGURES.append(line)


# -- waiting -------------------------------------------------------------------------------------

def wait(probe: Callable, what: str, timeout: float, interval: float = 2.0, explain: Callable[[], str] | None = None):
    """probe() until it returns something true; fail naming `what` (and explain()) after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def read_or_none(read: Callable):
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# -- the examples --------------------------------------------------------------------------------

def example(file: str, kind: str | None = None) -> dict:
    """The one document (of `kind`, if the file has several) of examples/<file>."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / file).read_text()) if d]
    found = [d for d in docs if kind is None or d["kind"] == kind]
    assert len(found) == 1, f"examples/{file} has {len(found)} documents of kind {kind}"
    return copy.deepcopy(found[0])


def with_claim(obj: dict, claim: str) -> dict:
    """The one change a test may make to a TrainingJob or ModelDeployment example besides images."""
    obj["spec"]["storage"] = {**(obj["spec"].get("storage") or {}), "claimName": claim}
    return obj


# -- objects a test creates ----------------------------------------------------------------------

class Resources:
    """Creates objects in the watched namespace and deletes them (and waits for their pods) at the end."""

    def __init__(self, installed):
        self.installed = installed
        self.ns = installed.namespace
        self.created: list[tuple[str, str]] = []
        self.models: set[str] = set()

    def create(self, obj: dict) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        remove(self.installed, kind, name)  # a leftover of an interrupted run
        self.created.append((kind, name))
        if kind in PLURALS:
            return self.installed.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURALS[kind], obj)
        if kind == "PersistentVolumeClaim":
            return self.installed.core.create_namespaced_persistent_volume_claim(self.ns, obj)
        if kind == "Pod":
            return self.installed.core.create_namespaced_pod(self.ns, obj)
        if kind == "ResourceQuota":
            return self.installed.core.create_namespaced_resource_quota(self.ns, obj)
        if kind == "Secret":
            return self.installed.core.create_namespaced_secret(self.ns, obj)
        raise AssertionError(f"the kit does not create {kind}")

    def claim(self, name: str, mode: str = "ReadWriteOnce") -> str:
        """A claim of the cluster's default class; one node, so ReadWriteOnce serves every pod (and
        kind's local-path provisioner offers no other mode)."""
        self.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                     "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}}})
        return name

    def model(self, name: str) -> str:
        """Delete this model's ModelVersions now (left over) and at the end (they have no owner)."""
        remove_model_versions(self.installed, name)
        self.models.add(name)
        return name

    def delete(self, kind: str, name: str) -> None:
        remove(self.installed, kind, name)
        if (kind, name) in self.created:
            self.created.remove((kind, name))

    def cleanup(self) -> None:
        for kind, name in reversed(self.created):
            remove(self.installed, kind, name)
        for model in self.models:
            remove_model_versions(self.installed, model)
        self.created.clear()


def remove(installed, kind: str, name: str, timeout: float = 180) -> None:
    """Delete an object if it exists and wait until it and the pods it owns are gone."""
    ns = installed.namespace
    if kind in PLURALS:
        read = lambda: installed.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name)  # noqa: E731
        delete = lambda: installed.custom.delete_namespaced_custom_object(  # noqa: E731
            GROUP, VERSION, ns, PLURALS[kind], name, propagation_policy="Background")
    elif kind == "PersistentVolumeClaim":
        read = lambda: installed.core.read_namespaced_persistent_volume_claim(name, ns)  # noqa: E731
        delete = lambda: installed.core.delete_namespaced_persistent_volume_claim(name, ns)  # noqa: E731
    elif kind == "Pod":
        read = lambda: installed.core.read_namespaced_pod(name, ns)  # noqa: E731
        delete = lambda: installed.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)  # noqa: E731
    elif kind == "ResourceQuota":
        read = lambda: installed.core.read_namespaced_resource_quota(name, ns)  # noqa: E731
        delete = lambda: installed.core.delete_namespaced_resource_quota(name, ns)  # noqa: E731
    elif kind == "Secret":
        read = lambda: installed.core.read_namespaced_secret(name, ns)  # noqa: E731
        delete = lambda: installed.core.delete_namespaced_secret(name, ns)  # noqa: E731
    else:
        raise AssertionError(f"the kit does not delete {kind}")
    found = read_or_none(read)
    if found is not None:
        read_or_none(delete)
        wait(lambda: read_or_none(read) is None, f"{kind} {name} deleted", timeout)
    if kind == "PersistentVolumeClaim" and found is not None and found.spec.volume_name:
        release_volume(installed, found.spec.volume_name)
    selector = {"TrainingJob": JOB_LABEL, "ModelDeployment": DEPLOYMENT_LABEL}.get(kind)
    if selector:
        wait(lambda: not installed.core.list_namespaced_pod(ns, label_selector=f"{selector}={name}").items,
             f"the pods of {kind} {name} gone", timeout)


def release_volume(installed, name: str) -> None:
    """A pre-made volume kept (Retain) after its claim went is made Available again, as it was
    before the test claimed it; what the test wrote stays in run directories no later run reuses."""
    volume = read_or_none(lambda: installed.core.read_persistent_volume(name))
    if volume is not None and volume.spec.persistent_volume_reclaim_policy == "Retain":
        wait(lambda: installed.core.read_persistent_volume(name).status.phase == "Released", f"volume {name} released", 30,
             interval=0.5)
        installed.core.patch_persistent_volume(name, {"spec": {"claimRef": None}})


def remove_model_versions(installed, model: str) -> None:
    for mv in list_model_versions(installed, model):
        remove(installed, "ModelVersion", mv["metadata"]["name"])


def list_model_versions(installed, model: str) -> list[dict]:
    items = installed.custom.list_namespaced_custom_object(GROUP, VERSION, installed.namespace, "modelversions")["items"]
    return [i for i in items if (i.get("spec") or {}).get("modelName") == model]


# -- training jobs -------------------------------------------------------------------------------

def get(installed, kind: str, name: str) -> dict:
    return installed.custom.get_namespaced_custom_object(GROUP, VERSION, installed.namespace, PLURALS[kind], name)


def job_status(installed, name: str) -> dict:
    return get(installed, "TrainingJob", name).get("status") or {}


def job_pods(installed, name: str) -> list:
    pods = installed.core.list_namespaced_pod(installed.namespace, label_selector=f"{JOB_LABEL}={name}").items
    return sorted(pods, key=lambda p: p.metadata.name)


def pod_log(installed, pod: str, tail: int | None = None, previous: bool = False) -> str:
    try:
        log = installed.core.read_namespaced_pod_log(pod, installed.namespace, tail_lines=tail, previous=previous)
        return log or ""  # the client answers None for an empty log
    except ApiException as exc:
        return f"(no log: {exc.status} {exc.reason})"


def explain_job(installed, name: str) -> str:
    """What a user would look at when a job went wrong: status, its pods and their last log lines."""
    obj = read_or_none(lambda: get(installed, "TrainingJob", name))
    if obj is None:
        return f"TrainingJob {name} does not exist"
    status = obj.get("status") or {}
    lines = [f"TrainingJob {name}: phase {status.get('phase')}, message {status.get('message')!r}",
             f"  lastFailure: {json.dumps(status.get('lastFailure'))}",
             f"  conditions: {json.dumps(status.get('conditions'))}",
             f"  progress: {json.dumps(status.get('progress'))}"]
    for pod in job_pods(installed, name):
        lines.append(f"  pod {pod.metadata.name}: {describe_pod(pod)}")
        lines.extend("    | " + line for line in pod_log(installed, pod.metadata.name, tail=15).splitlines())
    return "\n".join(lines)


def describe_pod(pod) -> str:
    states = []
    for s in pod.status.container_statuses or []:
        state = s.state.waiting or s.state.terminated or s.state.running
        reason = getattr(state, "reason", None) or ("Running" if s.state.running else "?")
        code = f" exit {s.state.terminated.exit_code}" if s.state.terminated else ""
        states.append(f"{s.name}={reason}{code} restarts={s.restart_count}")
    conditions = ",".join(f"{c.type}={c.status}" for c in pod.status.conditions or [] if c.status != "True")
    return f"{pod.status.phase} node={pod.spec.node_name} {' '.join(states)} {conditions}".strip()


def wait_job(installed, name: str, timeout: float = TRAINING_TIMEOUT) -> dict:
    """Until the job is Succeeded or Failed; its status."""
    status = wait(lambda: (s := job_status(installed, name)).get("phase") in TERMINAL and s,
                  f"TrainingJob {name} to finish", timeout, interval=3, explain=lambda: explain_job(installed, name))
    return status


def wait_registered(installed, name: str, timeout: float = 60) -> dict:
    """The job's status once status.result names its ModelVersion: the operator registers the
    model just after it writes Succeeded, in a second status write."""
    return wait(lambda: (s := job_status(installed, name)).get("result", {}).get("modelVersion") and s,
                f"TrainingJob {name} to name its ModelVersion", timeout, interval=1,
                explain=lambda: explain_job(installed, name))


def assert_succeeded(installed, name: str, status: dict) -> None:
    assert status.get("phase") == "Succeeded", (
        f"TrainingJob {name} ended {status.get('phase')}: {status.get('message')}\n{explain_job(installed, name)}")


# -- serving -------------------------------------------------------------------------------------

def md_status(installed, name: str) -> dict:
    return get(installed, "ModelDeployment", name).get("status") or {}


def selected_version(installed, model: str) -> int | None:
    """The version the model's Service selects, or None while there is no Service."""
    service = read_or_none(lambda: installed.core.read_namespaced_service(model, installed.namespace))
    if service is None or not (service.spec.selector or {}).get("torchyard.dev/version"):
        return None
    return int(service.spec.selector["torchyard.dev/version"])


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def explain_md(installed, name: str, model: str) -> str:
    status = read_or_none(lambda: md_status(installed, name))
    lines = [f"ModelDeployment {name}: {json.dumps(status)}", f"  Service selects v{selected_version(installed, model)}"]
    for mv in list_model_versions(installed, model):
        lines.append(f"  {mv['metadata']['name']}: {json.dumps(mv.get('status'))} metrics {mv['spec'].get('metrics')}")
    pods = installed.core.list_namespaced_pod(installed.namespace, label_selector=f"{DEPLOYMENT_LABEL}={name}").items
    for pod in pods:
        lines.append(f"  pod {pod.metadata.name}: {describe_pod(pod)}")
        lines.extend("    | " + line for line in pod_log(installed, pod.metadata.name, tail=8).splitlines())
    return "\n".join(lines)


def wait_serving(installed, name: str, model: str, version: int, timeout: float = 300) -> dict:
    """Until Service <model> selects `version`, the status says so and the version is Available."""
    def serving():
        status = md_status(installed, name)
        return (selected_version(installed, model) == version and status.get("activeVersion") == version
                and condition(status, "Available").get("status") == "True" and status)
    return wait(serving, f"ModelDeployment {name} serving v{version}", timeout,
                explain=lambda: explain_md(installed, name, model))


def mv_status(installed, name: str) -> dict:
    return get(installed, "ModelVersion", name).get("status") or {}


# -- pods in the cluster -------------------------------------------------------------------------

def client_pod(installed, name: str, script: str, *args: str, image: str | None = None) -> dict:
    """A pod that runs `python -c script args` once, as the restricted Pod Security level allows."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "torchyard-e2e"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image or installed.image("trainer"), "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", script, *args],
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def start_client(installed, resources: Resources, prefix: str, script: str, *args: str, **extra) -> str:
    pod = client_pod(installed, unique(prefix), script, *args)
    for key, value in extra.items():  # volumes, volumeMounts
        if key == "volumeMounts":
            pod["spec"]["containers"][0]["volumeMounts"] += value
        else:
            pod["spec"][key] = pod["spec"].get(key, []) + value
    resources.create(pod)
    return pod["metadata"]["name"]


def pod_phase(installed, pod: str) -> str:
    return installed.core.read_namespaced_pod(pod, installed.namespace).status.phase


def wait_pod_running(installed, pod: str, timeout: float = 180) -> None:
    wait(lambda: pod_phase(installed, pod) in ("Running", "Succeeded", "Failed"), f"pod {pod} started", timeout,
         interval=1, explain=lambda: describe_pod(installed.core.read_namespaced_pod(pod, installed.namespace)))


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def wait_client(installed, pod: str, timeout: float = 300) -> list[dict]:
    """Until the client pod ends; its JSON lines. Fails with its log when it did not exit 0."""
    wait(lambda: pod_phase(installed, pod) in ("Succeeded", "Failed"), f"client pod {pod} to finish", timeout,
         interval=1, explain=lambda: pod_log(installed, pod, tail=40))
    log = pod_log(installed, pod)
    assert pod_phase(installed, pod) == "Succeeded", f"client pod {pod} failed:\n{log[-4000:]}"
    return json_lines(log)


def run_client(installed, resources: Resources, prefix: str, script: str, *args: str, timeout: float = 300,
               **extra) -> list[dict]:
    pod = start_client(installed, resources, prefix, script, *args, **extra)
    lines = wait_client(installed, pod, timeout)
    resources.delete("Pod", pod)
    return lines


# The clients, run with `python -c`. Each prints JSON lines and exits 0 unless it could not work.

# argv: url, rows. Waits for the first answer (DNS and the Service's rules may lag), then sends the
# first `rows` digits of scikit-learn's dataset in one request and each of the digits 0-9 alone,
# and reads the model's metadata.
PREDICT = r'''
import json, sys, time, urllib.request
from sklearn.datasets import load_digits
url, rows = sys.argv[1], int(sys.argv[2])
x, y = load_digits(return_X_y=True)
def infer(batch):
    body = {"id": "e2e", "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(batch), 64],
                                     "data": [float(v) for row in batch for v in row]}]}
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)
deadline = time.time() + 120
while True:
    try:
        infer(x[:1]); break
    except Exception as exc:
        if time.time() > deadline:
            print(json.dumps({"error": repr(exc)})); sys.exit(1)
        time.sleep(1)
answer = infer(x[:rows])
out = {o["name"]: o for o in answer["outputs"]}
print(json.dumps({"kind": "batch", "model_name": answer["model_name"], "model_version": answer["model_version"],
                  "id": answer.get("id"), "expected": [int(v) for v in y[:rows]],
                  "predicted": out["predictions"]["data"], "output_shape": out["output"]["shape"]}))
for digit in range(10):
    i = int(next(j for j in range(len(y)) if y[j] == digit))
    answer = infer(x[i:i + 1])
    predicted = next(o for o in answer["outputs"] if o["name"] == "predictions")["data"][0]
    print(json.dumps({"kind": "single", "index": i, "expected": digit, "predicted": predicted,
                      "model_version": answer["model_version"]}))
with urllib.request.urlopen(url.rsplit("/", 1)[0], timeout=10) as answer:
    meta = json.load(answer)
print(json.dumps({"kind": "metadata", "name": meta["name"], "versions": meta["versions"],
                  "sha256": meta["parameters"].get("sha256")}))
'''

# argv: url, max_seconds, settle_seconds. Sends one inference after another (a fresh connection
# each, 20 ms apart, 1 s timeout) and prints a line per run of equal outcomes ("v<version>" or "error: ..."),
# with the wall-clock times of its first and last request. Stops once a version other than the
# first one seen has answered for settle_seconds, or after max_seconds.
LOOP = r'''
import json, sys, time, urllib.error, urllib.request
from sklearn.datasets import load_digits
url, max_seconds, settle = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
x, _ = load_digits(return_X_y=True)
body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                               "data": [float(v) for v in x[0]]}]}).encode()
def once():
    try:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=1) as answer:
            return "v" + json.load(answer)["model_version"]
    except urllib.error.HTTPError as exc:
        return f"error: HTTP {exc.code}"
    except Exception as exc:
        return f"error: {type(getattr(exc, 'reason', exc)).__name__}: {getattr(exc, 'reason', exc)}"
deadline = time.time() + 120
while not (first := once()).startswith("v"):
    if time.time() > deadline:
        print(json.dumps({"event": "never-answered", "outcome": first})); sys.exit(1)
    time.sleep(0.5)
print(json.dumps({"event": "ready", "outcome": first, "t": time.time()}), flush=True)
run = {"event": "run", "outcome": first, "first": time.time(), "last": time.time(), "count": 1}
stop = time.time() + max_seconds
while time.time() < stop:
    time.sleep(0.02)
    outcome, now = once(), time.time()
    if outcome == run["outcome"]:
        run["last"], run["count"] = now, run["count"] + 1
    else:
        print(json.dumps(run), flush=True)
        run = {"event": "run", "outcome": outcome, "first": now, "last": now, "count": 1}
    if outcome.startswith("v") and outcome != first and now - run["first"] >= settle:
        break
print(json.dumps(run), flush=True)
print(json.dumps({"event": "done", "t": time.time()}), flush=True)
'''

# argv: a JSON list of {"name", "url", "require": [sample names], "timeout"}. Polls each URL until
# its answer has a sample of every required name, then prints {"name", "url", "ok", "text"}.
SCRAPE = r'''
import json, re, sys, time, urllib.request
def samples(text):
    return {re.split(r"[{ ]", line, 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
for target in json.loads(sys.argv[1]):
    deadline, text, missing = time.time() + target["timeout"], "", target["require"]
    while True:
        try:
            with urllib.request.urlopen(target["url"], timeout=5) as answer:
                text = answer.read().decode()
            missing = sorted(set(target["require"]) - samples(text))
        except Exception as exc:
            missing = [repr(exc)]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.5)
    print(json.dumps({"name": target["name"], "url": target["url"], "ok": not missing, "missing": missing,
                      "text": text}), flush=True)
'''
