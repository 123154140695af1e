"""The model artifact: what a training run leaves behind must load, verify and serve identically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from torchyard_trainer.artifact import (
    CONFIG_FILE,
    DIGEST_FILES,
    METADATA_FILE,
    MODEL_FILE,
    STATE_FILE,
    ArtifactError,
    artifact_digest,
    load_artifact,
    load_state_model,
    save_artifact,
    verify_artifact,
)
from torchyard_trainer.compression import apply_pruning, is_pruned

pytestmark = pytest.mark.trainer

FEATURES, CLASSES = 8, 3


def build_mlp(architecture: dict, input_shape: tuple, num_outputs: int) -> nn.Module:
    hidden = architecture["hiddenSizes"]
    sizes = [int(np.prod(input_shape)), *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], num_outputs))


def config(hidden=(16,)) -> dict:
    return {"architecture": {"name": "mlp", "hiddenSizes": list(hidden)}, "inputShape": [FEATURES],
            "numOutputs": CLASSES, "task": "classification", "classes": ["a", "b", "c"]}


def trained_model(seed: int = 0, hidden=(16,)) -> tuple[nn.Module, torch.Tensor]:
    """A small classifier after a few real optimizer steps, and inputs to compare it on."""
    torch.manual_seed(seed)
    x = torch.randn(128, FEATURES)
    y = (x[:, :CLASSES] * torch.tensor([1.0, -2.0, 0.5])).argmax(dim=1)
    model = build_mlp({"hiddenSizes": list(hidden)}, (FEATURES,), CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, torch.randn(32, FEATURES)


def save(model: nn.Module, directory: Path, **overrides) -> dict:
    kwargs = dict(config=config(), metrics={"accuracy": 0.9, "loss": 0.3}, metric="accuracy",
                  lineage={"job": "tj", "namespace": "ns", "attempt": 1}, model_name="tiny")
    kwargs.update(overrides)
    return save_artifact(model, directory, **kwargs)


def test_round_trip_serves_the_same_predictions(tmp_path):
    model, x = trained_model()
    metadata = save(model, tmp_path / "tiny" / "1")
    loaded = load_artifact(tmp_path / "tiny" / "1")
    model.eval()
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(loaded.module(x), expected, atol=1e-6)
    assert torch.equal(loaded.module(x).argmax(1), expected.argmax(1))
    assert loaded.config == config()
    assert loaded.metadata == metadata
    assert metadata["sha256"] == artifact_digest(tmp_path / "tiny" / "1")
    assert verify_artifact(tmp_path / "tiny" / "1")
    assert verify_artifact(tmp_path / "tiny" / "1", expected=metadata["sha256"])
    assert not verify_artifact(tmp_path / "tiny" / "1", expected="0" * 64)


def test_metadata_records_size_parameters_and_lineage(tmp_path):
    model, _ = trained_model()
    metadata = save(model, tmp_path / "a")
    on_disk = json.loads((tmp_path / "a" / METADATA_FILE).read_text())
    assert on_disk == metadata
    assert metadata["sizeBytes"] == (tmp_path / "a" / MODEL_FILE).stat().st_size
    assert metadata["parameters"] == sum(p.numel() for p in model.parameters())
    assert metadata["nonzeroParameters"] == sum(int((p != 0).sum()) for p in model.parameters())
    assert metadata["torchVersion"] == torch.__version__
    assert metadata["lineage"] == {"job": "tj", "namespace": "ns", "attempt": 1, "teacher": None, "compression": None}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([*DIGEST_FILES, METADATA_FILE])


@pytest.mark.parametrize("name", DIGEST_FILES)
def test_changed_bytes_fail_verification(tmp_path, name):
    model, _ = trained_model()
    save(model, tmp_path / "a")
    path = tmp_path / "a" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert not verify_artifact(tmp_path / "a")


@pytest.mark.parametrize("name", [MODEL_FILE, STATE_FILE, CONFIG_FILE, METADATA_FILE])
def test_missing_file_is_named(tmp_path, name):
    model, _ = trained_model()
    save(model, tmp_path / "a")
    (tmp_path / "a" / name).unlink()
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        verify_artifact(tmp_path / "a")
    loader = load_state_model if name == STATE_FILE else load_artifact
    args = (build_mlp,) if name == STATE_FILE else ()
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        loader(tmp_path / "a", *args)


@pytest.mark.parametrize("name,content", [(MODEL_FILE, b"not a zip"), (CONFIG_FILE, b"{nope"),
                                          (METADATA_FILE, b"[1, 2]"), (CONFIG_FILE, b'{"task": "classification"}')])
def test_corrupt_file_is_named(tmp_path, name, content):
    model, _ = trained_model()
    save(model, tmp_path / "a")
    (tmp_path / "a" / name).write_bytes(content)
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        load_artifact(tmp_path / "a")


def test_state_model_rebuilds_the_eager_module(tmp_path):
    model, x = trained_model(hidden=(16, 8))
    save(model, tmp_path / "a", config=config(hidden=(16, 8)))
    rebuilt = load_state_model(tmp_path / "a", build_mlp)
    assert not rebuilt.training
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.eval()(x), atol=1e-6)


def test_state_model_that_does_not_fit_names_state_dict(tmp_path):
    model, _ = trained_model()
    save(model, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    cfg["architecture"]["hiddenSizes"] = [32]
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"state_dict\.pt does not fit"):
        load_state_model(tmp_path / "a", build_mlp)


def test_pruned_model_is_saved_with_permanent_zeros_and_caller_keeps_masks(tmp_path):
    model, x = trained_model()
    model.train()
    apply_pruning(model, "global-unstructured", sparsity=0.6)
    metadata = save(model, tmp_path / "a")
    assert is_pruned(model) and model.training  # the caller's module is left as it was
    state = torch.load(tmp_path / "a" / STATE_FILE, weights_only=True)
    assert not any(key.endswith(("_orig", "_mask")) for key in state)
    rebuilt = load_state_model(tmp_path / "a", build_mlp)
    zeros = sum(int((m.weight == 0).sum()) for m in rebuilt if isinstance(m, nn.Linear))
    total = sum(m.weight.numel() for m in rebuilt if isinstance(m, nn.Linear))
    assert zeros == round(0.6 * total)
    assert metadata["nonzeroParameters"] == sum(int((p != 0).sum()) for p in rebuilt.parameters())
    with torch.no_grad():
        assert torch.allclose(load_artifact(tmp_path / "a").module(x), model.eval()(x), atol=1e-6)


def test_saving_again_replaces_the_artifact_and_leaves_no_temporaries(tmp_path):
    first, x = trained_model(seed=0)
    second, _ = trained_model(seed=1)
    save(first, tmp_path / "a")
    digest = save(second, tmp_path / "a")["sha256"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    loaded = load_artifact(tmp_path / "a")
    assert loaded.metadata["sha256"] == digest
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), second.eval()(x), atol=1e-6)


class Unexportable(nn.Module):
    """Neither scriptable (numpy in forward) nor traceable (forward raises)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        raise RuntimeError(f"cannot run {np.pi}")


def test_failed_save_keeps_the_previous_artifact(tmp_path):
    model, _ = trained_model()
    digest = save(model, tmp_path / "a")["sha256"]
    with pytest.raises(RuntimeError, match="cannot run"):
        save(Unexportable(), tmp_path / "a")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert verify_artifact(tmp_path / "a", expected=digest)


class TraceOnly(nn.Module):
    """A module holding a lambda, which TorchScript cannot compile but tracing records."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, CLASSES)
        self.activation = lambda t: torch.tanh(t) * 2

    def forward(self, x):
        return self.activation(self.linear(x))


def test_unscriptable_model_is_traced(tmp_path):
    torch.manual_seed(0)
    model = TraceOnly()
    save(model, tmp_path / "a")
    x = torch.randn(5, FEATURES)
    with torch.no_grad():
        assert torch.allclose(load_artifact(tmp_path / "a").module(x), model(x), atol=1e-6)


def test_output_size_that_contradicts_config_is_refused(tmp_path):
    model, _ = trained_model()
    wrong = {**config(), "numOutputs": CLASSES + 1}
    with pytest.raises(ValueError, match=r"numOutputs promises \[1, 4\]"):
        save(model, tmp_path / "a", config=wrong)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_config_is_refused_before_writing(tmp_path):
    model, _ = trained_model()
    bad = config()
    del bad["inputShape"]
    with pytest.raises(ValueError, match="inputShape"):
        save(model, tmp_path / "a", config=bad)
    assert list(tmp_path.iterdir()) == []
