"""The switch-latency histogram has a zero series for every reason a switch can have before the
first switch, so the dashboard's p90 panel shows the first failover, not only later ones."""
from __future__ import annotations

from torchyard import metrics
from torchyard.reconcile import serving


def _count(reason: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("torchyard_model_switch_latency_seconds_count", {"reason": reason})


def test_every_switch_reason_has_a_series_before_any_switch():
    reasons = {serving.PROMOTION, serving.MANUAL, serving.FAILOVER, serving.FAILBACK}
    assert reasons == set(metrics.SWITCH_REASONS)
    for reason in reasons:
        assert _count(reason) is not None, reason
