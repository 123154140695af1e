"""Whether a node can still run a gang's pods, read from the Node object alone.

A node whose kubelet reports NotReady, or stops reporting at all (Ready Unknown: the node is lost,
or cut off), keeps its pods in whatever state they were; Kubernetes evicts them only after five
minutes, and a pod deleted there stays Terminating for good, since no kubelet confirms it. The
operator does not wait for that: ``decide`` replaces a gang whose pods sit on a faulty node once
the fault is older than a bound the operator sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from torchyard.reconcile.observe import parse_time

NOT_READY, LOST = "NodeNotReady", "NodeLost"


@dataclass(frozen=True)
class NodeFault:
    node: str
    reason: str  # NodeNotReady or NodeLost
    since: datetime
    detail: str

    def describe(self) -> str:
        return f"node {self.node} is {'NotReady' if self.reason == NOT_READY else 'lost'} since " \
               f"{self.since.strftime('%Y-%m-%dT%H:%M:%SZ')} ({self.detail})"


def node_fault(node: Mapping[str, Any], now: datetime) -> NodeFault | None:
    """The fault of a Node object, or None while it is Ready (or has not reported yet)."""
    name = (node.get("metadata") or {}).get("name", "")
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") == "True":
        return None
    since = parse_time(ready.get("lastTransitionTime")) or now
    detail = ": ".join(x for x in (ready.get("reason"), ready.get("message")) if x) or "no reason given"
    return NodeFault(name, NOT_READY if ready.get("status") == "False" else LOST, since, detail)


def node_deleted(name: str, now: datetime) -> NodeFault:
    return NodeFault(name, LOST, now, "the Node object was deleted")
