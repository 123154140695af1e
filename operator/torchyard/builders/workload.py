"""The Kueue Workload that stands for one queued TrainingJob (docs/kueue.md).

Kueue admits Workloads, not TrainingJobs: the operator describes its job to Kueue as one Workload
with one pod set per role, each counting that role's pods with the requests its pods will really
make (taken from the pod the builder would create, so quota and pods cannot disagree), and owned
by the job so that deleting the job deletes it. Kueue admits all pod sets together or none, which
is what makes the job one unit against the quota.
"""

from __future__ import annotations

from typing import Any

from torchyard import labels as keys
from torchyard.api.trainingjob import TrainingJob
from torchyard.builders.pods import build_pod
from torchyard.builders.strategies import strategy_for
from torchyard.settings import Settings

API_VERSION = "kueue.x-k8s.io/v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# What a pod set's template keeps of a pod: what Kueue reads to count quota and pick a flavor.
TEMPLATE_SPEC_KEYS = ("nodeSelector", "tolerations", "affinity", "priorityClassName")
CONTAINER_KEYS = ("name", "image", "resources")


def workload_name(job: TrainingJob) -> str:
    """One Workload per job, named after it (a Workload name may be 253 characters)."""
    return f"trainingjob-{job.name}"


def queue_name(job: TrainingJob) -> str | None:
    return job.labels.get(QUEUE_LABEL) or None


def priority_class(job: TrainingJob) -> str | None:
    """The WorkloadPriorityClass the job's label names (Kueue's own label for it)."""
    return job.labels.get(PRIORITY_LABEL) or None


def build_workload(job: TrainingJob, settings: Settings, priority: int | None = None) -> dict:
    """The Workload for `job`, which must carry the queue label; `priority` is the value of its
    WorkloadPriorityClass (Kueue's API requires it beside the reference; its job integrations
    copy it in the same way)."""
    spec: dict[str, Any] = {"queueName": queue_name(job), "podSets": pod_sets(job, settings)}
    if priority_class(job):
        spec["priorityClassRef"] = {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass",
                                    "name": priority_class(job)}
        spec["priority"] = priority
    return {
        "apiVersion": API_VERSION, "kind": "Workload",
        "metadata": {"name": workload_name(job), "namespace": job.namespace,
                     "labels": {keys.JOB_NAME: job.name, keys.MANAGED_BY: keys.MANAGER},
                     "ownerReferences": [job.owner_reference()]},
        "spec": spec,
    }


def pod_sets(job: TrainingJob, settings: Settings) -> list[dict]:
    """One pod set per role, in rank order, named as the role's pods are (worker, ps)."""
    return [{"name": role.name, "count": role.spec.replicas,
             "template": _template(build_pod(job, role, 0, 0, settings))}
            for role in strategy_for(job.spec).roles(job.spec)]


def _template(pod: dict) -> dict:
    spec = {k: pod["spec"][k] for k in TEMPLATE_SPEC_KEYS if k in pod["spec"]}
    spec["containers"] = [{k: c[k] for k in CONTAINER_KEYS if k in c} for c in pod["spec"]["containers"]]
    return {"spec": spec}
