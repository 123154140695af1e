"""The nodes' health as the node watch delivers it, kept in memory for every reconcile to read.

A reconcile reads a snapshot of the faults here instead of asking the API server; the resync loop
then turns a fault that has lasted long enough into a decision (see torchyard.reconcile.nodes).
A fault counts from when this operator first saw it, not from the node's lastTransitionTime:
that comes from another clock (kwok's NotReady stage leaves it at the node's creation), and a
stale one would move a gang the moment a node blinks.
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

    def observe(self, node: Mapping[str, Any], deleted: bool, now: datetime) -> None:
        """Record the node's state from a watch event (``deleted``: the Node object is gone)."""
        name = (node.get("metadata") or {}).get("name", "")
        fault = node_deleted(name, now) if deleted else node_fault(node, now)
        with self._lock:
            before = self._faults.pop(name, None)
            if fault is not None:
                same = before is not None and before.reason == fault.reason
                fault = replace(fault, since=before.since if same else now)
                self._faults[name] = fault
        if fault is not None and (before is None or before.reason != fault.reason):
            log.info("%s", fault.describe())
        elif fault is None and before is not None:
            log.info("node %s is Ready again", name)

    def faults(self) -> dict[str, NodeFault]:
        with self._lock:
            return dict(self._faults)
