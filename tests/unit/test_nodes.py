"""A Node object read as a fault (or none), the way the node lifecycle controller writes it."""

from jobs import NOW
from torchyard.reconcile.nodes import LOST, NOT_READY, node_deleted, node_fault


def node(status: str | None, **ready) -> dict:
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if status is not None:
        conditions.append({"type": "Ready", "status": status, "lastTransitionTime": "2026-01-01T11:59:00Z", **ready})
    return {"metadata": {"name": "kwok-cpu-0"}, "status": {"conditions": conditions}}


def test_a_ready_node_or_one_that_has_not_reported_is_no_fault():
    assert node_fault(node("True"), NOW) is None
    assert node_fault(node(None), NOW) is None


def test_not_ready_and_unknown_are_faults_since_their_transition():
    not_ready = node_fault(node("False", reason="KubeletNotReady", message="container runtime is down"), NOW)
    assert (not_ready.reason, not_ready.since.minute) == (NOT_READY, 59)
    assert not_ready.describe() == ("node kwok-cpu-0 is NotReady since 2026-01-01T11:59:00Z "
                                    "(KubeletNotReady: container runtime is down)")
    lost = node_fault(node("Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status."), NOW)
    assert lost.reason == LOST and "lost" in lost.describe()


def test_a_deleted_node_is_lost_from_the_moment_it_was_seen_going():
    assert node_deleted("kwok-cpu-0", NOW).since == NOW


def test_a_fault_counts_from_when_the_operator_saw_it():
    from datetime import timedelta

    from torchyard.nodes import NodeHealth

    health = NodeHealth()
    health.observe(named("kwok-cpu-1", "True"), False, NOW)  # a healthy node: this is a node's fault
    stale = node("False", reason="KubeletNotReady")  # its lastTransitionTime is a minute old
    health.observe(stale, False, NOW)
    health.observe(stale, False, NOW + timedelta(seconds=30))  # the same fault, seen again
    assert health.faults()["kwok-cpu-0"].since == NOW
    health.observe(node("True"), False, NOW + timedelta(seconds=40))
    assert health.faults() == {}
    health.observe(node("Unknown"), False, NOW + timedelta(seconds=50))
    assert health.faults()["kwok-cpu-0"].since == NOW + timedelta(seconds=50)


def named(name: str, status: str) -> dict:
    body = node(status, reason="KubeletNotReady")
    body["metadata"]["name"] = name
    return body


def test_every_node_at_fault_at_once_is_the_cluster_s_disruption_and_moves_no_gang():
    """As the node lifecycle controller stops evicting in full disruption: no fault is acted on
    while every node is NotReady or unreachable, except a deleted Node object."""
    from datetime import timedelta

    from torchyard.nodes import NodeHealth

    health = NodeHealth()
    for name in ("a", "b", "c"):
        assert health.observe(named(name, "True"), False, NOW) is False  # Ready: nothing to act on
    assert health.observe(named("a", "False"), False, NOW) is True
    assert health.observe(named("b", "Unknown"), False, NOW) is True
    assert set(health.faults()) == {"a", "b"}
    assert health.observe(named("c", "Unknown"), False, NOW) is True  # the last one: a disruption begins
    assert health.faults() == {}
    assert health.observe(named("a", "False"), False, NOW + timedelta(seconds=5)) is False  # a heartbeat
    assert health.observe(named("b", "Unknown"), True, NOW + timedelta(seconds=6)) is True  # deleted for good
    assert set(health.faults()) == {"b"}


def test_a_node_still_at_fault_after_a_disruption_counts_from_its_end():
    from datetime import timedelta

    from torchyard.nodes import NodeHealth

    health = NodeHealth()
    health.observe(named("a", "False"), False, NOW)
    health.observe(named("b", "False"), False, NOW)  # both at fault: a disruption from the start
    assert health.faults() == {}
    later = NOW + timedelta(minutes=10)
    assert health.observe(named("a", "True"), False, later) is True  # over: b is a node's fault now
    assert health.faults()["b"].since == later  # not ten minutes old: its whole bound from now
    assert health.observe(named("b", "True"), False, later + timedelta(seconds=1)) is True
    assert health.faults() == {}
