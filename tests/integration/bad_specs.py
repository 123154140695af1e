"""A table of malformed TrainingJobs and the clear answer each must get.

``APPLY``: `kubectl apply` refuses it, naming the field (schema, CEL or strict field validation).
``OPERATOR``: the API server stores it, and the operator fails the job (phase Failed, reason
InvalidSpec) with a message naming the field, because only the operator can see the problem: a
bundled name the trainer does not know, a teacher that does not exist, or a pod the API server
refuses once it is built. Used by tests/integration/test_bad_specs.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

APPLY = "apply"
OPERATOR = "operator"


@dataclass(frozen=True)
class Case:
    id: str
    spec: dict[str, Any]
    field: str  # what the answer must name
    where: str  # APPLY or OPERATOR
    name: str | None = None  # metadata.name, when the case is about the name
    extra: tuple[str, ...] = field(default_factory=tuple)  # more words the answer must contain


def trainer(**settings: Any) -> dict:
    return {"worker": {}, "trainer": settings}


def worker(**role: Any) -> dict:
    return {"worker": role}


def template(**overrides: Any) -> dict:
    return {"worker": {"template": overrides}}


def ps(**role: Any) -> dict:
    return {"strategy": "ParameterServer", "worker": {}, "parameterServer": role}


CASES = [
    # types, enums and ranges of the job itself
    Case("no-worker", {"strategy": "AllReduce"}, "spec.worker", APPLY),
    Case("replicas-zero", worker(replicas=0), "spec.worker.replicas", APPLY),
    Case("replicas-huge", worker(replicas=100000), "spec.worker.replicas", APPLY),
    Case("replicas-string", worker(replicas="2"), "spec.worker.replicas", APPLY),
    Case("gpus-negative", worker(gpus=-1), "spec.worker.gpus", APPLY),
    Case("gpus-huge", worker(gpus=1000), "spec.worker.gpus", APPLY),
    Case("strategy-unknown", {"strategy": "Ring", "worker": {}}, "spec.strategy", APPLY),
    Case("ps-missing", {"strategy": "ParameterServer", "worker": {}}, "spec.parameterServer", APPLY),
    Case("ps-forbidden", {"strategy": "AllReduce", "worker": {}, "parameterServer": {}}, "spec.parameterServer", APPLY),
    Case("ps-replicas-zero", ps(replicas=0), "spec.parameterServer.replicas", APPLY),
    Case("restart-policy", {"worker": {}, "runPolicy": {"restartPolicy": "Always"}}, "spec.runPolicy.restartPolicy", APPLY),
    Case("backoff-negative", {"worker": {}, "runPolicy": {"backoffLimit": -1}}, "spec.runPolicy.backoffLimit", APPLY),
    Case("deadline-zero", {"worker": {}, "runPolicy": {"activeDeadlineSeconds": 0}},
         "spec.runPolicy.activeDeadlineSeconds", APPLY),
    Case("clean-pod-policy", {"worker": {}, "runPolicy": {"cleanPodPolicy": "Some"}}, "spec.runPolicy.cleanPodPolicy", APPLY),
    Case("misspelled-field", worker(replica=2), "spec.worker.replica", APPLY),
    Case("image-empty", {"worker": {}, "image": ""}, "spec.image", APPLY),
    # names and paths that become object names, hostnames and mounts
    Case("name-too-long", {"worker": {}}, "metadata.name", APPLY, name="a" * 50),
    Case("name-not-a-label", {"worker": {}}, "metadata.name", APPLY, name="team.job"),
    Case("model-name-not-a-label", {"worker": {}, "modelName": "My Model"}, "spec.modelName", APPLY),
    Case("model-name-too-long", {"worker": {}, "modelName": "m" * 60}, "spec.modelName", APPLY),
    Case("claim-name", {"worker": {}, "storage": {"claimName": "Bad Claim"}}, "spec.storage.claimName", APPLY),
    Case("checkpoint-dir-relative", {"worker": {}, "storage": {"checkpointDir": "ckpt"}}, "spec.storage.checkpointDir", APPLY),
    Case("storage-uri-not-s3", {"worker": {}, "storage": {"uri": "gs://models/a", "secretName": "s3"}},
         "spec.storage.uri", APPLY),
    Case("storage-uri-and-claim", {"worker": {}, "storage": {"uri": "s3://models/a", "secretName": "s3",
                                                             "claimName": "data"}}, "spec.storage.uri", APPLY),
    Case("storage-uri-without-secret", {"worker": {}, "storage": {"uri": "s3://models/a"}},
         "spec.storage.secretName", APPLY),
    Case("storage-secret-without-uri", {"worker": {}, "storage": {"secretName": "s3"}}, "spec.storage.secretName", APPLY),
    # quantities and the pod template
    Case("quantity-word", worker(resources={"limits": {"cpu": "two"}}), "spec.worker.resources.limits.cpu", APPLY),
    Case("quantity-unit", worker(resources={"requests": {"memory": "1GB"}}), "spec.worker.resources.requests.memory", APPLY),
    Case("node-selector-string", worker(nodeSelector="gpu"), "spec.worker.nodeSelector", APPLY),
    Case("toleration-operator", worker(tolerations=[{"key": "a", "operator": "Maybe"}]),
         "spec.worker.tolerations[0].operator", APPLY),
    Case("nproc-zero", worker(nprocPerNode=0), "spec.worker.nprocPerNode", APPLY),
    Case("pod-label-reserved", template(metadata={"labels": {"torchyard.dev/role": "x"}}),
         "spec.worker.template.metadata.labels", APPLY),
    Case("pod-annotation-reserved", template(metadata={"annotations": {"kueue.x-k8s.io/queue-name": "q"}}),
         "spec.worker.template.metadata.annotations", APPLY),
    Case("pod-label-value", template(metadata={"labels": {"team": "a b"}}), "spec.worker.template.metadata.labels.team", APPLY),
    Case("pull-secret-without-name", template(imagePullSecrets=[{}]), "spec.worker.template.imagePullSecrets[0].name", APPLY),
    Case("security-context-privileged", template(securityContext={"privileged": True}),
         "spec.worker.template.securityContext.privileged", APPLY),
    Case("command-string", template(command="python train.py"), "spec.worker.template.command", APPLY),
    Case("env-name", template(env=[{"name": "1BAD", "value": "x"}]), "spec.worker.template.env[0].name", APPLY),
    Case("mount-unknown-volume", template(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
         "spec.worker.template.volumeMounts", APPLY),
    Case("mount-relative", template(volumes=[{"name": "data", "emptyDir": {}}],
                                    volumeMounts=[{"name": "data", "mountPath": "data"}]),
         "spec.worker.template.volumeMounts[0].mountPath", APPLY),
    Case("mount-over-operator", template(volumes=[{"name": "data", "emptyDir": {}}],
                                         volumeMounts=[{"name": "data", "mountPath": "/tmp"}]),
         "spec.worker.template.volumeMounts[0].mountPath", APPLY),
    Case("volume-reserved-name", template(volumes=[{"name": "tmp", "emptyDir": {}}]),
         "spec.worker.template.volumes[0].name", APPLY),
    Case("volume-name", template(volumes=[{"name": "Bad_Name", "emptyDir": {}}]),
         "spec.worker.template.volumes[0].name", APPLY),
    # the bundled trainer's settings
    Case("epochs-zero", trainer(epochs=0), "spec.trainer.epochs", APPLY),
    Case("batch-size-string", trainer(batchSize="32"), "spec.trainer.batchSize", APPLY),
    Case("optimizer-unknown", trainer(optimizer={"name": "lamb"}), "spec.trainer.optimizer.name", APPLY),
    Case("learning-rate-zero", trainer(optimizer={"learningRate": 0}), "spec.trainer.optimizer.learningRate", APPLY),
    Case("momentum-one", trainer(optimizer={"momentum": 1.0}), "spec.trainer.optimizer.momentum", APPLY),
    Case("metric-unknown", trainer(metric="f1"), "spec.trainer.metric", APPLY),
    Case("metric-accuracy-on-regression", trainer(metric="accuracy", dataset={"name": "synthetic-regression"}),
         "spec.trainer.metric", APPLY),
    Case("metric-mse-on-digits", trainer(metric="mse", dataset={"name": "digits"}), "spec.trainer.metric", APPLY),
    Case("file-without-path", trainer(dataset={"name": "file"}), "spec.trainer.dataset.path", APPLY),
    Case("module-model-without-module", trainer(model={"name": "module"}), "spec.trainer.model.module", APPLY),
    Case("module-ref-shape", trainer(model={"name": "module", "module": "pkg.fn"}), "spec.trainer.model.module", APPLY),
    Case("test-fraction-one", trainer(dataset={"testFraction": 1.0}), "spec.trainer.dataset.testFraction", APPLY),
    Case("samples-one", trainer(dataset={"name": "synthetic-classification", "samples": 1}),
         "spec.trainer.dataset.samples", APPLY),
    Case("channels-empty", trainer(model={"name": "cnn", "channels": []}), "spec.trainer.model.channels", APPLY),
    Case("ps-mode", trainer(parameterServer={"mode": "Hogwild"}), "spec.trainer.parameterServer.mode", APPLY),
    Case("pruning-both", trainer(compression={"pruning": {"sparsity": 0.5, "threshold": 0.1}}),
         "spec.trainer.compression.pruning", APPLY),
    Case("sparsity-one", trainer(compression={"pruning": {"sparsity": 1.0}}),
         "spec.trainer.compression.pruning.sparsity", APPLY),
    Case("teacher-neither", trainer(compression={"distillation": {"alpha": 0.5}}),
         "spec.trainer.compression.distillation", APPLY),
    Case("alpha-above-one", trainer(compression={"distillation": {"teacherPath": "/m", "alpha": 1.5}}),
         "spec.trainer.compression.distillation.alpha", APPLY),
    Case("trainer-typo", trainer(epoch=3), "spec.trainer.epoch", APPLY),
    # what only the operator can see: names the trainer does not know, a missing teacher
    Case("model-unknown", trainer(model={"name": "resnet"}), "spec.trainer.model.name", OPERATOR),
    Case("dataset-unknown", trainer(dataset={"name": "imagenet"}), "spec.trainer.dataset.name", OPERATOR),
    Case("teacher-missing", trainer(compression={"distillation": {"teacher": {"modelVersion": "nobody-v1"}}}),
         "spec.trainer.compression.distillation.teacher.modelVersion", OPERATOR),
    # what this operator's administrator does not allow
    Case("security-override-not-allowed", template(securityContext={"runAsUser": 0}),
         "spec.worker.template.securityContext", OPERATOR, extra=("TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES",)),
    # ... and pods the API server refuses once they are built
    Case("resource-name", worker(resources={"limits": {"cpus": "2"}}), "spec.worker", OPERATOR, extra=("cpus",)),
    Case("request-above-limit", worker(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
         "spec.worker", OPERATOR, extra=("less than or equal to cpu limit",)),
    Case("quantity-negative", worker(resources={"limits": {"memory": "-1Gi"}}), "spec.worker", OPERATOR),
    Case("toleration-exists-with-value", worker(tolerations=[{"key": "a", "operator": "Exists", "value": "b"}]),
         "spec.worker", OPERATOR, extra=("tolerations",)),
    Case("toleration-seconds-without-noexecute",
         worker(tolerations=[{"key": "a", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]),
         "spec.worker", OPERATOR, extra=("tolerationSeconds",)),
    Case("node-selector-value", worker(nodeSelector={"pool": "not a label value!"}), "spec.worker", OPERATOR,
         extra=("nodeSelector",)),
    Case("affinity-operator", worker(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Maybe", "values": ["b"]}]}]}}}),
         "spec.worker", OPERATOR, extra=("affinity",)),
    Case("volume-two-sources", template(volumes=[{"name": "data", "emptyDir": {}, "configMap": {"name": "c"}}]),
         "spec.worker", OPERATOR, extra=("volumes",)),
    Case("sub-path-absolute", template(volumes=[{"name": "data", "emptyDir": {}}],
                                       volumeMounts=[{"name": "data", "mountPath": "/data", "subPath": "/abs"}]),
         "spec.worker", OPERATOR, extra=("subPath",)),
    Case("mount-propagation", template(volumes=[{"name": "data", "emptyDir": {}}],
                                       volumeMounts=[{"name": "data", "mountPath": "/data", "mountPropagation": "Sideways"}]),
         "spec.worker", OPERATOR, extra=("mountPropagation",)),
    Case("env-field-ref", template(env=[{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nothing"}}}]),
         "spec.worker", OPERATOR, extra=("fieldPath",)),
    Case("priority-class-missing", template(priorityClassName="nobody-knows-this-class"), "spec.worker", OPERATOR,
         extra=("nobody-knows-this-class",)),
    Case("ps-resource-name", ps(resources={"limits": {"cpus": "1"}}), "spec.parameterServer", OPERATOR, extra=("cpus",)),
]
