"""The model registry: ModelVersions from succeeded TrainingJobs, and teachers resolved for new ones.

Registration is idempotent. Every ModelVersion carries the uid of the job that produced it, so a
reconcile that runs again (after a crash, or a lost status write) finds the version it already
registered instead of making a second one. Version numbers are per model and never reused: each
is reserved first in a ConfigMap (`torchyard-model-versions`, model -> highest number issued),
with the API server's optimistic concurrency, so deleting the newest ModelVersion does not give
its number to the next one; a number is one more than both the highest reserved and the highest
that exists (a ModelVersion made by hand), and the next one again when another job took that
number first (the name `<model>-v<version>` makes that race safe: only one create succeeds).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import kopf

from torchyard.api import modelversion as mv_api
from torchyard.api.errors import SpecError
from torchyard.api.modelversion import parse_model_version
from torchyard.api.trainingjob import TrainingJob
from torchyard.builders import names
from torchyard.builders.serving import (DISTILLATION_FIELD, VERSION_COUNTER, build_model_version, build_version_counter,
                                        teacher_of, with_teacher_path)
from torchyard.kube.client import Conflict, Kube
from torchyard_spec import contract

log = logging.getLogger(__name__)
# Registrations that lose the race for a version number this many times in a row give up for now;
# the next reconcile of the job tries again.
MAX_ATTEMPTS = 10


class ModelRegistry:
    def __init__(self, kube: Kube):
        self.kube = kube

    def trainer_config(self, job: TrainingJob) -> dict[str, Any]:
        """spec.trainer as the trainer should see it: a teacher ModelVersion becomes its artifact path.

        Raises ``SpecError`` naming the field when the teacher does not exist or its artifact is
        not on the job's storage claim, or in object storage while the job names no store's Secret
        (the pods could not read it).
        """
        teacher, _ = teacher_of(job)
        if not teacher:
            return dict(job.spec.trainer)
        obj = self.kube.get_model_version(job.namespace, teacher)
        if obj is None:
            raise SpecError(DISTILLATION_FIELD, f"names ModelVersion {teacher!r}, which does not exist in namespace {job.namespace}")
        artifact = parse_model_version(obj).artifact
        claim = job.spec.storage.claim_name
        if artifact.claim_name and artifact.claim_name != claim:
            raise SpecError(DISTILLATION_FIELD, f"names ModelVersion {teacher!r}, whose artifact is on claim "
                                                f"{artifact.claim_name!r}; spec.storage.claimName is {claim!r}")
        if artifact.path.startswith(contract.S3_SCHEME) and not job.spec.storage.secret_name:
            raise SpecError(DISTILLATION_FIELD, f"names ModelVersion {teacher!r}, whose artifact is in object storage "
                                                f"({artifact.path}); the pods reach it only with spec.storage.uri and "
                                                "spec.storage.secretName naming that store's Secret")
        return with_teacher_path(job.spec.trainer, artifact.path)

    def register(self, job: TrainingJob, result: Mapping[str, Any]) -> str:
        """The name of the job's ModelVersion, created now unless it exists already."""
        existing = self.kube.list_model_versions(job.namespace, f"{mv_api.TRAINING_JOB_UID_LABEL}={job.uid}")
        if existing:
            return existing[0]["metadata"]["name"]
        model = names.model_name(job)
        version = self._reserve(job.namespace, model, self._highest(job.namespace, model) + 1)
        for _ in range(MAX_ATTEMPTS):
            manifest = build_model_version(job, result, version)
            created = self.kube.create_model_version(manifest)
            if created:
                name = manifest["metadata"]["name"]
                self._mark_registered(job, name, created)
                log.info("registered %s/%s from TrainingJob %s", job.namespace, name, job.name)
                return name
            version = self._reserve(job.namespace, model, max(version, self._highest(job.namespace, model)) + 1)
        raise RegistryBusy(f"could not find a free version number for model {model} after {MAX_ATTEMPTS} attempts")

    def _mark_registered(self, job: TrainingJob, name: str, created: str) -> None:
        """`Registered`, unless the version was judged between its create and this write: a
        ModelDeployment watching the model reacts to the create at once, and its verdict
        (Rejected, Active) says more. Hence the write is conditional on the create's
        resourceVersion; a status-less version after a conflict still gets its phase."""
        status = {"phase": mv_api.REGISTERED, "reason": "Registered", "message": f"registered from TrainingJob {job.name}"}
        try:
            self.kube.patch_model_version_status(job.namespace, name, status, resource_version=created)
        except Conflict:
            current = self.kube.get_model_version(job.namespace, name)
            if current is not None and not (current.get("status") or {}).get("phase"):
                self.kube.patch_model_version_status(job.namespace, name, status)

    def _reserve(self, namespace: str, model: str, at_least: int) -> int:
        """A version number of `model` that was never issued, at least `at_least`, recorded as
        issued before it is used (a crash in between leaves a gap, never a reuse)."""
        for _ in range(MAX_ATTEMPTS):
            counter = self.kube.get_config_map(namespace, VERSION_COUNTER)
            issued = {k: int(v) for k, v in ((counter or {}).get("data") or {}).items() if str(v).isdigit()}
            number = max(issued.get(model, 0) + 1, at_least)
            issued[model] = number
            if counter is None:
                taken = self.kube.create_config_map(build_version_counter(namespace, issued))
            else:
                updated = build_version_counter(namespace, issued)
                updated["metadata"]["resourceVersion"] = counter["metadata"].get("resourceVersion")
                taken = self.kube.replace_config_map(namespace, VERSION_COUNTER, updated)
            if taken:
                return number
        raise RegistryBusy(f"could not reserve a version number for model {model} after {MAX_ATTEMPTS} attempts")

    def _highest(self, namespace: str, model: str) -> int:
        # By spec, not label: a ModelVersion made by hand may carry no labels.
        specs = [i.get("spec") or {} for i in self.kube.list_model_versions(namespace, "")]
        return max((int(s.get("version") or 0) for s in specs if s.get("modelName") == model), default=0)

    def record(self, obj: dict, job: TrainingJob, status: dict) -> None:
        """After a job succeeded: register its model once and name the version in status.result."""
        result = status.get("result") or {}
        if status.get("phase") != "Succeeded" or result.get("modelVersion"):
            return
        if not (result.get("artifact") or {}).get("path"):
            return  # a custom script that reported no artifact: nothing to register
        name = self.register(job, result)
        result = {**result, "modelVersion": name}
        status["result"] = result
        self.kube.patch_job_status(job.namespace, job.name, {"result": result})
        self.kube.emit_event(obj, "Normal", "ModelRegistered", f"registered the trained model as ModelVersion {name}")


class RegistryBusy(kopf.TemporaryError):
    """Every version number tried was taken by a concurrent registration; the next reconcile retries."""
