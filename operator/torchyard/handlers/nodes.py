"""Wire kopf's node watch to the operator's in-memory record of node faults.

A node that goes NotReady or is lost changes nothing on its pods for minutes; the operator learns
of it here and moves a gang off it within its own bound (TORCHYARD_NODE_FAILURE_SECONDS): a
fault that comes or goes, or a disruption of every node that begins or ends (torchyard.nodes),
queues every job, whose pass then schedules itself for when it falls due.
"""

from __future__ import annotations

from datetime import datetime, timezone

import kopf

from torchyard.nodes import NodeHealth


@kopf.on.event("", "v1", "nodes")
def node_event(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    nodes: NodeHealth = memo.nodes
    if nodes.observe(body, event.get("type") == "DELETED", datetime.now(timezone.utc)):
        for key in memo.cache.job_keys():  # each job's pass schedules when a fault on its node falls due
            memo.queue.add(key)
