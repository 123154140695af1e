"""Manifests of the serving side, as plain dicts: ModelVersions, version Deployments, the Service.

Each served version of a model is its own Deployment, `<model>-v<version>`, running the bundled
model server over that version's artifact (mounted read-only). One Service, `<model>`, selects
the pods of exactly one version; switching traffic is one patch of its selector.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from torchyard import labels
from torchyard.api import modelversion as mv_api
from torchyard.api.modeldeployment import ModelDeployment
from torchyard.api.modelversion import ModelVersion, version_name
from torchyard.api.trainingjob import TrainingJob
from torchyard.builders import names
from torchyard.builders.env import storage_secret_env
from torchyard.builders.pods import DATA_MOUNT, DATA_VOLUME
from torchyard.builders.security import container_security_context, pod_security_context
from torchyard.settings import Settings
from torchyard_spec import contract

CONTAINER = "server"
SERVER_COMMAND = ("python", "-m", "torchyard_trainer.serve")
SERVICE_PORT = 80
TEMPLATE_HASH = "torchyard.dev/template-hash"
ARTIFACT_SHA256 = "torchyard.dev/artifact-sha256"
DISTILLATION_FIELD = "spec.trainer.compression.distillation.teacher.modelVersion"


# --- ModelVersion ---------------------------------------------------------------------------------


def teacher_of(job: TrainingJob) -> tuple[str | None, str | None]:
    """(teacher ModelVersion name, teacher path) of a job's parsed distillation settings, either may be None."""
    settings = job.spec.trainer_settings
    distillation = settings.compression.distillation if settings is not None else None
    if distillation is None:
        return None, None
    return distillation.teacher_model_version or None, distillation.teacher_path or None


def with_teacher_path(trainer: Mapping[str, Any], path: str) -> dict:
    """The trainer settings with the teacher ModelVersion replaced by its artifact path (what the trainer reads)."""
    config = copy.deepcopy(dict(trainer))
    distillation = config["compression"]["distillation"]
    distillation.pop("teacher", None)
    distillation["teacherPath"] = path
    return config


def build_model_version(job: TrainingJob, result: Mapping[str, Any], version: int) -> dict:
    """The ModelVersion for a succeeded job's result (the trainer's JSON). No owner: it outlives the job."""
    model = names.model_name(job)
    metrics = {k: v for k, v in (result.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metric = result.get("metric") or next(iter(sorted(metrics)), "")
    artifact = dict(result.get("artifact") or {})
    teacher_version, teacher_path = teacher_of(job)
    spec: dict[str, Any] = {
        "modelName": model,
        "version": version,
        "artifact": _drop_none({"path": artifact.get("path"), "sha256": artifact.get("sha256"),
                                "claimName": job.spec.storage.claim_name}),
        "metrics": metrics,
        "metric": metric,
        "lineage": _drop_none({"trainingJob": job.name, "trainingJobUID": job.uid,
                               "teacher": teacher_version or teacher_path, "compression": result.get("compression")}),
    }
    if metric in metrics:
        spec["mainMetric"] = {"name": metric, "value": metrics[metric]}
    if "steps" in result:
        spec["lineage"]["steps"] = result["steps"]
    return {
        "apiVersion": mv_api.API_VERSION,
        "kind": mv_api.KIND,
        "metadata": {
            "name": version_name(model, version),
            "namespace": job.namespace,
            "labels": {mv_api.MODEL_LABEL: model, mv_api.VERSION_LABEL: str(version),
                       mv_api.TRAINING_JOB_UID_LABEL: job.uid, labels.MANAGED_BY: labels.MANAGER},
        },
        "spec": spec,
    }


VERSION_COUNTER = "torchyard-model-versions"


def build_version_counter(namespace: str, issued: Mapping[str, int]) -> dict:
    """The ConfigMap that remembers, per model, the highest version number ever issued."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": VERSION_COUNTER, "namespace": namespace, "labels": {labels.MANAGED_BY: labels.MANAGER}},
        "data": {model: str(number) for model, number in issued.items()},
    }


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


# --- served versions --------------------------------------------------------------------------------


def selector(md: ModelDeployment, version: int) -> dict[str, str]:
    """Labels that pick exactly the pods of one served version of this deployment."""
    return {mv_api.MODEL_LABEL: md.spec.model_name, mv_api.DEPLOYMENT_LABEL: md.name, mv_api.VERSION_LABEL: str(version)}


def deployment_selector(md: ModelDeployment) -> str:
    """Label selector over every Deployment and pod of this ModelDeployment."""
    return f"{mv_api.DEPLOYMENT_LABEL}={md.name}"


def build_deployment(md: ModelDeployment, mv: ModelVersion, replicas: int, settings: Settings) -> dict:
    template = _pod_template(md, mv, settings)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": version_name(md.spec.model_name, mv.version),
            "namespace": md.namespace,
            "labels": {**selector(md, mv.version), labels.MANAGED_BY: labels.MANAGER},
            "annotations": {TEMPLATE_HASH: template_hash(template), ARTIFACT_SHA256: mv.artifact.sha256},
            "ownerReferences": [md.owner_reference()],
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector(md, mv.version)},
            # Never below the ready count during a template change: the version may be serving.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": template,
        },
    }


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def in_object_storage(mv: ModelVersion) -> bool:
    """Whether the version's artifact is at an s3:// URI rather than on a claim."""
    return mv.artifact.path.startswith(contract.S3_SCHEME)


def _pod_template(md: ModelDeployment, mv: ModelVersion, settings: Settings) -> dict:
    claim = None if in_object_storage(mv) else md.spec.claim_name or mv.artifact.claim_name
    volumes = [{"name": "tmp", "emptyDir": {}}]
    if claim:
        volumes.insert(0, {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": pod_security_context(),
        "containers": [_container(md, mv, settings, bool(claim))],
        "volumes": volumes,
    }
    if md.spec.server.node_selector:
        spec["nodeSelector"] = dict(md.spec.server.node_selector)
    if md.spec.server.tolerations:
        spec["tolerations"] = [dict(t) for t in md.spec.server.tolerations]
    return {"metadata": {"labels": {**selector(md, mv.version), labels.MANAGED_BY: labels.MANAGER}}, "spec": spec}


def _container(md: ModelDeployment, mv: ModelVersion, settings: Settings, mounted: bool) -> dict:
    server = md.spec.server
    args = ["--model-dir", mv.artifact.path, "--model-name", md.spec.model_name,
            "--model-version", str(mv.version), "--port", str(server.port)]
    if mv.artifact.sha256:
        args += ["--sha256", mv.artifact.sha256]
    if server.batching.enabled:
        args += ["--batch-max-size", str(server.batching.max_batch_size),
                 "--batch-max-wait-ms", f"{server.batching.max_wait_milliseconds:g}"]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if mounted:
        mounts.insert(0, {"name": DATA_VOLUME, "mountPath": DATA_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": server.image or settings.trainer_image,
        "imagePullPolicy": server.image_pull_policy or settings.image_pull_policy,
        "command": list(SERVER_COMMAND),
        "args": args,
        "ports": [{"name": "http", "containerPort": server.port, "protocol": "TCP"}],
        # Ready only once the artifact loaded, matched its digest and answered a self-check.
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                           "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "resources": {k: dict(v) for k, v in server.resources.items() if k in ("limits", "requests")},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if in_object_storage(mv) and md.spec.storage_secret:
        container["env"] = storage_secret_env(md.spec.storage_secret)
    return container


def deployment_update(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> dict | None:
    """The patch that brings an existing version Deployment to `desired`, or None when it matches."""
    patch: dict[str, Any] = {}
    have = (existing.get("metadata") or {}).get("annotations") or {}
    want = desired["metadata"]["annotations"]
    if have.get(TEMPLATE_HASH) != want[TEMPLATE_HASH]:
        patch = {"metadata": {"annotations": want}, "spec": {"template": desired["spec"]["template"]}}
    if (existing.get("spec") or {}).get("replicas") != desired["spec"]["replicas"]:
        patch.setdefault("spec", {})["replicas"] = desired["spec"]["replicas"]
    return patch or None


# --- the Service ------------------------------------------------------------------------------------


def build_service(md: ModelDeployment, version: int) -> dict:
    """The stable Service `<model>`, selecting the pods of `version` only."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": md.spec.model_name,
            "namespace": md.namespace,
            "labels": {mv_api.MODEL_LABEL: md.spec.model_name, mv_api.DEPLOYMENT_LABEL: md.name,
                       labels.MANAGED_BY: labels.MANAGER},
            "ownerReferences": [md.owner_reference()],
        },
        "spec": {
            "selector": selector(md, version),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def selector_patch(md: ModelDeployment, version: int) -> dict:
    """The one patch that moves traffic: every key of the selector, so it is never empty."""
    return {"spec": {"selector": selector(md, version)}}


def selected_version(service: Mapping[str, Any] | None) -> int | None:
    """The version a Service selects now, or None (no Service, or a selector without a version)."""
    if not service:
        return None
    value = ((service.get("spec") or {}).get("selector") or {}).get(mv_api.VERSION_LABEL)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
