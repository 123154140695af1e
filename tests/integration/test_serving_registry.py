"""Training meets serving on a real API server: a succeeded TrainingJob registers its ModelVersion
(once, however often it is reconciled), and a distillation teacher named as a ModelVersion reaches
the trainer as that version's artifact path."""
from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from harness.waits import wait_for
from serving_kit import model_version

pytestmark = pytest.mark.integration

GROUP, VERSION = "torchyard.dev", "v1alpha1"
TEACHER_FIELD = "spec.trainer.compression.distillation.teacher.modelVersion"


def trainingjob(name: str, **trainer) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
        "spec": {"strategy": "AllReduce", "worker": {"replicas": 1}, "modelName": "digits",
                 "storage": {"claimName": "models"},
                 "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, **trainer}},
    }


@pytest.fixture
def claim(cluster, namespace):
    """A bound claim named `models`: without one the scheduler never places the training pods."""
    volume = f"{namespace}-models"
    cluster.core.create_persistent_volume({
        "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{volume}"}}})
    cluster.core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "models"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(lambda: cluster.core.read_namespaced_persistent_volume_claim("models", namespace).status.phase == "Bound",
             "claim models Bound")
    yield "models"
    cluster.core.delete_persistent_volume(volume)


def job_status(cluster, namespace, name) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", name).get("status") or {}


def model_versions(cluster, namespace) -> dict[str, dict]:
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions")["items"]
    return {i["metadata"]["name"]: i for i in items}


def finish(cluster, namespace, faults, name: str, accuracy: float) -> dict:
    """Run the job to success with the trainer's result as worker 0's termination message."""
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", trainingjob(name))
    pod = f"{name}-worker-0"
    faults.wait_running(namespace, pod)
    uid = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", name)["metadata"]["uid"]
    result = {"metrics": {"accuracy": accuracy, "loss": 0.2}, "metric": "accuracy", "steps": 120,
              "artifact": {"path": f"/var/lib/torchyard/models/digits/{name}-{uid[:8]}", "sha256": "ab" * 32},
              "compression": None}
    faults.terminate_container(namespace, pod, exit_code=0, message=json.dumps(result))
    return wait_for(lambda: (st := job_status(cluster, namespace, name)).get("result", {}).get("modelVersion") and st,
                    f"{name} registered", timeout=30)


def test_a_succeeded_job_registers_one_model_version(cluster, namespace, claim, operator, faults):
    st = finish(cluster, namespace, faults, "first", 0.91)
    assert st["phase"] == "Succeeded" and st["result"]["modelVersion"] == "digits-v1"
    mv = model_versions(cluster, namespace)["digits-v1"]
    spec = mv["spec"]
    assert (spec["modelName"], spec["version"], spec["metric"]) == ("digits", 1, "accuracy")
    assert spec["metrics"] == {"accuracy": 0.91, "loss": 0.2}
    assert spec["mainMetric"] == {"name": "accuracy", "value": 0.91}
    assert spec["artifact"]["claimName"] == "models" and spec["artifact"]["sha256"] == "ab" * 32
    assert spec["artifact"]["path"].startswith("/var/lib/torchyard/models/digits/first-")
    assert spec["lineage"]["trainingJob"] == "first" and spec["lineage"]["steps"] == 120
    assert not mv["metadata"].get("ownerReferences")  # a version outlives its job
    assert mv["status"]["phase"] == "Registered"

    operator.restart()  # reconciles the finished job again: still one version
    second = finish(cluster, namespace, faults, "second", 0.93)
    assert second["result"]["modelVersion"] == "digits-v2"
    assert sorted(model_versions(cluster, namespace)) == ["digits-v1", "digits-v2"]
    events = cluster.core.list_namespaced_event(namespace, field_selector="involvedObject.name=second").items
    assert any(e.reason == "ModelRegistered" and "digits-v2" in e.message for e in events)


def test_a_model_versions_spec_is_immutable(cluster, namespace, crds):
    model_version(cluster, namespace, 1, 0.9)
    with pytest.raises(ApiException) as err:
        cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", "digits-v1",
                                                      {"spec": {"metrics": {"accuracy": 0.99}}})
    assert err.value.status == 422 and "immutable" in err.value.body


def test_a_missing_teacher_fails_the_job_naming_the_field(cluster, namespace, operator):
    body = trainingjob("student", compression={"distillation": {"teacher": {"modelVersion": "digits-v7"}}})
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)
    st = wait_for(lambda: (s := job_status(cluster, namespace, "student")).get("phase") == "Failed" and s, "Failed")
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert TEACHER_FIELD in failed["message"] and "digits-v7" in failed["message"]
    assert not cluster.core.list_namespaced_pod(namespace).items


def test_a_teacher_model_version_reaches_the_trainer_as_its_path(cluster, namespace, claim, operator, faults):
    teacher = model_version(cluster, namespace, 1, 0.95)
    body = trainingjob("student", compression={"distillation": {"teacher": {"modelVersion": "digits-v1"}, "alpha": 0.7}})
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)
    pod = faults.wait_running(namespace, "student-worker-0")
    env = {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}
    distillation = json.loads(env["TORCHYARD_TRAINER_CONFIG"])["compression"]["distillation"]
    assert distillation == {"teacherPath": teacher["spec"]["artifact"]["path"], "alpha": 0.7}


def test_a_deleted_newest_version_number_is_never_issued_again(cluster, namespace, claim, operator, faults):
    assert finish(cluster, namespace, faults, "first", 0.91)["result"]["modelVersion"] == "digits-v1"
    assert finish(cluster, namespace, faults, "second", 0.92)["result"]["modelVersion"] == "digits-v2"
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", "digits-v2")
    wait_for(lambda: "digits-v2" not in model_versions(cluster, namespace), "digits-v2 deleted")
    assert finish(cluster, namespace, faults, "third", 0.93)["result"]["modelVersion"] == "digits-v3"
    counter = cluster.core.read_namespaced_config_map("torchyard-model-versions", namespace)
    assert counter.data == {"digits": "3"}
