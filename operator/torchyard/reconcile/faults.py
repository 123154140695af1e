"""Faults the operator sees for itself, where no pod reports a failure: a gang that stopped
stepping (the progress watchdog) and pods on a node that went NotReady or was lost.

Both are the infrastructure's, never charged to ``backoffLimit``. Pure functions of the job, its
previous status, the observed pods and node faults, and the time; ``decide`` calls them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from torchyard.api.trainingjob import TrainingJob
from torchyard.builders.names import pod_name
from torchyard.reconcile import conditions as cond
from torchyard.reconcile.failures import Failure
from torchyard.reconcile.nodes import NodeFault
from torchyard.reconcile.observe import PodView, parse_time
from torchyard_spec import contract

HUNG = "ProgressDeadlineExceeded"
RUNNING = "Running"


def hung(job: TrainingJob, previous: Mapping[str, Any], now: datetime) -> Failure | None:
    """The watchdog: a Running gang whose progress reports brought no new step for
    spec.runPolicy.progressDeadlineSeconds (counted from the later of the last new step and the
    moment the gang started running) is hung, whatever its pods say."""
    limit = job.spec.run_policy.progress_deadline_seconds
    if limit is None or previous.get("phase") != RUNNING:
        return None
    progress = previous.get("progress") or {}
    running = next((c for c in previous.get("conditions") or [] if c.get("type") == cond.RUNNING), {})
    moments = [t for t in (parse_time(progress.get("stepTime")), parse_time(running.get("lastTransitionTime"))) if t]
    if not moments or now < max(moments) + timedelta(seconds=limit):
        return None
    last = f"the last was step {progress['step']:g} at {progress['stepTime']}" if "stepTime" in progress else "none yet"
    message = f"no new training step for spec.runPolicy.progressDeadlineSeconds={limit}s ({last}); the gang is hung"
    lead = pod_name(job.name, contract.ROLE_WORKER, 0)
    return Failure(lead, contract.ROLE_WORKER, 0, None, HUNG, message, retryable=True, infrastructure=True)


def stranded(pods: Iterable[PodView], node_faults: Mapping[str, NodeFault], now: datetime,
             limit_seconds: float) -> list[Failure]:
    """Pods on a node that has been NotReady or lost for ``limit_seconds``: failures of the
    infrastructure, named after the node."""
    out = []
    for pod in pods:
        fault = node_faults.get(pod.node)
        if pod.finished or fault is None or now < fault.since + timedelta(seconds=limit_seconds):
            continue
        out.append(Failure(pod.name, pod.role, pod.index, None, fault.reason, fault.describe(),
                           retryable=True, infrastructure=True))
    return out


def spare_faulty_nodes(pods: Iterable[PodView], node_faults: Mapping[str, NodeFault],
                       delete: list[str]) -> tuple[list[str], list[str]]:
    """Split pods to delete into (delete, force-delete). No kubelet confirms a deletion on a faulty
    node, so a pod there, or one already Terminating there, is force-deleted at once: its name is
    free for the new attempt instead of Terminating for good (kubeflow/trainer#2072)."""
    forced = [p.name for p in pods if p.node in node_faults and (p.name in delete or p.deleting)]
    return [name for name in delete if name not in forced], forced
