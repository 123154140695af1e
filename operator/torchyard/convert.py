"""`torchyard convert`: Kubeflow PyTorchJob manifests (kubeflow.org/v1) as TrainingJobs.

A PyTorchJob's Master and Worker become torchyard's one worker role: Master is rank 0 and the
rendezvous, exactly what worker 0 is in an AllReduce TrainingJob, so the Master pod becomes worker 0
and Worker i becomes worker i+1 (the same RANKs PyTorchJob gives). A field with no equivalent is
an error naming its path; a field whose meaning changes on the way (a differing default, something
dropped because torchyard does it itself) becomes a note, printed as a `# NOTE:` comment above
the converted document and as a warning. docs/pytorchjob.md has the table, field by field.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import yaml

from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import API_VERSION, KIND
from torchyard.convert_pod import Converted, known, mapping, pod_metadata, pod_role

SOURCE_API_VERSION = "kubeflow.org/v1"
SOURCE_KIND = "PyTorchJob"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MAX_NAME = 45
REPLICA_TYPES = ("Master", "Worker")
MANAGED_BY_DEFAULT = "kubeflow.org/training-operator"


def convert_documents(text: str) -> Iterator[tuple[int, str, Converted | SpecError | None]]:
    """Each YAML document's index, name and outcome: a conversion, the error that stopped it, or
    None for a document that is not a PyTorchJob (left out)."""
    for index, obj in enumerate(yaml.safe_load_all(text)):
        if obj is None:
            continue
        name = str(((obj.get("metadata") or {}).get("name")) if isinstance(obj, Mapping) else None)
        if isinstance(obj, Mapping) and obj.get("kind") != SOURCE_KIND:
            yield index, name, None
            continue
        try:
            yield index, name, convert(obj)
        except SpecError as exc:
            yield index, name, exc


def render(converted: Converted) -> str:
    """The TrainingJob as YAML, with its notes as comments above it."""
    header = f"# Converted from {SOURCE_KIND} {converted.job['metadata']['name']} by torchyard convert.\n"
    notes = "".join(f"# NOTE: {note}\n" for note in converted.notes)
    return header + notes + yaml.safe_dump(converted.job, sort_keys=False)


def convert(obj: Any) -> Converted:
    """The TrainingJob for one PyTorchJob object, or ``SpecError`` naming the first unmappable field."""
    if not isinstance(obj, Mapping):
        raise SpecError("(document)", "must be an object")
    if (obj.get("apiVersion"), obj.get("kind")) != (SOURCE_API_VERSION, SOURCE_KIND):
        raise SpecError("apiVersion", f"and kind must be {SOURCE_API_VERSION} {SOURCE_KIND}; "
                        f"got {obj.get('apiVersion')} {obj.get('kind')}")
    out = Converted({"apiVersion": API_VERSION, "kind": KIND, "metadata": _metadata(obj.get("metadata") or {})})
    spec = mapping(obj.get("spec"), "spec", required=True)
    known(spec, "spec", ("pytorchReplicaSpecs", "runPolicy", "elasticPolicy", "nprocPerNode"))
    worker, restart_policy = _replica_specs(spec, out)
    run_policy = _run_policy(mapping(spec.get("runPolicy"), "spec.runPolicy"), restart_policy, worker, out)
    _process_count(spec, worker, out)
    _elastic(mapping(spec.get("elasticPolicy"), "spec.elasticPolicy"), worker, run_policy, out)
    out.job["spec"] = {"strategy": "AllReduce", "worker": worker, "runPolicy": run_policy}
    _security_note(worker, out)
    return out


def _metadata(meta: Mapping) -> dict:
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError("metadata.name", "is required")
    if len(name) > MAX_NAME:
        raise SpecError("metadata.name", f"must be at most {MAX_NAME} characters for a TrainingJob (it names the "
                        f"pods and their hostnames); {name!r} has {len(name)}")
    out = {"name": name}
    for key in ("namespace", "labels", "annotations"):
        if meta.get(key):
            out[key] = dict(meta[key]) if key != "namespace" else meta[key]
    return out


def _replica_specs(spec: Mapping, out: Converted) -> tuple[dict, str]:
    """Master and Worker as one worker role: Master's pod is worker 0; the templates must agree."""
    path = "spec.pytorchReplicaSpecs"
    replicas = mapping(spec.get("pytorchReplicaSpecs"), path, required=True)
    known(replicas, path, REPLICA_TYPES)
    if not replicas:
        raise SpecError(path, "must have a Master or a Worker")
    roles = {kind: _replica(mapping(replicas[kind], f"{path}.{kind}"), f"{path}.{kind}", out) for kind in replicas}
    if "Master" in roles and roles["Master"][0]["replicas"] != 1:
        raise SpecError(f"{path}.Master.replicas", f"must be 1 (PyTorchJob allows one Master); got {roles['Master'][0]['replicas']}")
    if len(roles) == 2:
        _same_template(roles["Master"], roles["Worker"], path)
    role, restart = roles.get("Worker", roles.get("Master"))
    role["replicas"] = sum(r["replicas"] for r, _ in roles.values())
    return role, restart


def _same_template(master: tuple[dict, str], worker: tuple[dict, str], path: str) -> None:
    differs = _difference({**master[0], "replicas": 0}, {**worker[0], "replicas": 0}, "")
    if differs:
        raise SpecError(f"{path}.Master", f"differs from Worker in {differs} (as converted): torchyard runs the "
                        "Master as worker 0 of one worker role, so both need the same pod template")
    if master[1] != worker[1]:
        raise SpecError(f"{path}.Master.restartPolicy", f"differs from Worker's ({master[1]} against {worker[1]}): "
                        "a TrainingJob has one restartPolicy, in spec.runPolicy")


def _difference(a: Any, b: Any, path: str) -> str | None:
    """The first dotted path where two converted roles differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if a == b else path


def _replica(replica: Mapping, path: str, out: Converted) -> tuple[dict, str]:
    known(replica, path, ("replicas", "restartPolicy", "template"))
    count = replica.get("replicas", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SpecError(f"{path}.replicas", f"must be an integer of at least 1, got {count!r}")
    restart = replica.get("restartPolicy") or "OnFailure"
    if restart == "Always":
        out.note(f"{path}.restartPolicy", "Always has no equivalent (a finished rank is not restarted); OnFailure is used")
        restart = "OnFailure"
    if restart not in ("OnFailure", "ExitCode", "Never"):
        raise SpecError(f"{path}.restartPolicy", f"must be OnFailure, ExitCode, Never or Always; got {restart!r}")
    template = mapping(replica.get("template"), f"{path}.template", required=True)
    known(template, f"{path}.template", ("metadata", "spec"))
    role = {"replicas": count, **pod_role(mapping(template.get("spec"), f"{path}.template.spec", required=True),
                                      f"{path}.template.spec", out)}
    pod_metadata(mapping(template.get("metadata"), f"{path}.template.metadata"), f"{path}.template.metadata", role)
    return role, restart


def _run_policy(policy: Mapping, restart_policy: str, worker: dict, out: Converted) -> dict:
    path = "spec.runPolicy"
    known(policy, path, ("cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
                          "schedulingPolicy", "suspend", "managedBy"))
    run = {key: policy[key] for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "suspend")
           if policy.get(key) is not None}
    run["cleanPodPolicy"] = policy.get("cleanPodPolicy") or "None"
    if "cleanPodPolicy" not in policy:
        out.note(f"{path}.cleanPodPolicy", "unset in the PyTorchJob, whose default is None (keep every pod); "
                 "written as None to keep that (torchyard's own default is Running)")
    if "backoffLimit" not in policy:
        out.note(f"{path}.backoffLimit", "unset: PyTorchJob retries without a limit; torchyard's default of 3 retries applies")
    run["restartPolicy"] = restart_policy
    if restart_policy != "Never":
        out.note(f"{path}.restartPolicy", "a retry restarts every pod of the job from its newest checkpoint "
                 "(restartScope Gang), where PyTorchJob restarted only the failed pod; set restartScope: Pod for that")
    if policy.get("managedBy") not in (None, MANAGED_BY_DEFAULT):  # MultiKueue's dispatcher, for example
        run["managedBy"] = policy["managedBy"]
    _scheduling(mapping(policy.get("schedulingPolicy"), f"{path}.schedulingPolicy"), worker, run, out)
    return run


def _scheduling(policy: Mapping, worker: dict, run: dict, out: Converted) -> None:
    path = "spec.runPolicy.schedulingPolicy"
    known(policy, path, ("queue", "priorityClass", "minAvailable", "minResources", "scheduleTimeoutSeconds"))
    if policy.get("queue"):
        labels = out.job["metadata"].setdefault("labels", {})
        if labels.get(QUEUE_LABEL, policy["queue"]) != policy["queue"]:
            raise SpecError(f"{path}.queue", f"is {policy['queue']!r} but metadata.labels[{QUEUE_LABEL}] says "
                            f"{labels[QUEUE_LABEL]!r}")
        labels[QUEUE_LABEL] = policy["queue"]
        out.note(f"{path}.queue", f"became the Kueue label {QUEUE_LABEL} (torchyard queues through Kueue, not Volcano)")
    if policy.get("priorityClass"):
        worker.setdefault("template", {}).setdefault("priorityClassName", policy["priorityClass"])
    if policy.get("minAvailable") is not None:
        _gang(policy["minAvailable"], worker["replicas"], run, out)
    for key, why in (("minResources", "Kueue's quota takes its place"),
                     ("scheduleTimeoutSeconds", "the nearest is spec.runPolicy.startupDeadlineSeconds, which fails "
                      "the job when its pods do not start in time")):
        if key in policy:
            out.note(f"{path}.{key}", f"dropped: {why}")


def _gang(min_available: Any, pods: int, run: dict, out: Converted) -> None:
    """A gang request becomes torchyard's gang mode, whose gang is always the whole job."""
    path = "spec.runPolicy.schedulingPolicy.minAvailable"
    if not isinstance(min_available, int) or isinstance(min_available, bool) or min_available < 1:
        raise SpecError(path, f"must be an integer of at least 1, got {min_available!r}")
    run["gangScheduling"] = True
    whole = "" if min_available == pods else f"; its gang is every pod of the job ({pods}), not {min_available}"
    out.note(path, "became spec.runPolicy.gangScheduling: Kubernetes' own gang scheduling binds all pods or none "
             f"(the cluster must serve it, docs/gang-scheduling.md){whole}")


def _process_count(spec: Mapping, worker: dict, out: Converted) -> None:
    """spec.nprocPerNode (or the older elasticPolicy.nProcPerNode) as the role's nprocPerNode."""
    elastic = mapping(spec.get("elasticPolicy"), "spec.elasticPolicy")
    raw, path = spec.get("nprocPerNode"), "spec.nprocPerNode"
    if raw is None and elastic.get("nProcPerNode") is not None:
        raw, path = elastic["nProcPerNode"], "spec.elasticPolicy.nProcPerNode"
    if raw is None or raw == "gpu" or (raw == "auto" and worker.get("gpus")):
        return  # one process per GPU (one without GPUs): torchyard's default
    if raw == "auto":
        out.note(path, "auto on a pod without GPUs: torchrun would start one process per CPU; torchyard runs one "
                 "(set spec.worker.nprocPerNode to run more)")
        return
    try:
        count = int(str(raw))
    except ValueError:
        raise SpecError(path, f"must be a number of processes, auto or gpu; {raw!r} (one per CPU) has no "
                        "equivalent yet") from None
    if count < 1:
        raise SpecError(path, f"must be at least 1, got {count}")
    if count != worker.get("gpus"):  # equal to the GPUs: torchyard's default already
        worker["nprocPerNode"] = count
    if count > 1:
        out.note(path, "WORLD_SIZE and RANK count processes (pods times processes per pod), as torchrun does; "
                 "a script started by torchrun sees the same values as under PyTorchJob")


def _elastic(policy: Mapping, worker: dict, run_policy: dict, out: Converted) -> None:
    """A fixed-size elasticPolicy converts; a range of pods or autoscaling metrics do not."""
    path = "spec.elasticPolicy"
    known(policy, path, ("minReplicas", "maxReplicas", "rdzvBackend", "rdzvHost", "rdzvPort", "rdzvId", "rdzvConf",
                          "standalone", "nProcPerNode", "maxRestarts", "metrics"))
    if policy.get("metrics"):
        raise SpecError(f"{path}.metrics", "has no equivalent yet: torchyard does not autoscale a job")
    pods = worker["replicas"]
    for key in ("minReplicas", "maxReplicas"):
        if policy.get(key) is not None and policy[key] != pods:
            raise SpecError(f"{path}.{key}", f"has no equivalent yet: a TrainingJob runs a fixed number of pods "
                            f"({pods}); set minReplicas and maxReplicas to {pods}, or remove them")
    rendezvous = sorted(k for k in policy if k.startswith("rdzv") or k == "standalone")
    if rendezvous:
        out.note(f"{path}.{rendezvous[0]}", "dropped: torchyard gives torchrun a static rendezvous on worker 0 "
                 "(PET_MASTER_ADDR, PET_MASTER_PORT, PET_NNODES, PET_NODE_RANK)")
    if policy.get("maxRestarts") is not None:
        if "backoffLimit" in run_policy:
            out.note(f"{path}.maxRestarts", "dropped: spec.runPolicy.backoffLimit is set and counts the retries")
        else:
            run_policy["backoffLimit"] = policy["maxRestarts"]
            out.note(f"{path}.maxRestarts", "became spec.runPolicy.backoffLimit (retries of the whole job)")
            out.notes[:] = [n for n in out.notes if not n.startswith("spec.runPolicy.backoffLimit:")]


def _security_note(worker: dict, out: Converted) -> None:
    template = worker.get("template", {})
    if template.get("securityContext"):
        out.note("spec.worker.template.securityContext", "relaxes torchyard's restricted defaults; the operator "
                 "refuses it unless its administrator allows overrides (chart value security.allowSecurityContextOverrides)")
    else:
        out.note("spec.worker.template", "the pods run as user 1000 with a read-only root filesystem (writable: /tmp, "
                 "/dev/shm, /var/lib/torchyard); an image that needs root or writes elsewhere needs "
                 "template.securityContext, which the operator's administrator must allow")
