"""The promotion gate: is a candidate version no worse than the baseline by more than the bound?"""

from __future__ import annotations

from torchyard.api.modeldeployment import Gate
from torchyard.api.modelversion import ModelVersion

# Metric values travel as JSON floats; a regression this small is rounding, not a regression.
EPSILON = 1e-12


def gate_problem(gate: Gate, candidate: ModelVersion, baseline: ModelVersion | None) -> str | None:
    """None when `candidate` may replace `baseline`; otherwise why not, in words for the user.

    The metric is `gate.metric`, or the candidate's own main metric. With no baseline (nothing
    serves yet, or its ModelVersion is gone) there is nothing to compare with, and the gate passes.
    """
    if baseline is None:
        return None
    metric = gate.metric or candidate.metric or baseline.metric
    if not metric:
        return "no metric to compare: neither spec.gate.metric nor the ModelVersion's spec.metric is set"
    if metric not in candidate.metrics:
        return f"v{candidate.version} has no metric {metric!r} (it has {', '.join(sorted(candidate.metrics)) or 'none'})"
    if metric not in baseline.metrics:
        return f"the version it would replace, v{baseline.version}, has no metric {metric!r} to compare with"
    new, old = candidate.metrics[metric], baseline.metrics[metric]
    higher = gate.better_is_higher(metric)
    regression = (old - new) if higher else (new - old)
    if regression > gate.max_regression + EPSILON:
        direction = "lower" if higher else "higher"
        return (f"{metric} {new:.6g} is {direction} than v{baseline.version}'s {old:.6g} by {regression:.6g}, "
                f"more than spec.gate.maxRegression={gate.max_regression:g}")
    return None
