"""Kueue for the job reconcile: the pure gate (reconcile/kueue.py) joined to Kueue's API.

Used only when the operator runs with `--kueue`, and only for jobs that carry the queue label
(docs/kueue.md). Before the pass decides, it makes or repairs the job's Workload, gives back an
evicted job's quota once its pods are gone, and reports a finished job; the job then reaches
`decide` held (as if suspended) unless its Workload is admitted. When pods are made, the admitted
flavors' node labels and tolerations are added to them.
"""

from __future__ import annotations

import logging
from datetime import datetime

import kopf

from torchyard.api.trainingjob import TrainingJob
from torchyard.builders.workload import (PRIORITY_LABEL, build_workload, pod_sets, priority_class, queue_name,
                                         workload_name)
from torchyard.kube.client import Kube
from torchyard.kube.kueue import FlavorStore, KueueApi, WorkloadStore
from torchyard.reconcile import kueue
from torchyard.settings import Settings

log = logging.getLogger(__name__)


class Queueing:
    def __init__(self, api: KueueApi, settings: Settings):
        self.api, self.settings = api, settings

    def admit(self, job: TrainingJob, previous: dict, live_pods: int,
              now: datetime) -> tuple[TrainingJob, kueue.Gate | None]:
        """The job as this pass should treat it (held, or placed on its admitted flavors) and the
        gate that says why; the job itself and None when it is not queued."""
        if queue_name(job) is None:
            return job, None
        decision = self._gate(job, previous, live_pods, now)
        if decision.hold:
            return kueue.held(job), decision
        return kueue.placed(job, self._flavors(decision), self.settings), decision

    def _gate(self, job: TrainingJob, previous: dict, live_pods: int, now: datetime) -> kueue.Gate:
        workload = self.api.store.get(job.namespace, job.name)
        decision = kueue.gate(job, previous.get("phase") or "", workload, pod_sets(job, self.settings),
                              live_pods, now)
        where = f"TrainingJob {job.namespace}/{job.name}"
        if decision.create:
            log.info("%s: creating Kueue Workload %s", where, workload_name(job))
            self.api.create_workload(build_workload(job, self.settings, self._priority(job)))
        if decision.delete:
            log.info("%s: deleting Kueue Workload %s (%s)", where, workload_name(job), decision.message)
            self.api.delete_workload(workload)
        if decision.workload_status is not None:
            log.info("%s: updating Kueue Workload %s status (%s)", where, workload_name(job),
                     decision.reason or "finished")
            self.api.patch_workload_status(workload, decision.workload_status)
        return decision

    def _priority(self, job: TrainingJob) -> int | None:
        name = priority_class(job)
        if name is None:
            return None
        value = self.api.priority_value(name)
        if value is None:  # retried with backoff; lasting, it shows as the job's Stalled condition
            raise kopf.TemporaryError(f"metadata.labels[{PRIORITY_LABEL}] names WorkloadPriorityClass {name}, "
                                      "which does not exist", delay=5)
        return value

    def _flavors(self, decision: kueue.Gate) -> dict[str, list[dict]]:
        """The admitted ResourceFlavors of each pod set (role), as the watch shows them."""
        missing = sorted({n for names in decision.flavors.values() for n in names if self.api.flavors.get(n) is None})
        if missing:  # pods made now would miss their placement: go again once the watch shows them
            raise kopf.TemporaryError(f"admitted Kueue ResourceFlavor {', '.join(missing)} not seen yet", delay=1)
        return {role: [self.api.flavors.get(n) for n in names] for role, names in decision.flavors.items()}


def start_queueing(kube: Kube, settings: Settings, namespaces: list[str] | None) -> Queueing:
    """Kueue's side of the operator, its stores seeded from full listings (the watches follow)."""
    api = KueueApi(kube, WorkloadStore(), FlavorStore())
    for namespace in namespaces or [None]:
        api.relist(namespace)
    return Queueing(api, settings)
