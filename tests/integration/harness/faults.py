"""Faults injected the way the world causes them, on the local cluster's kwok nodes.

kwok plays the kubelet: it starts every scheduled pod (Running and Ready) and keeps each node's
Lease fresh; nothing else ever changes a running pod. These helpers play the kubelet's part for
the events a test wants: a container exits, a readiness probe flips, a node reports NotReady or
disappears, a pod is evicted. Status changes go through the status subresource, as the admin, and
each helper returns only once the API server shows the change. Every helper takes the `cluster`
fixture (or a CoreV1Api) first.
"""
from __future__ import annotations

import datetime

from kubernetes import client

from .waits import read_or_none, wait_for

# The label hack/localcluster gives the nodes kwok manages (components.KWOK_MANAGED_LABEL): a node
# without it gets no more heartbeats, exactly like a node whose kubelet died.
MANAGED_LABEL = "torchyard.dev/kwok-managed"
# kwok's node-not-ready stage (applied by hack/localcluster): a labelled node reports Ready=False.
NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
NOT_READY_ANNOTATION = "node-not-ready.stage.kwok.x-k8s.io/"


def _core(api) -> client.CoreV1Api:
    """Helpers take the `cluster` fixture's handle or a CoreV1Api."""
    return getattr(api, "core", api)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_pod(core, namespace: str, name: str):
    return core.read_namespaced_pod(name, namespace)


def _statuses(pod) -> list[dict]:
    """The pod's containerStatuses as plain dicts (the list is replaced whole when patched)."""
    api = client.ApiClient()
    return [api.sanitize_for_serialization(s) for s in pod.status.container_statuses or []]


def _patch_status(core, namespace: str, name: str, status: dict):
    """The pod as the API server recorded the status patch."""
    return core.patch_namespaced_pod_status(name, namespace, {"status": status})


def wait_running(core, namespace: str, name: str, timeout: float = 30):
    """The pod as soon as it runs on a node (kwok starts scheduled pods at once)."""
    core = _core(core)
    return wait_for(lambda: (p := read_or_none(lambda: _read_pod(core, namespace, name)))
                    and p.status.phase == "Running" and p, f"pod {namespace}/{name} Running", timeout)


def terminate_container(core, namespace: str, name: str, exit_code: int, *,
                        message: str | None = None, reason: str | None = None,
                        container: str | None = None, timeout: float = 30):
    """A running container exits with `exit_code` and is not restarted (restartPolicy Never).

    `message` lands in state.terminated.message, as a container's termination-message file would;
    `reason` defaults to Completed / Error like the kubelet's (pass "OOMKilled" for an OOM kill).
    When every container has terminated the phase becomes Succeeded (all exit 0) or Failed.
    """
    core = _core(core)
    pod = wait_running(core, namespace, name, timeout)
    statuses = _statuses(pod)
    target = container or statuses[0]["name"]
    status = next((s for s in statuses if s["name"] == target), None)
    if status is None:
        raise ValueError(f"pod {namespace}/{name} has no container {target!r}")
    started = (status.get("state", {}).get("running") or {}).get("startedAt", _now())
    terminated = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                  "startedAt": started, "finishedAt": _now()}
    if message is not None:
        terminated["message"] = message
    status.update(ready=False, started=False, state={"terminated": terminated})
    patch = {"containerStatuses": statuses, "conditions": _conditions(False, "PodCompleted")}
    ended = [s["state"].get("terminated") for s in statuses]
    if all(ended):
        patch["phase"] = "Succeeded" if all(t["exitCode"] == 0 for t in ended) else "Failed"
    written = _patch_status(core, namespace, name, patch)

    def landed():
        current = read_or_none(lambda: _read_pod(core, namespace, name))
        if current is None or current.metadata.uid != pod.metadata.uid:
            return written  # the operator acted on the exit already: the pod is gone, or replaced
        for s in current.status.container_statuses or []:
            if s.name == target and s.state.terminated and s.state.terminated.exit_code == exit_code:
                return current
        return None

    return wait_for(landed, f"{namespace}/{name}:{target} terminated with {exit_code}", timeout)


def crash_container(core, namespace: str, name: str, exit_code: int = 1, *,
                    message: str | None = None, container: str | None = None, timeout: float = 30):
    """A container crashes and the kubelet restarts it (restartPolicy Always or OnFailure).

    The exit lands in lastState.terminated, restartCount goes up by one, and the container waits
    in CrashLoopBackOff, not ready; the pod stays Running. Call it repeatedly for a crash loop.
    """
    core = _core(core)
    pod = wait_running(core, namespace, name, timeout)
    statuses = _statuses(pod)
    target = container or statuses[0]["name"]
    before = next(s for s in statuses if s["name"] == target)
    restarts = before.get("restartCount", 0) + 1
    last = {"exitCode": exit_code, "reason": "Error", "startedAt": _now(), "finishedAt": _now()}
    if message is not None:
        last["message"] = message
    before.update(ready=False, started=False, restartCount=restarts, lastState={"terminated": last},
                  state={"waiting": {"reason": "CrashLoopBackOff",
                                     "message": f"back-off restarting failed container {target}"}})
    _patch_status(core, namespace, name, {"containerStatuses": statuses,
                                          "conditions": _conditions(False, "ContainersNotReady")})
    return wait_for(lambda: (p := _read_pod(core, namespace, name)) and any(
        s.name == target and s.restart_count == restarts for s in p.status.container_statuses or []) and p,
        f"{namespace}/{name}:{target} restarted {restarts} times", timeout)


def _conditions(ready: bool, reason: str) -> list[dict]:
    value = "True" if ready else "False"
    extra = {} if ready else {"reason": reason}
    return [{"type": t, "status": value, "lastTransitionTime": _now(), **extra}
            for t in ("Ready", "ContainersReady")]


def set_pod_ready(core, namespace: str, name: str, ready: bool, timeout: float = 30):
    """Readiness flips, as when a readiness probe starts failing (or passes again)."""
    core = _core(core)
    pod = wait_running(core, namespace, name, timeout)
    statuses = _statuses(pod)
    for status in statuses:
        if "running" in status.get("state", {}):
            status["ready"] = ready
    _patch_status(core, namespace, name, {"containerStatuses": statuses,
                                          "conditions": _conditions(ready, "ContainersNotReady")})
    want = "True" if ready else "False"
    return wait_for(lambda: (p := _read_pod(core, namespace, name)) and _condition(p, "Ready") == want and p,
                    f"{namespace}/{name} Ready={want}", timeout)


def _condition(obj, kind: str) -> str | None:
    return next((c.status for c in obj.status.conditions or [] if c.type == kind), None)


def evict(core, namespace: str, name: str, timeout: float = 30) -> None:
    """Evict the pod through the Eviction API (what `kubectl drain` and preemption do); returns
    once it is gone. A PodDisruptionBudget that forbids it makes the API answer 429."""
    core = _core(core)
    uid = _read_pod(core, namespace, name).metadata.uid
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
    core.create_namespaced_pod_eviction(name, namespace, body)
    wait_for(lambda: (p := read_or_none(lambda: _read_pod(core, namespace, name))) is None
             or p.metadata.uid != uid, f"pod {namespace}/{name} evicted and gone", timeout)


def node_not_ready(core, node: str, *, reason: str = "KubeletNotReady",
                   message: str = "container runtime is down", timeout: float = 30):
    """The node's kubelet reports Ready=False (it still heartbeats); the node lifecycle
    controller then taints it not-ready and marks its pods not ready."""
    core = _core(core)
    core.patch_node(node, {"metadata": {
        "labels": {NOT_READY_LABEL: "true"},
        "annotations": {NOT_READY_ANNOTATION + "reason": reason, NOT_READY_ANNOTATION + "message": message}}})
    return wait_for(lambda: _condition(n := core.read_node(node), "Ready") == "False" and n,
                    f"node {node} Ready=False", timeout)


def node_lost(core, node: str, timeout: float = 90):
    """The node's kubelet dies: heartbeats stop, and after the grace period (about 20s here) the
    node lifecycle controller sets Ready=Unknown and taints it unreachable. Pods on it stay as
    they were, and a deleted pod stays Terminating, since no kubelet confirms anything."""
    core = _core(core)
    core.patch_node(node, {"metadata": {"labels": {MANAGED_LABEL: None}}})
    return wait_for(lambda: _condition(n := core.read_node(node), "Ready") == "Unknown" and n,
                    f"node {node} Ready=Unknown", timeout)


def node_ready(core, node: str, timeout: float = 60):
    """Undo node_not_ready / node_lost: the kubelet is back, the node Ready and untainted, and
    its running pods ready again (as a kubelet's probes would report)."""
    core = _core(core)
    core.patch_node(node, {"metadata": {"labels": {NOT_READY_LABEL: None, MANAGED_LABEL: "true"}}})

    def healthy():
        n = core.read_node(node)
        taints = {t.key for t in n.spec.taints or []}
        return (_condition(n, "Ready") == "True"
                and not taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"} and n)

    ready = wait_for(healthy, f"node {node} Ready and untainted", timeout)
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    for pod in pods:
        if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp \
                and _condition(pod, "Ready") != "True":
            set_pod_ready(core, pod.metadata.namespace, pod.metadata.name, True, timeout)
    return ready
