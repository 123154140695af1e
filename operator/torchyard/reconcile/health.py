"""How healthy one served version is, reduced from its Deployment and pods to a few facts.

Only pods count, never the Deployment's status counters: those lag behind the pods by a round
trip of the Deployment controller, and a failover decision must see a pod turn NotReady at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

from torchyard.api.modelversion import VERSION_LABEL
from torchyard.reconcile.observe import parse_time


@dataclass(frozen=True)
class PodHealth:
    name: str
    ready: bool
    ready_since: datetime | None  # when the Ready condition last turned True
    crash_loop: str  # why the pod counts as crash-looping, or ""


@dataclass(frozen=True)
class VersionHealth:
    version: int
    replicas: int  # the Deployment's spec.replicas
    ready: int  # Ready pods that are not terminating
    pods: int  # pods that are not terminating
    crash_looping: int  # of those, pods that crash-loop
    crash_reason: str  # the first crash-looping pod's story, or ""
    ready_since: datetime | None  # the latest Ready transition among the ready pods

    def crash_loops(self, floor: int) -> bool:
        """Crash-looping as a version: too many pods crash-loop for the rest to reach the floor."""
        return self.crash_looping > 0 and self.replicas - self.crash_looping < floor


def view_pod_health(pod: Mapping[str, Any], crash_loop_restarts: int) -> PodHealth:
    status = pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    is_ready = ready.get("status") == "True"
    return PodHealth(
        name=(pod.get("metadata") or {}).get("name", ""),
        ready=is_ready,
        ready_since=parse_time(ready.get("lastTransitionTime")) if is_ready else None,
        crash_loop=_crash_loop(status, crash_loop_restarts),
    )


def _crash_loop(status: Mapping[str, Any], restarts: int) -> str:
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            return f"container {cs.get('name')} is in CrashLoopBackOff: {waiting.get('message', '')}".rstrip(": ")
        count = int(cs.get("restartCount") or 0)
        if count >= restarts and not cs.get("ready"):
            return f"container {cs.get('name')} restarted {count} times and is not ready"
    return ""


def view_version_health(deployment: Mapping[str, Any], pods: Iterable[Mapping[str, Any]],
                        crash_loop_restarts: int) -> VersionHealth:
    """Health of the version whose Deployment is `deployment`; `pods` may hold other versions' pods."""
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    version = int(labels[VERSION_LABEL])
    mine = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL) == str(version)
            and not (p.get("metadata") or {}).get("deletionTimestamp")]
    views = [view_pod_health(p, crash_loop_restarts) for p in mine]
    ready = [v for v in views if v.ready]
    crashing = [v for v in views if v.crash_loop and not v.ready]
    since = [v.ready_since for v in ready if v.ready_since is not None]
    return VersionHealth(
        version=version,
        replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
        ready=len(ready),
        pods=len(views),
        crash_looping=len(crashing),
        crash_reason=f"pod {crashing[0].name}: {crashing[0].crash_loop}" if crashing else "",
        ready_since=max(since) if since else None,
    )
