"""What the operator sees of one pod, reduced to the facts its decisions use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from torchyard import labels

MESSAGE_TAIL = 512


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    role: str
    index: int
    attempt: int
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    ready: bool
    deleting: bool
    deletion_deadline: datetime | None  # when a terminating pod should be gone
    exit_code: int | None
    reason: str  # the most telling reason: container's, then pod's
    message: str
    waiting_reason: str  # e.g. ImagePullBackOff, CrashLoopBackOff, ContainerCreating
    unschedulable: str  # the scheduler's message while it cannot place the pod
    node: str

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def view_pod(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    pod_labels = meta.get("labels") or {}
    terminated, waiting = _container_state(status)
    deleted_at = parse_time(meta.get("deletionTimestamp"))
    grace = meta.get("deletionGracePeriodSeconds") or 0
    deadline = deleted_at + timedelta(seconds=int(grace)) if deleted_at else None
    return PodView(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        role=pod_labels.get(labels.ROLE, ""),
        index=_int(pod_labels.get(labels.INDEX)),
        attempt=_int(pod_labels.get(labels.ATTEMPT)),
        phase=status.get("phase") or "Pending",
        ready=_condition(status, "Ready") == "True",
        deleting=deleted_at is not None,
        deletion_deadline=deadline,
        exit_code=terminated.get("exitCode") if terminated else None,
        reason=(terminated or {}).get("reason") or status.get("reason") or "",
        message=_tail((terminated or {}).get("message") or status.get("message") or ""),
        waiting_reason=(waiting or {}).get("reason") or "",
        unschedulable=_unschedulable(status),
        node=spec.get("nodeName") or "",
    )


def _container_state(status: Mapping[str, Any]) -> tuple[dict | None, dict | None]:
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            return state["terminated"], None
        if state.get("waiting"):
            return None, state["waiting"]
    return None, None


def _condition(status: Mapping[str, Any], kind: str) -> str:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return c.get("status", "")
    return ""


def _unschedulable(status: Mapping[str, Any]) -> str:
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return c.get("message") or "unschedulable"
    return ""


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_TAIL else "..." + text[-MESSAGE_TAIL:]
