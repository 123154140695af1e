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
    stale = node("False", reason="KubeletNotReady")  # its lastTransitionTime is a minute old
    health.observe(stale, False, NOW)
    health.observe(stale, False, NOW + timedelta(seconds=30))  # the same fault, seen again
    assert health.faults()["kwok-cpu-0"].since == NOW
    health.observe(node("True"), False, NOW + timedelta(seconds=40))
    assert health.faults() == {}
    health.observe(node("Unknown"), False, NOW + timedelta(seconds=50))
    assert health.faults()["kwok-cpu-0"].since == NOW + timedelta(seconds=50)
