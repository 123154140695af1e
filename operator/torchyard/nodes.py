"""The nodes' health as the node watch delivers it, kept in memory for every reconcile to read.

A reconcile reads a snapshot of the faults here instead of asking the API server; the resync loop
then turns a fault that has lasted long enough into a decision (see torchyard.reconcile.nodes).
A fault counts from when this operator first saw it, not from the node's lastTransitionTime:
that comes from another clock (kwok's NotReady stage leaves it at the node's creation), and a
stale one would move a gang the moment a node blinks.

When every node is NotReady or unreachable at once, no node is at fault: the cluster is (its
control plane restarted, its network split, the node controller heard no kubelet), and a gang
moved would land nowhere. Like the node lifecycle controller in full disruption, which then stops
evicting, the operator moves no gang and force-deletes no pod until a node is Ready again; from
that moment a node still at fault gets its whole bound afresh. A deleted Node object is a fault
even then: it is gone for good.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping

from torchyard.reconcile.nodes import NodeFault, node_deleted, node_fault

log = logging.getLogger(__name__)


class NodeHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, NodeFault] = {}
        self._nodes: set[str] = set()  # every node the watch showed and did not delete
        self._disrupted = False  # every one of them at fault at once
        self._calm_since: datetime | None = None  # when the last such disruption ended

    def observe(self, node: Mapping[str, Any], deleted: bool, now: datetime) -> bool:
        """Record the node's state from a watch event (``deleted``: the Node object is gone).
        Whether the faults a pass acts on changed (a node's fault came, went or changed its
        reason, or a cluster-wide disruption began or ended): then every job needs a pass."""
        name = (node.get("metadata") or {}).get("name", "")
        fault = node_deleted(name, now) if deleted else node_fault(node, now)
        with self._lock:
            (self._nodes.discard if deleted else self._nodes.add)(name)
            before = self._faults.pop(name, None)
            if fault is not None:
                same = before is not None and before.reason == fault.reason
                fault = replace(fault, since=before.since if same else now)
                self._faults[name] = fault
            was = self._disrupted
            disrupted = self._disrupted = bool(self._nodes) and self._nodes <= self._faults.keys()
            if was and not disrupted:
                self._calm_since = now
            count = len(self._nodes)
        if fault is not None and (before is None or before.reason != fault.reason):
            log.info("%s", fault.describe())
        elif fault is None and before is not None:
            log.info("node %s is Ready again", name)
        if disrupted and not was:
            log.warning("every node (%d) is NotReady or unreachable: a disruption of the whole cluster, not a "
                        "node's fault; no gang is moved until a node is Ready again", count)
        elif was and not disrupted:
            log.warning("a node is Ready again: the cluster-wide disruption is over; a node still at fault "
                        "counts from now")
        if was != disrupted:
            return True
        return deleted if was else (before.reason if before else None) != (fault.reason if fault else None)

    def faults(self) -> dict[str, NodeFault]:
        """The faults a pass acts on: none of a cluster-wide disruption (only deleted nodes then),
        and none counted from before the last one ended."""
        with self._lock:
            if self._disrupted:
                return {name: f for name, f in self._faults.items() if name not in self._nodes}
            calm = self._calm_since
            return {name: replace(f, since=calm) if calm is not None and f.since < calm and name in self._nodes
                    else f for name, f in self._faults.items()}
