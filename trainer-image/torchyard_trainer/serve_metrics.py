"""The model server's Prometheus metrics, in a registry of their own.

Every series carries the served model's name and version, so one dashboard compares versions side
by side. The children are bound once: observing a request costs a few dictionary lookups, not a
label resolution per call, which matters at thousands of requests a second.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EXPLAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """Requests, errors, latency and readiness of one served model version."""

    def __init__(self, model_name: str, model_version: str):
        self.labels = {"model_name": model_name, "model_version": model_version}
        self.registry = CollectorRegistry()
        names = list(self.labels)
        self.requests = Counter("torchyard_model_requests", "Inference requests answered, by HTTP status code.",
                                names + ["code"], registry=self.registry)
        self.seconds = Histogram("torchyard_model_request_seconds", "Time to answer an inference request.",
                                 names, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("torchyard_model_errors", "Inference requests that failed, by reason.",
                              names + ["reason"], registry=self.registry)
        self.ready = Gauge("torchyard_model_ready", "1 while the model is loaded, verified and self-checked.",
                           names, registry=self.registry)
        self.batches = Counter("torchyard_model_batches", "Forward passes the adaptive batcher ran.",
                               names, registry=self.registry)
        self.batched_rows = Counter("torchyard_model_batched_rows", "Rows in the adaptive batcher's forward passes.",
                                    names, registry=self.registry)
        self.explanations = Counter("torchyard_model_explanations", "Explain requests answered, by HTTP status code.",
                                    names + ["code"], registry=self.registry)
        self.explain_seconds = Histogram("torchyard_model_explain_seconds", "Time to answer an explain request.",
                                         names, buckets=EXPLAIN_BUCKETS, registry=self.registry)
        self._seconds = self.seconds.labels(**self.labels)
        # Bound now, so the series exist at 0 before the first explanation: a rate() then sees it.
        self._explain_seconds = self.explain_seconds.labels(**self.labels)
        self._batches = self.batches.labels(**self.labels)
        self._batched_rows = self.batched_rows.labels(**self.labels)
        self._by_code: dict[tuple[Counter, int], object] = {}
        self._by_reason: dict[str, object] = {}

    def observe(self, code: int, seconds: float, reason: str | None) -> None:
        """One inference request answered with ``code``; ``reason`` names the error, if any."""
        self._child(self.requests, code).inc()
        self._seconds.observe(seconds)
        if reason is not None:
            child = self._by_reason.get(reason)
            if child is None:
                child = self._by_reason[reason] = self.errors.labels(**self.labels, reason=reason)
            child.inc()

    def observe_explanation(self, code: int, seconds: float) -> None:
        self._child(self.explanations, code).inc()
        self._explain_seconds.observe(seconds)

    def observe_batch(self, rows: int) -> None:
        self._batches.inc()
        self._batched_rows.inc(rows)

    def _child(self, counter: Counter, code: int):
        child = self._by_code.get((counter, code))
        if child is None:
            child = self._by_code[(counter, code)] = counter.labels(**self.labels, code=str(code))
        return child

    def exposition(self, ready: bool) -> bytes:
        self.ready.labels(**self.labels).set(1 if ready else 0)
        return generate_latest(self.registry)
