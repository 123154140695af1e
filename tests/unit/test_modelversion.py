"""ModelVersions from training results, the registry's numbering, and teacher resolution."""

from __future__ import annotations

import copy

import pytest

from jobs import ALLREDUCE_CPU, UID, job
from torchyard.api.errors import SpecError
from torchyard.api.modelversion import parse_model_version
from torchyard.builders.serving import DISTILLATION_FIELD, build_model_version, with_teacher_path
from torchyard.kube.client import Conflict
from torchyard.registry import ModelRegistry, RegistryBusy

RESULT = {"metrics": {"accuracy": 0.9712, "loss": 0.11}, "metric": "accuracy", "steps": 600,
          "artifact": {"path": "/var/lib/torchyard/models/digits/digits-1f0e8a3c", "sha256": "ab" * 32},
          "compression": {"pruning": {"method": "global-unstructured", "measuredSparsity": 0.5}}}


def trained(**spec):
    obj = copy.deepcopy(ALLREDUCE_CPU)
    obj["spec"].update(spec)
    return job(obj)


class FakeKube:
    """Just the calls the registry makes, over an in-memory set of ModelVersions."""

    def __init__(self, *existing: dict, taken: int = 0):
        self.objects = {o["metadata"]["name"]: o for o in existing}
        self.taken = taken  # creates that lose a race before one succeeds
        self.job_status: dict = {}
        self.events: list = []
        self.counter: dict | None = None  # the version counter ConfigMap
        self.counter_conflicts = 0  # replaces that lose to another writer before one succeeds
        self.on_create: list = []

    def get_config_map(self, namespace, name):
        return copy.deepcopy(self.counter)

    def create_config_map(self, manifest):
        if self.counter is not None:
            return False
        self.counter = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "1"}}
        return True

    def replace_config_map(self, namespace, name, manifest):
        if self.counter_conflicts or manifest["metadata"]["resourceVersion"] != self.counter["metadata"]["resourceVersion"]:
            self.counter_conflicts = max(0, self.counter_conflicts - 1)
            return False
        version = str(int(self.counter["metadata"]["resourceVersion"]) + 1)
        self.counter = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": version}}
        return True

    def list_model_versions(self, namespace, selector):
        key, _, value = selector.partition("=")
        return [o for o in self.objects.values() if not selector or o["metadata"].get("labels", {}).get(key) == value]

    def get_model_version(self, namespace, name):
        return self.objects.get(name)

    def create_model_version(self, manifest):
        if self.taken or manifest["metadata"]["name"] in self.objects:
            self.taken = max(0, self.taken - 1)
            return None
        self.objects[manifest["metadata"]["name"]] = {**manifest, "metadata": {**manifest["metadata"],
                                                                               "resourceVersion": "1"}}
        for react in self.on_create:  # what watches the ModelVersions does the moment it exists
            react(self.objects[manifest["metadata"]["name"]])
        return "1"

    def patch_model_version_status(self, namespace, name, status, resource_version=None):
        obj = self.objects[name]
        if resource_version and obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"ModelVersion {name} changed since {resource_version}")
        obj["status"] = status
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)

    def patch_job_status(self, namespace, name, status):
        self.job_status.update(status)

    def emit_event(self, obj, kind, reason, message):
        self.events.append((kind, reason, message))


def test_a_result_becomes_a_model_version_with_its_lineage():
    manifest = build_model_version(trained(modelName="digits", storage={"claimName": "models"}), RESULT, 4)
    assert manifest["metadata"]["name"] == "digits-v4"
    assert manifest["metadata"]["labels"]["torchyard.dev/training-job-uid"] == UID
    assert "ownerReferences" not in manifest["metadata"]  # it outlives the job and its TTL
    spec = manifest["spec"]
    assert spec["artifact"] == {"path": RESULT["artifact"]["path"], "sha256": "ab" * 32, "claimName": "models"}
    assert spec["mainMetric"] == {"name": "accuracy", "value": 0.9712}
    assert spec["lineage"] == {"trainingJob": "digits", "trainingJobUID": UID, "steps": 600,
                               "compression": RESULT["compression"]}
    parsed = parse_model_version(manifest)
    assert (parsed.model_name, parsed.version, parsed.metrics["loss"]) == ("digits", 4, 0.11)


def test_the_teacher_is_recorded_in_the_lineage():
    student = trained(trainer={"compression": {"distillation": {"teacher": {"modelVersion": "digits-v2"}}}})
    assert build_model_version(student, RESULT, 3)["spec"]["lineage"]["teacher"] == "digits-v2"


@pytest.mark.parametrize("spec, field", [
    ({"modelName": "d", "artifact": {"path": "/p"}}, "spec.version"),
    ({"modelName": "d", "version": 0, "artifact": {"path": "/p"}}, "spec.version"),
    ({"modelName": "d", "version": 1}, "spec.artifact"),
    ({"modelName": "d", "version": 1, "artifact": {"path": "/p"}, "metrics": {"acc": "high"}}, "spec.metrics.acc"),
])
def test_a_malformed_model_version_names_the_field(spec, field):
    with pytest.raises(SpecError) as err:
        parse_model_version({"metadata": {"name": "x"}, "spec": spec})
    assert err.value.field == field


def test_registration_takes_the_next_number_of_its_model_only():
    other = build_model_version(trained(modelName="other"), RESULT, 9)
    other["metadata"]["labels"]["torchyard.dev/training-job-uid"] = "another-job"
    hand_made = {"metadata": {"name": "digits-v2"}, "spec": {"modelName": "digits", "version": 2}}  # no labels
    kube = FakeKube(other, hand_made)
    assert ModelRegistry(kube).register(trained(), RESULT) == "digits-v3"
    assert kube.objects["digits-v3"]["status"]["phase"] == "Registered"


def test_a_version_judged_before_its_registration_is_written_keeps_the_verdict():
    """A ModelDeployment reacts to the create at once; its Rejected (or Active) is not overwritten
    by the registry's Registered, written a moment after the create."""
    kube = FakeKube()
    kube.on_create.append(lambda mv: kube.patch_model_version_status(
        "ml", mv["metadata"]["name"], {"phase": "Rejected", "reason": "GateRejected"}))
    assert ModelRegistry(kube).register(trained(), RESULT) == "digits-v1"
    assert kube.objects["digits-v1"]["status"]["phase"] == "Rejected"


def test_a_version_changed_otherwise_before_its_registration_still_gets_its_phase():
    kube = FakeKube()
    kube.on_create.append(lambda mv: mv["metadata"].update(resourceVersion="2"))  # a label added by hand
    ModelRegistry(kube).register(trained(), RESULT)
    assert kube.objects["digits-v1"]["status"]["phase"] == "Registered"


def test_registration_is_idempotent_per_job():
    kube = FakeKube()
    registry = ModelRegistry(kube)
    assert registry.register(trained(), RESULT) == "digits-v1"
    assert registry.register(trained(), RESULT) == "digits-v1"
    assert list(kube.objects) == ["digits-v1"]


def test_a_lost_race_takes_the_next_number():
    kube = FakeKube(taken=2)
    assert ModelRegistry(kube).register(trained(), RESULT) == "digits-v3"
    kube = FakeKube(taken=100)
    with pytest.raises(RegistryBusy):
        ModelRegistry(kube).register(trained(), RESULT)


def run_of(uid: str):
    obj = copy.deepcopy(ALLREDUCE_CPU)
    obj["metadata"]["uid"] = uid
    return job(obj)


def test_a_deleted_newest_version_number_is_never_issued_again():
    kube = FakeKube()
    assert ModelRegistry(kube).register(run_of("first"), RESULT) == "digits-v1"
    assert ModelRegistry(kube).register(run_of("second"), RESULT) == "digits-v2"
    del kube.objects["digits-v2"]  # a user deletes the newest version
    kube.counter_conflicts = 1  # and another registration moves the counter meanwhile
    assert ModelRegistry(kube).register(run_of("third"), RESULT) == "digits-v3"
    assert kube.counter["data"] == {"digits": "3"}


def test_record_names_the_version_in_the_jobs_result_once():
    kube = FakeKube()
    registry = ModelRegistry(kube)
    status = {"phase": "Succeeded", "result": dict(RESULT)}
    registry.record({"metadata": {"name": "digits"}}, trained(), status)
    assert status["result"]["modelVersion"] == kube.job_status["result"]["modelVersion"] == "digits-v1"
    assert kube.events == [("Normal", "ModelRegistered", "registered the trained model as ModelVersion digits-v1")]
    registry.record({"metadata": {"name": "digits"}}, trained(), status)
    assert len(kube.events) == 1


@pytest.mark.parametrize("status", [
    {"phase": "Running", "result": RESULT},
    {"phase": "Succeeded"},  # a custom script that reported nothing
    {"phase": "Succeeded", "result": {"metrics": {"accuracy": 1.0}}},  # no artifact
])
def test_nothing_is_registered_without_a_succeeded_artifact(status):
    kube = FakeKube()
    ModelRegistry(kube).record({"metadata": {"name": "digits"}}, trained(), dict(status))
    assert kube.objects == {}


def teacher_job(claim="models"):
    return trained(storage={"claimName": claim},
                   trainer={"compression": {"distillation": {"teacher": {"modelVersion": "digits-v1"}, "alpha": 0.7}}})


def test_a_teacher_model_version_becomes_its_artifact_path():
    kube = FakeKube(build_model_version(trained(storage={"claimName": "models"}), RESULT, 1))
    config = ModelRegistry(kube).trainer_config(teacher_job())
    assert config["compression"]["distillation"] == {"teacherPath": RESULT["artifact"]["path"], "alpha": 0.7}


def test_a_missing_teacher_or_one_on_another_claim_is_an_invalid_spec():
    with pytest.raises(SpecError) as err:
        ModelRegistry(FakeKube()).trainer_config(teacher_job())
    assert err.value.field == DISTILLATION_FIELD and "'digits-v1', which does not exist" in str(err.value)
    kube = FakeKube(build_model_version(trained(storage={"claimName": "elsewhere"}), RESULT, 1))
    with pytest.raises(SpecError) as err:
        ModelRegistry(kube).trainer_config(teacher_job())
    assert "claim 'elsewhere'" in str(err.value)


def test_a_teacher_in_object_storage_needs_the_jobs_store_secret():
    in_s3 = {**RESULT, "artifact": {"path": "s3://models/digits/models/digits/run-1", "sha256": "ab" * 32}}
    kube = FakeKube(build_model_version(trained(storage={"uri": "s3://models/digits", "secretName": "s3"}), in_s3, 1))
    with pytest.raises(SpecError) as err:
        ModelRegistry(kube).trainer_config(teacher_job())
    assert err.value.field == DISTILLATION_FIELD and "spec.storage.secretName" in str(err.value)
    job = trained(storage={"uri": "s3://models/digits", "secretName": "s3"},
                  trainer={"compression": {"distillation": {"teacher": {"modelVersion": "digits-v1"}}}})
    config = ModelRegistry(kube).trainer_config(job)
    assert config["compression"]["distillation"]["teacherPath"] == in_s3["artifact"]["path"]


def test_with_teacher_path_leaves_the_original_alone():
    trainer = {"compression": {"distillation": {"teacher": {"modelVersion": "m-v1"}}}}
    assert with_teacher_path(trainer, "/p") == {"compression": {"distillation": {"teacherPath": "/p"}}}
    assert trainer == {"compression": {"distillation": {"teacher": {"modelVersion": "m-v1"}}}}
