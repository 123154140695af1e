"""Serving identity: one ModelDeployment serves a model in a namespace, never two.

Two ModelDeployments of the same model would fight over its one Service and its versions'
Deployments and statuses. The oldest (by creation, then name) owns the model; any other is marked
with a condition saying which one does, and writes nothing else until the owner is gone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from torchyard.reconcile import conditions as cond
from torchyard.reconcile.serving_status import AVAILABLE, DEGRADED, PROGRESSING

DUPLICATE = "DuplicateModel"


def serving_owner(deployments: Iterable[Mapping[str, Any]], model: str) -> str | None:
    """The name of the ModelDeployment that owns `model` among `deployments` (one namespace)."""
    candidates = []
    for item in deployments:
        meta = item.get("metadata") or {}
        if (item.get("spec") or {}).get("modelName") == model and not meta.get("deletionTimestamp"):
            candidates.append((meta.get("creationTimestamp") or "", meta.get("name", "")))
    return min(candidates)[1] if candidates else None


def duplicate_status(previous: Mapping[str, Any], owner: str, model: str, now: datetime, generation: int) -> dict:
    """The status of a ModelDeployment that does not own its model: conditions only, nothing served."""
    message = (f"model {model} is already served by ModelDeployment {owner} in this namespace; this one "
               f"changes nothing until {owner} is deleted")
    status = dict(previous, observedGeneration=generation)
    conditions = list(previous.get("conditions") or [])
    for kind, value in ((AVAILABLE, False), (PROGRESSING, False), (DEGRADED, True)):
        conditions = cond.set_condition(conditions, kind, value, DUPLICATE, message, now, generation)
    status["conditions"] = conditions
    return status
