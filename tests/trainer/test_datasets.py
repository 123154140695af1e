"""Datasets from every source a user can name, split the same way in every process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchyard_trainer.config import DatasetConfig, parse_config
from torchyard_trainer.data import CLASSIFICATION, REGRESSION, load_dataset
from torchyard_trainer.errors import UserError
from torchyard_trainer.models import build_model

pytestmark = pytest.mark.trainer


def features_and_labels(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)), rng.integers(0, 3, size=n)


def test_digits_split_depends_on_the_seed_only():
    cfg = DatasetConfig()
    a, b, c = load_dataset(cfg, 1), load_dataset(cfg, 1), load_dataset(cfg, 2)
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)
    assert len(a.x_train) + len(a.x_test) == 1797 and len(a.x_test) == 359
    assert (a.task, a.input_shape, a.num_outputs, a.classes) == (CLASSIFICATION, (64,), 10, list(range(10)))


def test_synthetic_sets_follow_their_settings():
    cls = load_dataset(DatasetConfig(name="synthetic-classification", samples=200, features=6, classes=3), 0)
    reg = load_dataset(DatasetConfig(name="synthetic-regression", samples=100, features=4, noise=0.0), 0)
    assert (cls.input_shape, cls.num_outputs, len(cls.x_train) + len(cls.x_test)) == ((6,), 3, 200)
    assert reg.task == REGRESSION and reg.y_train.shape[1] == 1
    weights, *_ = torch.linalg.lstsq(reg.x_train, reg.y_train)
    assert torch.allclose(reg.x_train @ weights, reg.y_train, atol=1e-4)  # noise 0: exactly linear


def test_npz_csv_and_pt_files_load_the_same_data(tmp_path):
    x, y = features_and_labels()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"x": torch.tensor(x), "y": torch.tensor(y)}, tmp_path / "d.pt")
    rows = ["a,b,label,c"] + [f"{r[0]},{r[1]},{label},{r[2]}" for r, label in zip(x, y)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    loaded = [load_dataset(DatasetConfig(name="file", path=str(tmp_path / f"d.{ext}")), 5) for ext in ("npz", "pt", "csv")]
    for data in loaded:
        assert data.task == CLASSIFICATION and data.num_outputs == 3
        assert torch.allclose(data.x_train, loaded[0].x_train) and torch.equal(data.y_train, loaded[0].y_train)


def test_a_user_module_supplies_the_data_and_float_targets_mean_regression(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    x = np.linspace(0, 1, 40).reshape(20, 2)\n"
        "    return x, x.sum(axis=1) * 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_dataset(parse_config({"dataset": {"name": "module", "module": "my_data:make"}}).dataset, 0)
    assert data.task == REGRESSION and data.classes is None and data.input_shape == (2,)


@pytest.mark.parametrize("cfg, field", [
    (DatasetConfig(name="file", path="/nonexistent/x.npz"), "spec.trainer.dataset.path"),
    (DatasetConfig(name="module", module="no_such_module_here:f"), "spec.trainer.dataset.module"),
    (DatasetConfig(name="synthetic-classification", features=1, classes=3), "spec.trainer.dataset.classes"),
])
def test_unusable_data_names_the_field(cfg, field):
    with pytest.raises(UserError) as caught:
        load_dataset(cfg, 0)
    assert caught.value.field == field


def test_csv_without_the_target_column_names_the_target_field(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(UserError) as caught:
        load_dataset(DatasetConfig(name="file", path=str(tmp_path / "d.csv"), target="y"), 0)
    assert caught.value.field == "spec.trainer.dataset.target"


def test_accuracy_on_a_regression_set_is_a_metric_error():
    with pytest.raises(UserError) as caught:
        load_dataset(DatasetConfig(name="synthetic-regression", samples=20), 0, metric="accuracy")
    assert caught.value.field == "spec.trainer.metric"


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("arch", [{"name": "mlp", "hiddenSizes": [32]}, {"name": "cnn", "channels": [4, 8]}])
def test_models_take_raw_digits_and_export_to_torchscript(arch):
    data = load_dataset(DatasetConfig(), 0)
    model = build_model(arch, data.input_shape, data.num_outputs)
    model.set_input_stats(*data.input_stats())
    scripted = torch.jit.script(model.eval())
    assert torch.allclose(scripted(data.x_test[:5]), model(data.x_test[:5]))
    assert scripted(data.x_test[:5]).shape == (5, 10)


def test_a_cnn_on_non_image_inputs_is_a_model_error():
    with pytest.raises(UserError) as caught:
        build_model({"name": "cnn"}, (10,), 2)
    assert caught.value.field == "spec.trainer.model.name"
