"""spec.trainer parsing: defaults a user can rely on, and errors that name the field."""

from __future__ import annotations

import pytest

from torchyard_trainer.config import parse_config
from torchyard_trainer.errors import UserError
from torchyard_trainer.result import MAX_BYTES, error_payload, fit

pytestmark = pytest.mark.trainer


def test_an_empty_config_trains_an_mlp_on_digits():
    config = parse_config({})
    assert (config.model.name, config.dataset.name, config.optimizer.name) == ("mlp", "digits", "sgd")
    assert config.model.hidden_sizes == (128, 64)
    assert (config.epochs, config.batch_size, config.seed, config.metric) == (10, 32, 42, None)
    assert config.parameter_server.mode == "Sync" and config.parameter_server.max_staleness == 4
    assert config.compression.pruning is None and config.fine_tune_epochs == 0


def test_camel_case_settings_reach_the_typed_config():
    config = parse_config({
        "model": {"name": "cnn", "channels": [8], "dropout": 0.1},
        "dataset": {"name": "synthetic-regression", "samples": 300, "features": 5, "testFraction": 0.25},
        "optimizer": {"name": "adamw", "learningRate": 0.002, "weightDecay": 0.01},
        "parameterServer": {"mode": "Async", "maxStaleness": 0},
        "compression": {"pruning": {"threshold": 0.01, "fineTuneEpochs": 2}},
        "checkpointEverySteps": 50, "metric": "mae", "progressIntervalSeconds": 0.5,
    })
    assert config.model.architecture() == {"name": "cnn", "channels": [8], "dropout": 0.1}
    assert config.dataset.test_fraction == 0.25 and config.optimizer.weight_decay == 0.01
    assert config.parameter_server.max_staleness == 0
    assert config.compression.pruning.threshold == 0.01 and config.fine_tune_epochs == 2


@pytest.mark.parametrize("raw, field", [
    ({"model": {"name": "transformer"}}, "spec.trainer.model.name"),
    ({"model": {"name": "module"}}, "spec.trainer.model.module"),
    ({"model": {"name": "module", "module": "no colon"}}, "spec.trainer.model.module"),
    ({"model": {"hiddenSizes": [64, 0]}}, "spec.trainer.model.hiddenSizes"),
    ({"dataset": {"name": "file"}}, "spec.trainer.dataset.path"),
    ({"dataset": {"testFraction": 1.0}}, "spec.trainer.dataset.testFraction"),
    ({"epochs": 0}, "spec.trainer.epochs"),
    ({"batchSize": "32"}, "spec.trainer.batchSize"),
    ({"optimizer": {"learningRate": 0}}, "spec.trainer.optimizer.learningRate"),
    ({"optimizer": {"name": "lbfgs"}}, "spec.trainer.optimizer.name"),
    ({"parameterServer": {"mode": "sync"}}, "spec.trainer.parameterServer.mode"),
    ({"compression": {"pruning": {"sparsity": 0.5, "threshold": 0.1}}}, "spec.trainer.compression.pruning.sparsity"),
    ({"compression": {"pruning": {"sparsity": 1.0}}}, "spec.trainer.compression.pruning.sparsity"),
    ({"compression": {"distillation": {"alpha": 0.5}}}, "spec.trainer.compression.distillation.teacherPath"),
    ({"epoch": 3}, "spec.trainer.epoch"),
    ({"model": [1]}, "spec.trainer.model"),
])
def test_a_bad_setting_is_refused_with_its_field(raw, field):
    with pytest.raises(UserError) as caught:
        parse_config(raw)
    assert caught.value.field == field


def test_a_result_never_exceeds_the_termination_message_limit():
    huge = error_payload("spec.trainer.dataset.path", "x" * 20000)
    assert len(fit(huge)) < MAX_BYTES
    result = {"metrics": {"accuracy": 0.9}, "compression": {"pruning": {"note": "y" * 5000}}, "steps": 3}
    data = fit(result)
    assert len(data) < MAX_BYTES and b'"steps":3' in data and b'"compression":null' in data
