"""Kubernetes' own gang scheduling, as the objects the operator writes: the one module that knows its API.

A job in gang mode (spec.runPolicy.gangScheduling) gets one Workload with one pod group whose
minCount is every pod of the job, and each pod names that group; the kube-scheduler's
GangScheduling plugin then holds the pods it could place at its Permit stage until the whole group
can be placed, and binds them together or none of them.

The API is alpha and changes shape between minors: Kubernetes 1.35 serves
scheduling.k8s.io/v1alpha1 Workload (spec.podGroups[].policy.gang.minCount) and a pod's
spec.workloadRef; 1.36 replaced both (v1alpha2 Workload with podGroupTemplates, a separate
PodGroup object, a pod's schedulingGroup). This module targets 1.35 (docs/gang-scheduling.md says
why); moving to another version changes this file and nothing else.
"""

from __future__ import annotations

from typing import Any, Mapping

from torchyard import labels
from torchyard.api.trainingjob import API_VERSION, GROUP as JOB_GROUP, KIND as JOB_KIND, TrainingJob
from torchyard.builders.strategies import strategy_for

GROUP = "scheduling.k8s.io"
VERSION = "v1alpha1"
PLURAL = "workloads"
KIND = "Workload"
POD_GROUP = "gang"
POD_FIELD = "workloadRef"  # what links a pod to its gang (in the pod's spec)
# What a cluster administrator turns on for it, named where a job asks for gang mode and cannot have it.
REQUIREMENT = (f"the {GROUP}/{VERSION} Workload API (Kubernetes 1.35 with feature gates GenericWorkload and "
               f"GangScheduling on the API server and the scheduler, and --runtime-config={GROUP}/{VERSION}=true)")


def workload_name(job_name: str) -> str:
    return job_name


def gang_size(job: TrainingJob) -> int:
    """Every pod of the job: the gang is placed whole or not at all."""
    return sum(role.spec.replicas for role in strategy_for(job.spec).roles(job.spec))


def build_workload(job: TrainingJob) -> dict:
    """The job's Workload, owned by the job so that garbage collection removes it with the job."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": workload_name(job.name),
            "namespace": job.namespace,
            "labels": {labels.JOB_NAME: job.name, labels.MANAGED_BY: labels.MANAGER},
            "ownerReferences": [job.owner_reference()],
        },
        "spec": {
            "controllerRef": {"apiGroup": JOB_GROUP, "kind": JOB_KIND, "name": job.name},
            "podGroups": [{"name": POD_GROUP, "policy": {"gang": {"minCount": gang_size(job)}}}],
        },
    }


def link_pod(pod_spec: dict, job: TrainingJob) -> None:
    """Make a pod a member of its job's gang."""
    pod_spec[POD_FIELD] = {"name": workload_name(job.name), "podGroup": POD_GROUP}


def same_gang(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a Workload found in the cluster still describes the job's gang. Its pod groups are
    immutable, so one that differs (the job's replica counts changed) is replaced, not patched."""
    return (existing.get("spec") or {}).get("podGroups") == desired["spec"]["podGroups"]


def owned_by(existing: Mapping[str, Any], job: TrainingJob) -> bool:
    """Whether a Workload of the job's name is this job's own (not one a user or an older job of
    the same name left)."""
    refs = (existing.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("apiVersion") == API_VERSION and r.get("uid") == job.uid for r in refs)
