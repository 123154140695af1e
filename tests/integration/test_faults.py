"""Faults a real cluster has, on the local control plane: a gang that stops stepping, a node that
goes NotReady or is lost under a running gang, every node at once.

kwok pods never train, so the test stands in for rank 0 and posts progress reports to the
operator's endpoint with the pod's own URL and token, as the trainer does.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import faults as fault_helpers
from harness.waits import wait_for
from test_operator_trainingjob import create, env_of, phase_is, pods, status, trainingjob


def post_progress(operator, pod, step: int) -> int:
    """One progress report as the pod's trainer would send it; the HTTP status."""
    env = env_of(pod)
    path = env["TORCHYARD_PROGRESS_URL"].split("/v1/", 1)[1]
    request = urllib.request.Request(
        f"{operator.url}/v1/{path}", data=json.dumps({"step": step, "totalSteps": 1000}).encode(), method="POST",
        headers={"Authorization": f"Bearer {env['TORCHYARD_PROGRESS_TOKEN']}", "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def events(cluster, namespace, name) -> list:
    return cluster.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items


def warning_events(cluster, namespace, name, reason) -> list:
    """The job's Events of `reason`, once there is one: the operator sends Events after the status
    write that a test waited for, not with it."""
    return wait_for(lambda: [e for e in events(cluster, namespace, name) if e.reason == reason],
                    f"a {reason} Event of {name}", timeout=15)


def test_a_gang_that_stops_stepping_is_restarted_from_its_checkpoint(cluster, crds, namespace, operator):
    create(cluster, namespace, trainingjob("hung", runPolicy={"progressDeadlineSeconds": 10, "backoffLimit": 0}))
    wait_for(phase_is(cluster, namespace, "hung", "Running"), "job Running")
    first = {n: p.metadata.uid for n, p in pods(cluster, namespace, "hung").items()}
    assert post_progress(operator, pods(cluster, namespace, "hung")["hung-worker-0"], 40) == 202
    wait_for(lambda: status(cluster, namespace, "hung").get("progress", {}).get("stepTime"), "progress in status")
    # The same step again is a report, not progress: the rank is alive but stuck.
    assert post_progress(operator, pods(cluster, namespace, "hung")["hung-worker-0"], 40) == 202

    wait_for(lambda: status(cluster, namespace, "hung").get("infrastructureRestarts", 0) >= 1, "hang detected",
             timeout=60)
    st = status(cluster, namespace, "hung")
    assert st["restarts"] == 0  # backoffLimit 0 was not spent
    assert st["lastFailure"]["reason"] == "ProgressDeadlineExceeded"
    assert "step 40" in st["lastFailure"]["message"]
    warnings = warning_events(cluster, namespace, "hung", "ProgressDeadlineExceeded")
    assert warnings and warnings[0].type == "Warning" and "progressDeadlineSeconds=10s" in warnings[0].message
    wait_for(lambda: (now := pods(cluster, namespace, "hung")) and sorted(now) == sorted(first)
             and all(p.metadata.uid != first[n] for n, p in now.items()), "every gang member replaced")


def assert_moved_off(cluster, namespace, job, first: dict, bad: str, reason: str) -> None:
    """The gang was restarted once for the node fault, not charged, and every member replaced
    off the bad node and running."""
    st = status(cluster, namespace, job)
    assert st["restarts"] == 0
    assert st["lastFailure"]["reason"] == reason and bad in st["lastFailure"]["message"]
    warnings = warning_events(cluster, namespace, job, reason)
    assert warnings and warnings[0].type == "Warning" and bad in warnings[0].message

    def moved():
        now = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={job}").items
        return (sorted(p.metadata.name for p in now) == sorted(first)
                and all(p.metadata.uid != first[p.metadata.name] and p.spec.node_name != bad
                        and p.status.phase == "Running" and p.metadata.deletion_timestamp is None for p in now))
    # Nothing stays Terminating on the bad node: the old pods are force-deleted.
    wait_for(moved, f"every gang member replaced off {bad}, none left Terminating", timeout=60)


def running_gang(cluster, namespace, operator_factory, monkeypatch, job: str, member: str,
                 node_failure_seconds: int) -> tuple[dict, str]:
    """An operator with the given bound on node faults and a gang of `job` Running under it: its
    pods' UIDs by name, and the node that `member` runs on."""
    monkeypatch.setenv("TORCHYARD_NODE_FAILURE_SECONDS", str(node_failure_seconds))
    operator_factory(namespace)
    create(cluster, namespace, trainingjob(job, runPolicy={"backoffLimit": 0}))
    wait_for(phase_is(cluster, namespace, job, "Running"), "job Running")
    first = {n: p.metadata.uid for n, p in pods(cluster, namespace, job).items()}
    return first, pods(cluster, namespace, job)[f"{job}-{member}"].spec.node_name


def wait_restarted_for(cluster, namespace, job: str, node: str) -> None:
    wait_for(lambda: status(cluster, namespace, job).get("infrastructureRestarts", 0) >= 1,
             f"the gang restarted for {node}", timeout=60)


def test_a_gang_on_a_node_that_goes_not_ready_moves_to_healthy_nodes(cluster, crds, namespace, operator_factory,
                                                                     faults, monkeypatch):
    first, bad = running_gang(cluster, namespace, operator_factory, monkeypatch, "notready", "worker-1", 5)
    faults.node_not_ready(bad)
    wait_restarted_for(cluster, namespace, "notready", bad)
    assert_moved_off(cluster, namespace, "notready", first, bad, "NodeNotReady")


def test_a_gang_on_a_lost_node_moves_without_waiting_for_its_pods(cluster, crds, namespace, operator_factory,
                                                                  faults, monkeypatch):
    first, bad = running_gang(cluster, namespace, operator_factory, monkeypatch, "lost", "worker-0", 5)
    faults.node_lost(bad)
    wait_restarted_for(cluster, namespace, "lost", bad)
    assert_moved_off(cluster, namespace, "lost", first, bad, "NodeLost")


def test_every_node_not_ready_at_once_moves_no_gang_until_a_node_is_back(cluster, crds, namespace, operator_factory,
                                                                          faults, monkeypatch):
    """Every node NotReady at once is the cluster's disruption (its control plane, its network), not
    a node's fault: no gang is moved and no restart counted, however long it lasts. Once the other
    nodes are back, a node still NotReady is a node's fault again, and its gang moves, counted once."""
    nodes = cluster.core.list_node().items
    if any(fault_helpers.MANAGED_LABEL not in (n.metadata.labels or {}) for n in nodes):
        pytest.skip("a node kwok does not manage is registered (a real node): it cannot be made NotReady")
    first, bad = running_gang(cluster, namespace, operator_factory, monkeypatch, "outage", "worker-1", 10)
    with ThreadPoolExecutor(len(nodes)) as pool:  # all at once, well within the operator's bound
        list(pool.map(faults.node_not_ready, [n.metadata.name for n in nodes]))
    time.sleep(25)  # more than twice the bound: a node's fault would have moved the gang by now
    st = status(cluster, namespace, "outage")
    assert (st["phase"], st.get("infrastructureRestarts", 0), st["attempt"]) == ("Running", 0, 0)
    assert {n: p.metadata.uid for n, p in pods(cluster, namespace, "outage").items()} == first

    for node in nodes:
        if node.metadata.name != bad:
            fault_helpers.node_ready(cluster.core, node.metadata.name)
    wait_restarted_for(cluster, namespace, "outage", bad)
    assert_moved_off(cluster, namespace, "outage", first, bad, "NodeNotReady")
    assert status(cluster, namespace, "outage")["infrastructureRestarts"] == 1
