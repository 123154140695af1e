"""Datasets the bundled trainer can train on, held in memory and split by the seed.

Every process of a job calls :func:`load_dataset` with the same settings and gets identical
tensors, so no data moves over the network: each worker reads its own shard of the training split
through a ``DistributedSampler``. Nothing is downloaded; digits ships inside scikit-learn.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchyard_trainer.config import ROOT, DatasetConfig
from torchyard_trainer.errors import UserError
from torchyard_trainer.hooks import load_callable

log = logging.getLogger(__name__)

CLASSIFICATION = "classification"
REGRESSION = "regression"
FIELD = f"{ROOT}.dataset"
_X_KEYS = ("x", "X", "features", "inputs")
_Y_KEYS = ("y", "Y", "labels", "targets", "target")


@dataclass
class Dataset:
    """Train and test tensors plus what a model builder needs to know about them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    input_shape: tuple[int, ...]
    num_outputs: int
    classes: list | None

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation of the training inputs (std 1 where constant)."""
        mean = self.x_train.mean(dim=0)
        std = self.x_train.std(dim=0, unbiased=False)
        return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def _digits(cfg: DatasetConfig, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x, y, CLASSIFICATION


def _synthetic_classification(cfg: DatasetConfig, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import make_classification

    if cfg.classes > 2 ** cfg.features:
        raise UserError(f"{FIELD}.classes", f"{cfg.classes} classes need more than {cfg.features} features")
    if cfg.noise > 1:
        raise UserError(f"{FIELD}.noise", "is the fraction of flipped labels for classification; must be <= 1")
    x, y = make_classification(
        n_samples=cfg.samples, n_features=cfg.features, n_informative=cfg.features, n_redundant=0,
        n_repeated=0, n_classes=cfg.classes, n_clusters_per_class=1, flip_y=cfg.noise, random_state=seed,
    )
    return x, y, CLASSIFICATION


def _synthetic_regression(cfg: DatasetConfig, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """y = x . w + noise * e, with x, e standard normal and |w| = 1, so the signal has variance 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg.samples, cfg.features))
    w = rng.standard_normal(cfg.features)
    w /= np.linalg.norm(w)
    y = x @ w + cfg.noise * rng.standard_normal(cfg.samples)
    return x, y, REGRESSION


def _pick(mapping: Any, keys: tuple[str, ...], what: str, path: str) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    raise UserError(f"{FIELD}.path", f"{path} has no {what} array; expected one of the keys {', '.join(keys)}")


def _read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 3:
        raise UserError(f"{FIELD}.path", f"{path} needs a header row and at least two data rows")
    header = [name.strip() for name in rows[0]]
    if target not in header:
        raise UserError(f"{FIELD}.target", f"column {target!r} is not in {path} (columns: {', '.join(header)})")
    column = header.index(target)
    labels = [row[column].strip() for row in rows[1:]]
    try:
        features = np.array([[float(v) for i, v in enumerate(row) if i != column] for row in rows[1:]])
    except ValueError as exc:
        raise UserError(f"{FIELD}.path", f"{path}: every column but the target must be numeric ({exc})") from None
    try:
        return features, np.array([float(v) for v in labels])
    except ValueError:
        return features, np.array(labels)


def _file(cfg: DatasetConfig, seed: int) -> tuple[Any, Any, None]:
    path = Path(cfg.path)
    if not path.is_file():
        raise UserError(f"{FIELD}.path", f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _pick(archive, _X_KEYS, "input", str(path)), _pick(archive, _Y_KEYS, "target", str(path)), None
        if suffix == ".csv":
            x, y = _read_csv(path, cfg.target)
            return x, y, None
        if suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(content, (tuple, list)) and len(content) == 2:
                return content[0], content[1], None
            if isinstance(content, dict):
                return _pick(content, _X_KEYS, "input", str(path)), _pick(content, _Y_KEYS, "target", str(path)), None
            raise UserError(f"{FIELD}.path", f"{path} must hold (x, y) or a dict with x and y")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{FIELD}.path", f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    raise UserError(f"{FIELD}.path", f"{path} must end in .npz, .csv or .pt")


def _module(cfg: DatasetConfig, seed: int) -> tuple[Any, Any, None]:
    function = load_callable(cfg.module, f"{FIELD}.module")
    try:
        value = function()
    except Exception as exc:
        raise UserError(f"{FIELD}.module", f"{cfg.module} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise UserError(f"{FIELD}.module", f"{cfg.module} must return (x, y), got {type(value).__name__}")
    return value[0], value[1], None


_LOADERS = {
    "digits": _digits,
    "synthetic-classification": _synthetic_classification,
    "synthetic-regression": _synthetic_regression,
    "file": _file,
    "module": _module,
}


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:
        raise UserError(FIELD, f"{what} is not an array: {exc}") from None


def _resolve_task(y: np.ndarray, hint: str | None, metric: str | None) -> str:
    """Classification or regression: the dataset says so, else the metric, else the targets' type."""
    if hint is not None:
        task = hint
    elif metric in ("mse", "mae"):
        task = REGRESSION
    elif metric == "accuracy" or y.dtype.kind in "iubUSO":
        task = CLASSIFICATION
    else:
        task = CLASSIFICATION if y.ndim == 1 and np.all(np.mod(y, 1) == 0) else REGRESSION
    if metric == "accuracy" and task == REGRESSION:
        raise UserError(f"{ROOT}.metric", "accuracy needs a classification dataset; use mse, mae or loss")
    if metric in ("mse", "mae") and task == CLASSIFICATION:
        raise UserError(f"{ROOT}.metric", f"{metric} needs a regression dataset; use accuracy or loss")
    return task


def _targets(y: np.ndarray, task: str) -> tuple[torch.Tensor, int, list | None]:
    if task == REGRESSION:
        values = torch.as_tensor(y.astype(np.float32)).reshape(len(y), -1)
        return values, values.shape[1], None
    if y.ndim != 1:
        raise UserError(FIELD, f"classification targets must be one label per sample, got shape {list(y.shape)}")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise UserError(FIELD, "classification targets hold a single class")
    return torch.as_tensor(index.astype(np.int64)), len(classes), [c.item() if hasattr(c, "item") else c for c in classes]


def _check_inputs(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim < 2 or x.shape[0] < 2:
        raise UserError(FIELD, f"inputs must be at least two samples of one or more features, got shape {list(x.shape)}")
    if len(y) != x.shape[0]:
        raise UserError(FIELD, f"{x.shape[0]} inputs but {len(y)} targets")
    if x.dtype.kind not in "iufb" or not np.isfinite(x.astype(np.float64)).all():
        raise UserError(FIELD, "inputs must be finite numbers")


def load_dataset(cfg: DatasetConfig, seed: int, metric: str | None = None) -> Dataset:
    """Load ``cfg``'s data and split it into train and test by ``testFraction`` with ``seed``."""
    raw_x, raw_y, hint = _LOADERS[cfg.name](cfg, seed)
    x, y = _as_array(raw_x, "x"), _as_array(raw_y, "y")
    _check_inputs(x, y)
    task = _resolve_task(y, hint, metric)
    targets, num_outputs, classes = _targets(y, task)
    inputs = torch.as_tensor(x.astype(np.float32))
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(inputs)))
    n_test = min(len(inputs) - 1, max(1, math.floor(len(inputs) * cfg.test_fraction + 0.5)))
    test, train = order[:n_test], order[n_test:]
    log.info("dataset %s: %d train, %d test samples, %s, %d outputs", cfg.name, len(train), len(test), task, num_outputs)
    return Dataset(
        x_train=inputs[train], y_train=targets[train], x_test=inputs[test], y_test=targets[test],
        task=task, input_shape=tuple(inputs.shape[1:]), num_outputs=num_outputs, classes=classes,
    )
