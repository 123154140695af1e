"""Compression inside a training run: what the result claims is what the exported model holds."""

from __future__ import annotations

import json

import pytest
import torch

from trainer_gang import DIGITS_MLP, assert_succeeded, run_gang, steps_per_epoch

pytestmark = pytest.mark.trainer

DISTILLATION_GAP = 0.05  # the student may trail the teacher by at most this much accuracy


def linear_weights(state: dict) -> dict[str, torch.Tensor]:
    return {name: w for name, w in state.items() if name.endswith(".weight") and w.dim() == 2}


def test_global_pruning_reaches_the_requested_sparsity_after_fine_tuning(tmp_path):
    config = {**DIGITS_MLP, "compression": {"pruning": {"method": "global-unstructured", "sparsity": 0.8,
                                                         "fineTuneEpochs": 1}}}
    run = run_gang(tmp_path, config)
    assert_succeeded(run)
    result = run.result()

    weights = linear_weights(run.weights())
    assert not any(name.endswith(("_orig", "_mask")) for name in run.weights())
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == round(0.8 * total)
    assert result["compression"]["pruning"]["measuredSparsity"] == pytest.approx(zeros / total, abs=1e-6)
    assert result["steps"] == (2 + 1) * steps_per_epoch(2, 32)  # two epochs, then one of fine-tuning
    assert result["metrics"]["accuracy"] >= 0.85, result


def test_channel_pruning_under_parameter_servers_zeroes_whole_hidden_channels(tmp_path):
    config = {**DIGITS_MLP, "parameterServer": {"mode": "Sync"},
              "compression": {"pruning": {"method": "structured-channel", "sparsity": 0.5, "fineTuneEpochs": 1}}}
    run = run_gang(tmp_path, config, parameter_servers=1)
    assert_succeeded(run)

    state = run.weights()
    hidden, bias = state["net.layers.0.weight"], state["net.layers.0.bias"]
    dead = (hidden == 0).all(dim=1)
    assert int(dead.sum()) == hidden.shape[0] // 2
    assert (bias[dead] == 0).all()
    assert int((state["net.layers.2.weight"] == 0).all(dim=0).sum()) < hidden.shape[0]  # output layer kept
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["lineage"]["compression"]["pruning"]["method"] == "structured-channel"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    config = {"model": {"name": "mlp", "hiddenSizes": [256, 128]}, "optimizer": {"name": "adam", "learningRate": 0.005},
              "epochs": 5, "seed": 3}
    run = run_gang(root, config)
    assert_succeeded(run)
    return run


def test_distilled_student_is_smaller_and_close_to_its_teacher(tmp_path, teacher):
    teacher_dir = teacher.root / "model"
    config = {"model": {"name": "mlp", "hiddenSizes": [24]}, "optimizer": {"name": "adam", "learningRate": 0.01},
              "epochs": 8, "seed": 3,
              "compression": {"distillation": {"teacherPath": str(teacher_dir), "temperature": 3.0, "alpha": 0.7}}}
    run = run_gang(tmp_path, config)
    assert_succeeded(run)
    result = run.result()
    record = result["compression"]["distillation"]

    teacher_accuracy = teacher.result()["metrics"]["accuracy"]
    assert record["teacherAccuracy"] == pytest.approx(teacher_accuracy, abs=1e-4)
    assert record["studentAccuracy"] == pytest.approx(result["metrics"]["accuracy"], abs=1e-4)
    assert result["metrics"]["accuracy"] >= teacher_accuracy - DISTILLATION_GAP, record
    assert record["studentSizeBytes"] < record["teacherSizeBytes"] / 5
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["lineage"]["teacher"] == str(teacher_dir)
    assert metadata["sizeBytes"] < json.loads((teacher_dir / "metadata.json").read_text())["sizeBytes"]


def test_a_missing_teacher_stops_every_process_with_a_user_error(tmp_path):
    config = {"epochs": 1, "compression": {"distillation": {"teacherPath": str(tmp_path / "nowhere")}}}
    run = run_gang(tmp_path, config, workers=1, parameter_servers=1, stop_on_failure=False, timeout=60)
    assert run.codes == {"local-ps-0": 2, "local-worker-0": 2}, run.describe()
    for name in run.names:
        assert run.result(name)["error"]["field"] == "spec.trainer.compression.distillation.teacherPath"
