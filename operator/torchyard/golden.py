"""The golden request: one known inference sent to a version before traffic switches to it.

This is the operator's only traffic to model servers, so it goes through one object whose
`host_of` decides the address: a pod's IP in a cluster, 127.0.0.1 in tests. The check fails
closed: a server that cannot be reached, like one that answers wrongly, does not pass, so traffic
never switches to a version that was to be verified and could not be.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping

from torchyard.api.modeldeployment import ModelDeployment

log = logging.getLogger(__name__)


def pod_ip(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("podIP")


class GoldenCheck:
    """Sends a ModelDeployment's golden request to one ready pod of a version."""

    def __init__(self, host_of: Callable[[Mapping[str, Any]], str | None] = pod_ip):
        self.host_of = host_of

    def __call__(self, md: ModelDeployment, version: int, pod: Mapping[str, Any] | None) -> bool:
        """True only when the version answered, and the answer matched."""
        host = self.host_of(pod) if pod is not None else None
        if not host:
            log.warning("golden request to %s v%d: no ready pod with an address; not verified",
                        md.spec.model_name, version)
            return False
        check = md.spec.verification
        url = f"http://{host}:{md.spec.server.port}/v2/models/{md.spec.model_name}/versions/{version}/infer"
        request = urllib.request.Request(url, data=json.dumps(check.golden_request).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=check.timeout_seconds) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            log.warning("golden request to %s answered HTTP %d", url, exc.code)
            return False
        except (urllib.error.URLError, OSError) as exc:
            log.warning("golden request to %s not delivered (%s); not verified", url, exc)
            return False
        except json.JSONDecodeError:
            log.warning("golden request to %s answered with something that is not JSON", url)
            return False
        problem = output_problem(body, check.expected_output, check.tolerance)
        if problem:
            log.warning("golden request to %s: %s", url, problem)
        return problem is None


def output_problem(body: Any, expected: Mapping[str, Any] | None, tolerance: float) -> str | None:
    """Why an inference answer does not match `expected` (output name -> data), or None."""
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return "the answer has no outputs"
    if not expected:
        return None
    by_name = {o.get("name"): o.get("data") for o in outputs if isinstance(o, dict)}
    for name, want in expected.items():
        if name not in by_name:
            return f"output {name!r} is missing"
        got, want = _flat(by_name[name]), _flat(want)
        if len(got) != len(want):
            return f"output {name!r} has {len(got)} values, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            if not _close(g, w, tolerance):
                return f"output {name!r}[{i}] is {g!r}, expected {w!r}"
    return None


def _flat(data: Any) -> list:
    if isinstance(data, list):
        return [x for item in data for x in _flat(item)]
    return [data]


def _close(got: Any, want: Any, tolerance: float) -> bool:
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return math.isfinite(got) and abs(got - want) <= tolerance
    return got == want
