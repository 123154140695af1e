"""Every Prometheus metric a trainer process exports, declared in one place.

Each process (worker or parameter server) serves its own registry on ``TORCHYARD_METRICS_PORT``
(port 0 turns the endpoint off). Labels are ``job``, ``role`` and ``rank``, so a job's series
count is bounded by its process count, and ``model_name`` and ``model_version``, which are fixed
for a job, so training and serving of a model line up on one dashboard. A run learns its version
number only when it succeeds (the operator numbers ModelVersions then), so while it trains its
``model_version`` is the run's own name: the directory its artifact is written to, which the
ModelVersion's ``spec.artifact.path`` ends with. The bind address defaults to every interface, as a pod
needs; ``TORCHYARD_METRICS_BIND_ADDRESS`` narrows it (tests use 127.0.0.1).
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

BIND_ADDRESS_ENV = "TORCHYARD_METRICS_BIND_ADDRESS"
DEFAULT_BIND_ADDRESS = "0.0.0.0"
LABELS = ("job", "role", "rank", "model_name", "model_version")
_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def run_version(model_dir: str) -> str:
    """The run's name while it has no version number: its artifact directory's name."""
    return os.path.basename(model_dir.rstrip("/"))


class TrainerMetrics:
    """The metric children of one process, with the label values already bound."""

    def __init__(self, job: str, role: str, rank: int, model_name: str | None = None, model_version: str = ""):
        self.registry = CollectorRegistry()
        labels = {"job": job, "role": role, "rank": str(rank), "model_name": model_name or job,
                  "model_version": model_version}

        def bound(metric):
            return metric.labels(**labels)

        self.loss = bound(Gauge(
            "torchyard_trainer_loss", "Training loss of the latest step (workers).",
            LABELS, registry=self.registry))
        self.samples_per_second = bound(Gauge(
            "torchyard_trainer_samples_per_second", "Training samples this process handles per second.",
            LABELS, registry=self.registry))
        self.step_seconds = bound(Histogram(
            "torchyard_trainer_step_seconds",
            "Wall time of one training step (workers) or one parameter update (parameter servers).",
            LABELS, buckets=_STEP_BUCKETS, registry=self.registry))
        self.communication_seconds = bound(Histogram(
            "torchyard_trainer_communication_seconds",
            "Time per step spent exchanging gradients and parameters.",
            LABELS, buckets=_STEP_BUCKETS, registry=self.registry))
        self.progress_ratio = bound(Gauge(
            "torchyard_trainer_progress_ratio", "Completed steps over total steps, 0 to 1.",
            LABELS, registry=self.registry))
        self.steps = bound(Counter(
            "torchyard_trainer_steps", "Training steps completed (workers) or updates applied (parameter servers).",
            LABELS, registry=self.registry))

    @classmethod
    def for_process(cls, env, rank: int) -> "TrainerMetrics":
        """The metrics of one process of the job ``env`` (a contract.PodEnv) describes."""
        return cls(env.job_name, env.role, rank, model_name=env.model_name, model_version=run_version(env.model_dir))

    def serve(self, port: int, address: str | None = None) -> None:
        """Expose the registry over HTTP; ``port`` 0 leaves it unexposed."""
        if port <= 0:
            return
        address = address or os.environ.get(BIND_ADDRESS_ENV) or DEFAULT_BIND_ADDRESS
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:  # metrics are worth less than the training run they describe
            log.warning("metrics endpoint %s:%d not started: %s", address, port, exc)
            return
        log.info("metrics on http://%s:%d/metrics", address, port)
