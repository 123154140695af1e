"""Standard Kubernetes conditions, kept in a list keyed by type."""

from __future__ import annotations

from datetime import datetime
from typing import Any

CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
# True while the operator keeps meeting transient API errors for this object (it retries with
# backoff), in the sense of kstatus: the controller cannot make progress.
STALLED = "Stalled"
API_TROUBLE = "TransientAPIErrors"  # its reason

ORDER = (CREATED, RUNNING, RESTARTING, SUCCEEDED, FAILED, SUSPENDED, STALLED)


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Return conditions with `kind` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed_at = previous.get("lastTransitionTime") if previous and previous.get("status") == value else None
    updated = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": changed_at or timestamp(now),
        "observedGeneration": generation,
    }
    others = [c for c in conditions if c.get("type") != kind]
    return sorted(others + [updated], key=lambda c: ORDER.index(c["type"]) if c["type"] in ORDER else len(ORDER))


def is_true(conditions: list[dict[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)
