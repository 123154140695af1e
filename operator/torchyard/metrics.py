"""Every Prometheus metric the operator exports, in one place.

Labels stay low-cardinality: namespace and phase or reason, never a job or pod name (per-job
figures live in the job's status and in the trainer's own metrics).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge(
    "torchyard_trainingjobs",
    "TrainingJobs the operator currently sees, by namespace and phase.",
    ["namespace", "phase"],
    registry=REGISTRY,
)
PHASE_TRANSITIONS = Counter(
    "torchyard_trainingjob_phase_transitions_total",
    "Times a TrainingJob entered a phase.",
    ["namespace", "phase"],
    registry=REGISTRY,
)
RESTARTS = Counter(
    "torchyard_trainingjob_restarts_total",
    "Restarts of training pods, by whose fault: user (the program failed) or infrastructure.",
    ["namespace", "cause"],
    registry=REGISTRY,
)
TIME_TO_RUNNING = Histogram(
    "torchyard_trainingjob_time_to_running_seconds",
    "From a TrainingJob's creation to all of its pods running, for the first attempt.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "torchyard_reconcile_duration_seconds",
    "Time spent in one reconcile of one object, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
RECONCILE_WAITS = Counter(
    "torchyard_reconcile_waits_total",
    "Passes that ended at once, reading and deciding nothing, because the watch had yet to show the "
    "operator's own creates and deletes for the object (not in torchyard_reconcile_duration_seconds).",
    ["kind"],
    registry=REGISTRY,
)
# A zero series from the start: waits are rare now, and a counter that appears only at its first
# increment shows no data on the dashboard, and nothing in rate() for that first one.
for _kind in ("TrainingJob", "ModelDeployment"):
    RECONCILE_WAITS.labels(_kind)
QUEUE_DEPTH = Gauge(
    "torchyard_workqueue_depth",
    "Objects waiting in a work queue for a worker (not those held for a moment or being worked on), "
    "by queue: trainingjobs or modeldeployments.",
    ["queue"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "torchyard_reconcile_errors_total",
    "Reconciles that ended in an error, by kind and error class.",
    ["kind", "error"],
    registry=REGISTRY,
)

# --- serving (operator/torchyard/serving.py) --------------------------------------------------------
# Labelled by model: a cluster serves a handful of models, and these figures are per model by nature.

MODEL_SWITCHES = Counter(
    "torchyard_model_switches_total",
    "Times a model's Service selector moved to another version, by model and reason "
    "(promotion, manual, failover, failback).",
    ["model", "reason"],
    registry=REGISTRY,
)
MODEL_GATE_REJECTIONS = Counter(
    "torchyard_model_gate_rejections_total",
    "Candidate versions of a model that the promotion gate rejected (worse metric, crash loop, "
    "failed golden request).",
    ["model"],
    registry=REGISTRY,
)
MODEL_ACTIVE_VERSION = Gauge(
    "torchyard_model_active_version",
    "The version of a model that its Service selects now.",
    ["model"],
    registry=REGISTRY,
)
MODEL_SWITCH_SECONDS = Histogram(
    "torchyard_model_switch_latency_seconds",
    "From a switch's trigger (a request seen, the active version unhealthy, a candidate ready) to "
    "the Service selector patched, by reason.",
    ["reason"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60),
    registry=REGISTRY,
)
# Each reason's series exists from the start, at zero: a series born at its first observation has
# no earlier sample, so rate() over it shows nothing for that first switch.
SWITCH_REASONS = ("promotion", "manual", "failover", "failback")
for _reason in SWITCH_REASONS:
    MODEL_SWITCH_SECONDS.labels(_reason)


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Time one reconcile of a `kind` object and count it as an error if it raises."""
    started = time.monotonic()
    try:
        yield
    except Exception as exc:
        RECONCILE_ERRORS.labels(kind, type(exc).__name__).inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)
