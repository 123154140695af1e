"""Checkpoints and the artifact in S3-compatible storage, against a real S3 server (versitygw).

A training run writes both there; a gang killed mid-run, or stopped by SIGTERM, resumes from the
newest complete checkpoint there and ends with exactly the weights of a run that was never
interrupted (as test_resume.py and test_preemption.py check on a directory); an upload cut short
leaves neither a visible artifact nor a checkpoint anyone resumes from.
"""

from __future__ import annotations

import json

import pytest
import torch

from s3server import BUCKET, s3  # noqa: F401  (s3: the fixture)
from test_preemption import CONFIG as SIGTERM_CONFIG
from test_preemption import STOPPED_AFTER, draw_step, signal_env
from test_resume import CONFIG as KILL_CONFIG
from test_resume import LAST_CHECKPOINT, assert_gang_stopped_by_fault, fault
from test_serve import save, trained_model
from trainer_gang import DIGITS_MLP, assert_succeeded, run_gang
from torchyard_trainer import checkpoint, checkpoint_s3
from torchyard_trainer.artifact import METADATA_FILE, verify_artifact
from torchyard_trainer.errors import EXIT_PREEMPTED
from torchyard_trainer.objstore import Location, ObjectStoreError, upload_directory
from torchyard_trainer.serve_source import ObjectSource

pytestmark = pytest.mark.trainer


def run_in_s3(s3, root, name: str, config: dict, **kwargs):
    """One attempt of a local gang whose checkpoints and artifact live under s3://models/<name>/."""
    extra = {**kwargs.pop("extra_env", {}), **s3.environ}
    return run_gang(root, config, checkpoint_dir=f"s3://{BUCKET}/{name}/checkpoints",
                    model_dir=f"s3://{BUCKET}/{name}/model", extra_env=extra, **kwargs)


def published_steps(s3, name: str) -> list[int]:
    """Steps of the checkpoints a reader would resume from, oldest first."""
    prefix = f"{name}/checkpoints/"
    keys = {k[len(prefix):] for k in s3.store.list(BUCKET, prefix)}
    return sorted(int(k[5:15]) for k in keys if k.endswith(".pt") and k + checkpoint_s3.MANIFEST_SUFFIX in keys)


def s3_weights(s3, name: str) -> dict[str, torch.Tensor]:
    directory = ObjectSource(f"s3://{BUCKET}/{name}/model", s3.store).fetch()
    return torch.load(directory / "state_dict.pt", weights_only=True)


def assert_same_weights(actual: dict, expected: dict, context: str) -> None:
    for key, value in actual.items():
        assert torch.equal(value, expected[key]), f"{key}: {context}"


def test_a_run_writes_its_checkpoints_and_artifact_to_s3(s3, tmp_path):
    run = run_in_s3(s3, tmp_path, "plain", {**DIGITS_MLP, "checkpointEverySteps": 10})
    assert_succeeded(run)
    result = run.result()
    assert result["artifact"]["path"] == f"s3://{BUCKET}/plain/model"
    fetched = ObjectSource(result["artifact"]["path"], s3.store).fetch()
    assert verify_artifact(fetched, expected=result["artifact"]["sha256"])
    assert json.loads((fetched / METADATA_FILE).read_text())["sha256"] == result["artifact"]["sha256"]
    steps = published_steps(s3, "plain")
    assert len(steps) == checkpoint.KEEP and steps[-1] == result["steps"], steps
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()


@pytest.fixture(scope="module")
def unfaulted(tmp_path_factory):
    """The killed-gang configuration run to its end without a fault, on a directory."""
    run = run_gang(tmp_path_factory.mktemp("unfaulted"), KILL_CONFIG)
    assert_succeeded(run)
    return run


def test_a_killed_gang_resumes_from_the_checkpoint_in_s3(s3, tmp_path, unfaulted):
    first = run_in_s3(s3, tmp_path, "killed", KILL_CONFIG, extra_env=fault(1), stop_on_failure=False)
    assert_gang_stopped_by_fault(first, "local-worker-1")
    assert published_steps(s3, "killed")[-1] == LAST_CHECKPOINT
    assert not ObjectSource(f"s3://{BUCKET}/killed/model", s3.store).present()

    second = run_in_s3(s3, tmp_path, "killed", KILL_CONFIG, attempt=1, extra_env=fault(1))
    assert_succeeded(second)
    assert second.result()["training"]["resumedFromStep"] == LAST_CHECKPOINT
    assert second.result()["steps"] == unfaulted.result()["steps"]
    assert_same_weights(s3_weights(s3, "killed"), unfaulted.weights(), second.describe())


def test_a_gang_stopped_by_sigterm_checkpoints_to_s3_and_resumes_from_there(s3, tmp_path, tmp_path_factory):
    drawn = draw_step(2)
    first = run_in_s3(s3, tmp_path, "sigterm", SIGTERM_CONFIG, extra_env=signal_env(1, drawn), stop_on_failure=False)
    context = f"SIGTERM in step {drawn}\n{first.describe()}"
    assert all(code == EXIT_PREEMPTED for code in first.codes.values()), context
    step = int(STOPPED_AFTER.search(first.result()["error"]["message"]).group(1))
    assert published_steps(s3, "sigterm")[-1] == step, context

    second = run_in_s3(s3, tmp_path, "sigterm", SIGTERM_CONFIG, attempt=1)
    assert_succeeded(second)
    assert second.result()["training"]["resumedFromStep"] == step, context
    uninterrupted = run_gang(tmp_path_factory.mktemp("uninterrupted"), SIGTERM_CONFIG)
    assert_succeeded(uninterrupted)
    assert_same_weights(s3_weights(s3, "sigterm"), uninterrupted.weights(), context)


class CutShort:
    """The real store, except that the upload of an object named ``name`` fails (the pod died)."""

    def __init__(self, store, name: str):
        self.store, self.name = store, name

    def put(self, bucket: str, key: str, data: bytes) -> None:
        if key.rsplit("/", 1)[-1] == self.name:
            raise ObjectStoreError(f"PUT {key}: connection reset")
        self.store.put(bucket, key, data)

    def __getattr__(self, attribute):
        return getattr(self.store, attribute)


@pytest.mark.parametrize("cut_at", ["model.pt", "state_dict.pt", METADATA_FILE])
def test_an_interrupted_artifact_upload_leaves_no_visible_artifact(s3, tmp_path, cut_at):
    local = tmp_path / "artifact"
    save(trained_model(), local)
    fresh, rewritten = Location(BUCKET, f"cut/{cut_at}/fresh"), Location(BUCKET, f"cut/{cut_at}/rewritten")
    upload_directory(s3.store, local, rewritten, last=METADATA_FILE)
    assert ObjectSource(str(rewritten), s3.store).present()
    for location in (fresh, rewritten):
        with pytest.raises(ObjectStoreError):
            upload_directory(CutShort(s3.store, cut_at), local, location, last=METADATA_FILE)
        assert not ObjectSource(str(location), s3.store).present(), location


def test_an_interrupted_or_damaged_checkpoint_is_not_resumed_from(s3, monkeypatch):
    for key, value in s3.environ.items():
        monkeypatch.setenv(key, value)
    uri, prefix = f"s3://{BUCKET}/ckpt-cut", "ckpt-cut"

    def state(step: int) -> dict:
        return {"fingerprint": "f1", "step": step, "epoch": 0, "batch": step, "model": {"w": torch.full((2,), step)},
                "rng": [None]}

    checkpoint.save(uri, state(10))
    checkpoint.save(uri, state(20))
    s3.store.put(BUCKET, f"{prefix}/ckpt-0000000030.pt", checkpoint._serialize(state(30)))  # no manifest: cut short
    s3.store.put(BUCKET, f"{prefix}/ckpt-0000000020.pt", b"damaged")  # bytes that no longer match the manifest
    assert checkpoint.latest(uri, "f1")["step"] == 10
    checkpoint.save(uri, state(40))
    assert checkpoint.latest(uri, "f1")["step"] == 40
    assert f"{prefix}/ckpt-0000000030.pt" not in s3.store.list(BUCKET, f"{prefix}/")


def test_a_student_distils_from_a_teacher_in_s3_whose_digest_matches(s3, tmp_path):
    teacher = run_in_s3(s3, tmp_path / "teacher", "teacher", {**DIGITS_MLP, "epochs": 2})
    assert_succeeded(teacher)
    uri = teacher.result()["artifact"]["path"]
    config = {**DIGITS_MLP, "model": {"name": "mlp", "hiddenSizes": [16]}, "epochs": 1,
              "compression": {"distillation": {"teacherPath": uri, "alpha": 0.7}}}
    student = run_gang(tmp_path / "student", config, workers=1, extra_env=s3.environ)
    assert_succeeded(student)
    record = student.result()["compression"]["distillation"]
    assert record["teacherAccuracy"] == pytest.approx(teacher.result()["metrics"]["accuracy"], abs=1e-4)

    key = f"{uri[len(f's3://{BUCKET}/'):]}/config.json"
    changed = json.loads(s3.store.get(BUCKET, key))
    s3.store.put(BUCKET, key, json.dumps({**changed, "classes": list(reversed(changed["classes"]))}).encode())
    refused = run_gang(tmp_path / "refused", config, workers=1, extra_env=s3.environ, stop_on_failure=False)
    assert refused.codes == {"local-worker-0": 2}, refused.describe()
    error = refused.result()["error"]
    assert error["field"] == "spec.trainer.compression.distillation.teacherPath" and "digest" in error["message"]
