"""Wire kopf's node watch to the operator's in-memory record of node faults.

A node that goes NotReady or is lost changes nothing on its pods for minutes; the operator learns
of it here and moves a gang off it within its own bound (TORCHYARD_NODE_FAILURE_SECONDS): a
fault that comes or goes queues every job, whose pass then schedules itself for when it falls due.
"""

from __future__ import annotations

from datetime import datetime, timezone

import kopf

from torchyard.nodes import NodeHealth


@kopf.on.event("", "v1", "nodes")
def node_event(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    nodes: NodeHealth = memo.nodes
    name = (body.get("metadata") or {}).get("name", "")
    before = _reason(nodes, name)
    nodes.observe(body, event.get("type") == "DELETED", datetime.now(timezone.utc))
    if _reason(nodes, name) != before:  # each job's pass schedules when a fault on its node falls due
        for key in memo.cache.job_keys():
            memo.queue.add(key)


def _reason(nodes: NodeHealth, name: str) -> str | None:
    fault = nodes.faults().get(name)
    return fault.reason if fault else None
