"""The bundled trainer's settings (``spec.trainer``), parsed once into typed values.

Every key is optional. A value the trainer cannot use raises :class:`UserError` naming the field
as the user wrote it (``spec.trainer.optimizer.learningRate``); an unknown key is refused too, so
a typo does not silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# The names the operator accepts are the names the trainer knows: one list, in the shared package.
from torchyard_spec.catalog import DATASETS, METRICS, MODELS, OPTIMIZERS, PRUNING_METHODS, PS_MODES
from torchyard_spec.catalog import MODULE_REF as _MODULE_REF
from torchyard_trainer.errors import UserError

ROOT = "spec.trainer"
_MISSING = object()


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    hidden_sizes: tuple[int, ...] = (128, 64)
    channels: tuple[int, ...] = (16, 32)
    dropout: float = 0.0
    module: str = ""

    def architecture(self) -> dict:
        """The resolved model settings, camelCase, as the artifact's config.json records them."""
        arch: dict[str, Any] = {"name": self.name, "dropout": self.dropout}
        if self.name == "mlp":
            arch["hiddenSizes"] = list(self.hidden_sizes)
        elif self.name == "cnn":
            arch["channels"] = list(self.channels)
        else:
            arch["module"] = self.module
        return arch


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    samples: int = 2000
    features: int = 20
    classes: int = 4
    noise: float = 0.1
    path: str = ""
    target: str = "label"
    module: str = ""
    test_fraction: float = 0.2


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ParameterServerConfig:
    mode: str = "Sync"
    max_staleness: int = 4


@dataclass(frozen=True)
class PruningConfig:
    method: str = "global-unstructured"
    sparsity: float | None = None
    threshold: float | None = None
    fine_tune_epochs: int = 1


@dataclass(frozen=True)
class DistillationConfig:
    teacher_path: str
    temperature: float = 2.0
    alpha: float = 0.5


@dataclass(frozen=True)
class CompressionConfig:
    pruning: PruningConfig | None = None
    distillation: DistillationConfig | None = None


@dataclass(frozen=True)
class TrainerConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    epochs: int = 10
    batch_size: int = 32
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    seed: int = 42
    checkpoint_every_steps: int = 0
    metric: str | None = None  # None: accuracy for classification, mse for regression
    parameter_server: ParameterServerConfig = field(default_factory=ParameterServerConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    progress_interval_seconds: float = 2.0

    @property
    def fine_tune_epochs(self) -> int:
        """Epochs trained after pruning, with the masks in place."""
        pruning = self.compression.pruning
        return pruning.fine_tune_epochs if pruning is not None else 0


class _Section:
    """One mapping of the config at a dotted path; each read names its field on failure."""

    def __init__(self, data: Any, path: str, known: tuple[str, ...]):
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise UserError(path, f"must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"{path}.{unknown[0]}", f"is not a setting; known: {', '.join(known)}")
        self.data = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def raw(self, key: str) -> Any:
        value = self.data.get(key, _MISSING)
        return _MISSING if value is None else value

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if value not in allowed:
            raise UserError(self.at(key), f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(self.at(key), f"must be an integer, got {value!r}")
        if value < minimum:
            raise UserError(self.at(key), f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float | None, low: float, high: float | None = None,
               open_low: bool = False, open_high: bool = False) -> float | None:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(self.at(key), f"must be a number, got {value!r}")
        too_low = value <= low if open_low else value < low
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            lo = "(" if open_low else "["
            hi = ")" if open_high else "]"
            raise UserError(self.at(key), f"must be in {lo}{low}, {high if high is not None else 'inf'}{hi}, got {value}")
        return float(value)

    def text(self, key: str, required: bool = False) -> str:
        value = self.raw(key)
        if value is _MISSING or value == "":
            if required:
                raise UserError(self.at(key), "is required")
            return ""
        if not isinstance(value, str):
            raise UserError(self.at(key), f"must be a string, got {value!r}")
        return value

    def module_ref(self, key: str, required: bool) -> str:
        value = self.text(key, required)
        if value and not _MODULE_REF.match(value):
            raise UserError(self.at(key), f"must look like 'package.module:function', got {value!r}")
        return value

    def sizes(self, key: str, default: tuple[int, ...], allow_empty: bool) -> tuple[int, ...]:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
            raise UserError(self.at(key), f"must be a list of positive integers, got {value!r}")
        if not value and not allow_empty:
            raise UserError(self.at(key), "must not be empty")
        return tuple(value)

    def child(self, key: str, known: tuple[str, ...]) -> "_Section":
        value = self.raw(key)
        return _Section(None if value is _MISSING else value, self.at(key), known)

    def present(self, key: str) -> bool:
        return self.raw(key) is not _MISSING


def _model(s: _Section) -> ModelConfig:
    name = s.choice("name", MODELS, "mlp")
    return ModelConfig(
        name=name,
        hidden_sizes=s.sizes("hiddenSizes", ModelConfig.hidden_sizes, allow_empty=True),
        channels=s.sizes("channels", ModelConfig.channels, allow_empty=False),
        dropout=s.number("dropout", 0.0, 0.0, 1.0, open_high=True),
        module=s.module_ref("module", required=name == "module"),
    )


def _dataset(s: _Section) -> DatasetConfig:
    name = s.choice("name", DATASETS, "digits")
    return DatasetConfig(
        name=name,
        samples=s.integer("samples", 2000, 2),
        features=s.integer("features", 20, 1),
        classes=s.integer("classes", 4, 2),
        noise=s.number("noise", 0.1, 0.0),
        path=s.text("path", required=name == "file"),
        target=s.text("target") or "label",
        module=s.module_ref("module", required=name == "module"),
        test_fraction=s.number("testFraction", 0.2, 0.0, 1.0, open_low=True, open_high=True),
    )


def _optimizer(s: _Section) -> OptimizerConfig:
    return OptimizerConfig(
        name=s.choice("name", OPTIMIZERS, "sgd"),
        learning_rate=s.number("learningRate", 0.01, 0.0, open_low=True),
        momentum=s.number("momentum", 0.0, 0.0, 1.0, open_high=True),
        weight_decay=s.number("weightDecay", 0.0, 0.0),
    )


def _pruning(s: _Section) -> PruningConfig:
    sparsity = s.number("sparsity", None, 0.0, 1.0, open_high=True)
    threshold = s.number("threshold", None, 0.0)
    if (sparsity is None) == (threshold is None):
        raise UserError(s.at("sparsity"), "set exactly one of sparsity or threshold")
    return PruningConfig(
        method=s.choice("method", PRUNING_METHODS, "global-unstructured"),
        sparsity=sparsity,
        threshold=threshold,
        fine_tune_epochs=s.integer("fineTuneEpochs", 1, 0),
    )


def _distillation(s: _Section) -> DistillationConfig:
    return DistillationConfig(
        teacher_path=s.text("teacherPath", required=True),
        temperature=s.number("temperature", 2.0, 0.0, open_low=True),
        alpha=s.number("alpha", 0.5, 0.0, 1.0),
    )


def _compression(s: _Section) -> CompressionConfig:
    pruning = distillation = None
    if s.present("pruning"):
        pruning = _pruning(s.child("pruning", ("method", "sparsity", "threshold", "fineTuneEpochs")))
    if s.present("distillation"):
        distillation = _distillation(s.child("distillation", ("teacherPath", "temperature", "alpha")))
    return CompressionConfig(pruning=pruning, distillation=distillation)


def parse_config(raw: Mapping[str, Any] | None) -> TrainerConfig:
    """``spec.trainer`` as a :class:`TrainerConfig`; raises :class:`UserError` naming the field."""
    root = _Section(raw, ROOT, (
        "model", "dataset", "epochs", "batchSize", "optimizer", "seed", "checkpointEverySteps",
        "metric", "parameterServer", "compression", "progressIntervalSeconds",
    ))
    ps = root.child("parameterServer", ("mode", "maxStaleness"))
    return TrainerConfig(
        model=_model(root.child("model", ("name", "hiddenSizes", "channels", "dropout", "module"))),
        dataset=_dataset(root.child("dataset", (
            "name", "samples", "features", "classes", "noise", "path", "target", "module", "testFraction",
        ))),
        epochs=root.integer("epochs", 10, 1),
        batch_size=root.integer("batchSize", 32, 1),
        optimizer=_optimizer(root.child("optimizer", ("name", "learningRate", "momentum", "weightDecay"))),
        seed=root.integer("seed", 42, 0),
        checkpoint_every_steps=root.integer("checkpointEverySteps", 0, 0),
        metric=root.choice("metric", METRICS, None),
        parameter_server=ParameterServerConfig(
            mode=ps.choice("mode", PS_MODES, "Sync"),
            max_staleness=ps.integer("maxStaleness", 4, 0),
        ),
        compression=_compression(root.child("compression", ("pruning", "distillation"))),
        progress_interval_seconds=root.number("progressIntervalSeconds", 2.0, 0.0, open_low=True),
    )
