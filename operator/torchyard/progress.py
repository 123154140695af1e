"""Live progress reported by training pods, and the tokens that let a pod report for its job only.

A pod proves which job it belongs to with an HMAC of the job's identity under the operator's key;
the operator recomputes it on each report, so it stores no secrets per job. Any replica of the
operator can take a report: it goes straight into the job's status.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Mapping

from torchyard_spec import contract


def job_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    message = f"{namespace}/{name}/{uid}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def token_matches(key: bytes, namespace: str, name: str, uid: str, supplied: str) -> bool:
    return hmac.compare_digest(supplied, job_token(key, namespace, name, uid))


def progress_path(namespace: str, name: str) -> str:
    return f"/v1/progress/{namespace}/{name}"


class ProgressError(ValueError):
    """A progress report that is not a JSON object of numbers in the documented fields."""


def clean_report(body: Any) -> dict[str, float]:
    """Keep the documented numeric fields of a report; reject anything that is not one."""
    if not isinstance(body, Mapping):
        raise ProgressError("progress report must be a JSON object")
    report: dict[str, float] = {}
    for key in contract.PROGRESS_FIELDS:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProgressError(f"progress field {key} must be a number, got {value!r}")
        report[key] = value
    if "percent" in report:
        report["percent"] = round(min(100.0, max(0.0, float(report["percent"]))), 1)
    return report
