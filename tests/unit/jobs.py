"""Small builders of TrainingJob objects and observed pods for table-driven unit tests."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from torchyard.api.trainingjob import parse_training_job
from torchyard.reconcile.observe import PodView

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
UID = "1f0e8a3c-5b7d-4c1e-9f00-123456789abc"

ALLREDUCE_CPU = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "digits", "namespace": "ml", "uid": UID, "generation": 1},
    "spec": {
        "strategy": "AllReduce",
        "worker": {"replicas": 2},
        "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 20},
    },
}

ALLREDUCE_GPU = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "resnet", "namespace": "ml", "uid": UID, "generation": 1},
    "spec": {
        "strategy": "AllReduce",
        "worker": {"replicas": 2, "gpus": 4, "resources": {"requests": {"cpu": "8", "memory": "32Gi"}}},
        "trainer": {"model": {"name": "cnn"}, "dataset": {"name": "digits"}},
        "storage": {"claimName": "training-data"},
    },
}

PARAMETER_SERVER = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "ps", "namespace": "ml", "uid": UID, "generation": 1},
    "spec": {
        "strategy": "ParameterServer",
        "parameterServer": {"replicas": 2},
        "worker": {"replicas": 3},
        "trainer": {"parameterServer": {"mode": "Async", "maxStaleness": 2}},
        "modelName": "digits-classifier",
    },
}


def job(base: dict = ALLREDUCE_CPU, **run_policy):
    obj = copy.deepcopy(base)
    if run_policy:
        obj["spec"]["runPolicy"] = run_policy
    return parse_training_job(obj)


def pod(role: str, index: int, phase: str = "Running", *, job_name: str = "digits", attempt: int = 0,
        exit_code: int | None = None, reason: str = "", message: str = "", ready: bool | None = None,
        deleting_since: datetime | None = None, waiting: str = "", unschedulable: str = "") -> PodView:
    if phase == "Failed" and exit_code is None and not reason:
        exit_code = 1
    return PodView(
        name=f"{job_name}-{role}-{index}", uid=f"uid-{role}-{index}-{attempt}", role=role, index=index,
        attempt=attempt, phase=phase, ready=phase == "Running" if ready is None else ready,
        deleting=deleting_since is not None,
        deletion_deadline=deleting_since + timedelta(seconds=30) if deleting_since else None,
        exit_code=exit_code, reason=reason or ("Error" if exit_code else ""), message=message,
        waiting_reason=waiting, unschedulable=unschedulable, node="node-1" if phase != "Pending" else "",
    )
