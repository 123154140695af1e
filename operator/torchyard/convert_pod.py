"""A PyTorchJob replica's pod template as the fields of a TrainingJob role (see torchyard.convert).

Placement (nodeSelector, tolerations, affinity), GPUs and resources go to the role's top level;
the container, pull secrets, volumes, pod labels and security overrides under its template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import RESERVED_KEY_PREFIXES, RESERVED_LABELS

GPU = "nvidia.com/gpu"
# Volumes and mount paths the operator gives every pod itself.
OWN_VOLUMES = ("torchyard-data", "tmp", "dshm")
OWN_MOUNTS = ("/var/lib/torchyard", "/tmp", "/dev/shm")
SECURITY_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem")
# Fields dropped with a note: torchyard sets them itself, or operator-wide.
DROPPED_POD_FIELDS = {
    "restartPolicy": "the operator sets the pods' restartPolicy (Never) and retries by spec.runPolicy",
    "schedulerName": "pods use the default scheduler; torchyard has no per-job scheduler name",
}
DROPPED_CONTAINER_FIELDS = {
    "name": None,
    "ports": "the operator opens 23456 (rendezvous, MASTER_PORT) and 9090 (metrics) itself",
    "imagePullPolicy": "the pull policy is the operator's setting (chart value trainer.image.pullPolicy)",
}


@dataclass
class Converted:
    """One TrainingJob, and what the user should know about how it differs from its PyTorchJob."""

    job: dict
    notes: list[str] = field(default_factory=list)

    def note(self, path: str, message: str) -> None:
        """Record a note once: Master's and Worker's identical templates would repeat it."""
        if f"{path.replace('.Worker.', '.Master.')}: {message}" not in self.notes:
            self.notes.append(f"{path}: {message}")


def mapping(value: Any, path: str, required: bool = False) -> dict:
    """The object at ``path`` (empty when absent), or ``SpecError`` when it is not one."""
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, got {type(value).__name__}")
    return dict(value)


def known(data: Mapping, path: str, allowed: tuple[str, ...]) -> None:
    """Refuse the first field that is neither mapped nor dropped with a note."""
    for key in data:
        if key not in allowed:
            raise SpecError(f"{path}.{key}", "has no equivalent in a TrainingJob yet")


def pod_metadata(meta: Mapping, path: str, role: dict) -> None:
    known(meta, path, ("labels", "annotations"))
    found = {}
    for key in ("labels", "annotations"):
        values = mapping(meta.get(key), f"{path}.{key}")
        for name in values:
            if name.startswith(RESERVED_KEY_PREFIXES) or (key == "labels" and name in RESERVED_LABELS):
                raise SpecError(f"{path}.{key}", f"must not set {name!r}: the operator and the queue set that key")
        if values:
            found[key] = values
    if found:
        role.setdefault("template", {})["metadata"] = found


def pod_role(pod: Mapping, path: str, out: Converted) -> dict:
    """A role from the pod spec: placement at the role's top level, the rest under template."""
    known(pod, path, ("containers", "nodeSelector", "tolerations", "affinity", "volumes", "imagePullSecrets",
                       "serviceAccountName", "priorityClassName", "securityContext", *DROPPED_POD_FIELDS))
    for key, why in DROPPED_POD_FIELDS.items():
        if key in pod:
            out.note(f"{path}.{key}", f"dropped: {why}")
    role: dict = {key: pod[key] for key in ("nodeSelector", "tolerations", "affinity") if key in pod}
    template, gpus, resources = _container(_one_container(pod, path), f"{path}.containers[0]", out)
    if gpus:
        role["gpus"] = gpus
    if resources:
        role["resources"] = resources
    for key in ("imagePullSecrets", "serviceAccountName", "priorityClassName"):
        if pod.get(key):
            template[key] = pod[key]
    _pod_security(mapping(pod.get("securityContext"), f"{path}.securityContext"), f"{path}.securityContext", template, out)
    _volumes(list(pod.get("volumes") or []), path, template, out)
    role["template"] = template
    return role


def _one_container(pod: Mapping, path: str) -> dict:
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise SpecError(f"{path}.containers", "must list the training container")
    if len(containers) > 1:
        raise SpecError(f"{path}.containers[1]", "has no equivalent yet: a TrainingJob pod runs one container "
                        "(sidecar containers are not supported)")
    return mapping(containers[0], f"{path}.containers[0]")


def _container(container: Mapping, path: str, out: Converted) -> tuple[dict, int, dict]:
    """The role's template, its GPUs and its other resources, from the training container."""
    known(container, path, ("image", "command", "args", "env", "resources", "volumeMounts", "securityContext",
                             *DROPPED_CONTAINER_FIELDS))
    for key, why in DROPPED_CONTAINER_FIELDS.items():
        if key in container and why:
            out.note(f"{path}.{key}", f"dropped: {why}")
    if not container.get("image"):
        raise SpecError(f"{path}.image", "is required")
    template = {"image": container["image"]}
    for key in ("command", "args", "env", "volumeMounts"):
        if container.get(key):
            template[key] = list(container[key])
    _container_security(mapping(container.get("securityContext"), f"{path}.securityContext"), f"{path}.securityContext", template)
    gpus, resources = _resources(mapping(container.get("resources"), f"{path}.resources"), f"{path}.resources")
    return template, gpus, resources


def _resources(resources: Mapping, path: str) -> tuple[int, dict]:
    """GPUs become the role's gpus; other limits and requests stay as they are."""
    known(resources, path, ("limits", "requests"))
    gpus, out = 0, {}
    for kind in ("limits", "requests"):
        values = dict(mapping(resources.get(kind), f"{path}.{kind}"))
        if GPU in values:
            count = values.pop(GPU)
            try:
                gpus = max(gpus, int(str(count)))
            except ValueError:
                raise SpecError(f"{path}.{kind}.{GPU}", f"must be a whole number of GPUs, got {count!r}") from None
        if values:
            out[kind] = values
    return gpus, out


def _container_security(context: Mapping, path: str, template: dict) -> None:
    for key in context:
        if key not in SECURITY_FIELDS:
            raise SpecError(f"{path}.{key}", f"has no equivalent yet; a TrainingJob may set only {', '.join(SECURITY_FIELDS)}")
    if context:
        template["securityContext"] = {**template.get("securityContext", {}), **context}


def _pod_security(context: Mapping, path: str, template: dict, out: Converted) -> None:
    """The pod's user and group apply to the training container; fsGroup is the operator's."""
    for key in context:
        if key == "fsGroup":
            out.note(f"{path}.fsGroup", "dropped: the operator sets fsGroup 1000 so the pods can write their volumes")
        elif key not in ("runAsUser", "runAsGroup", "runAsNonRoot"):
            raise SpecError(f"{path}.{key}", "has no equivalent yet; a TrainingJob may set only runAsUser, runAsGroup "
                            "and runAsNonRoot (with readOnlyRootFilesystem on the container)")
    pod_level = {k: v for k, v in context.items() if k != "fsGroup"}
    if pod_level:
        # The container's own settings win over the pod's, as in Kubernetes.
        template["securityContext"] = {**pod_level, **template.get("securityContext", {})}


def _volumes(volumes: list, path: str, template: dict, out: Converted) -> None:
    """Volumes pass through, except an emptyDir at /dev/shm: every torchyard pod has one."""
    mounts = template.get("volumeMounts", [])
    for index, volume in enumerate(volumes):
        name = mapping(volume, f"{path}.volumes[{index}]").get("name")
        at = [m.get("mountPath") for m in mounts if m.get("name") == name]
        if "emptyDir" in volume and set(at) <= {"/dev/shm"} and (at or name == "dshm"):
            out.note(f"{path}.volumes[{index}]", "dropped: the operator mounts a memory-backed /dev/shm in every pod")
            mounts = [m for m in mounts if m.get("name") != name]
            continue
        if name in OWN_VOLUMES:
            raise SpecError(f"{path}.volumes[{index}].name", f"{name!r} is the operator's own volume; rename it")
        template.setdefault("volumes", []).append(dict(volume))
    for index, mount in enumerate(mounts):
        if mount.get("mountPath") in OWN_MOUNTS:
            raise SpecError(f"{path}.containers[0].volumeMounts[{index}].mountPath",
                            f"{mount['mountPath']} is mounted by the operator itself; choose another path")
    if mounts:
        template["volumeMounts"] = mounts
    else:
        template.pop("volumeMounts", None)
