"""Names of the objects a job owns. Stable across restarts, so DNS names never change."""

from __future__ import annotations

from torchyard.api.trainingjob import TrainingJob


def pod_name(job_name: str, role: str, index: int) -> str:
    return f"{job_name}-{role}-{index}"


def service_name(job_name: str) -> str:
    return job_name


def pod_address(job: TrainingJob, role: str, index: int) -> str:
    """DNS name of a pod behind the job's headless Service."""
    return f"{pod_name(job.name, role, index)}.{service_name(job.name)}.{job.namespace}.svc"


def run_id(job: TrainingJob) -> str:
    """The job's name plus a piece of its uid: a new job of the same name never reuses files."""
    return f"{job.name}-{job.uid[:8]}" if job.uid else job.name


def model_name(job: TrainingJob) -> str:
    return job.spec.model_name or job.name
