"""The bundled trainer's settings (``spec.trainer``): one table of rules, one parser, typed values.

The operator parses a job's ``spec.trainer`` with :func:`parse_trainer` and fails the job naming
the field; the trainer parses the JSON it is handed with the same function. :data:`RULES` is the
one statement of every setting's default, range and allowed names: the CRD schema and
docs/trainer.md restate it for ``kubectl`` and for readers, and tests/unit/test_trainer_drift.py
compares them with it field by field. Every key is optional; an unknown key is refused, so a
typo does not silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torchyard_spec import catalog
from torchyard_spec.errors import FieldError

ROOT = "spec.trainer"
_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """What one setting may hold. ``kind``: integer, number, string, module, choice or sizes."""

    kind: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()
    min_items: int = 0

    def range_text(self) -> str:
        low = "(" if self.exclusive_minimum else "["
        high = ")" if self.exclusive_maximum else "]"
        if self.maximum is None:
            return f"{'>' if self.exclusive_minimum else '>='} {_num(self.minimum)}"
        return f"in {low}{_num(self.minimum)}, {_num(self.maximum)}{high}"


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _integer(default: int | None, minimum: int, maximum: int | None = None) -> Rule:
    return Rule("integer", default, minimum, maximum)


def _number(default: float | None, minimum: float, maximum: float | None = None, *,
            open_low: bool = False, open_high: bool = False) -> Rule:
    return Rule("number", default, minimum, maximum, open_low, open_high)


# Paths are relative to spec.trainer. Defaults of None mean "decided later" (see the docstrings).
RULES: dict[str, Rule] = {
    "model.name": Rule("choice", "mlp", choices=catalog.MODELS),
    "model.hiddenSizes": Rule("sizes", (128, 64), minimum=1),
    "model.channels": Rule("sizes", (16, 32), minimum=1, min_items=1),
    "model.dropout": _number(0.0, 0.0, 1.0, open_high=True),
    "model.module": Rule("module", ""),
    "dataset.name": Rule("choice", "digits", choices=catalog.DATASETS),
    "dataset.samples": _integer(2000, 2),
    "dataset.features": _integer(20, 1),
    "dataset.classes": _integer(4, 2),
    "dataset.noise": _number(0.1, 0.0),
    "dataset.path": Rule("string", ""),
    "dataset.target": Rule("string", "label"),
    "dataset.module": Rule("module", ""),
    "dataset.testFraction": _number(0.2, 0.0, 1.0, open_low=True, open_high=True),
    "epochs": _integer(10, 1),
    "batchSize": _integer(32, 1),
    "optimizer.name": Rule("choice", "sgd", choices=catalog.OPTIMIZERS),
    "optimizer.learningRate": _number(0.01, 0.0, open_low=True),
    "optimizer.momentum": _number(0.0, 0.0, 1.0, open_high=True),
    "optimizer.weightDecay": _number(0.0, 0.0),
    "seed": _integer(42, 0),
    "checkpointEverySteps": _integer(0, 0),
    "metric": Rule("choice", None, choices=catalog.METRICS),
    "parameterServer.mode": Rule("choice", "Sync", choices=catalog.PS_MODES),
    "parameterServer.maxStaleness": _integer(4, 0),
    "compression.pruning.method": Rule("choice", "global-unstructured", choices=catalog.PRUNING_METHODS),
    "compression.pruning.sparsity": _number(None, 0.0, 1.0, open_high=True),
    "compression.pruning.threshold": _number(None, 0.0),
    "compression.pruning.fineTuneEpochs": _integer(1, 0),
    "compression.distillation.teacher.modelVersion": Rule("string", ""),
    "compression.distillation.teacherPath": Rule("string", ""),
    "compression.distillation.temperature": _number(2.0, 0.0, open_low=True),
    "compression.distillation.alpha": _number(0.5, 0.0, 1.0),
    "progressIntervalSeconds": _number(2.0, 0.0, open_low=True),
}

# Objects that hold settings: every proper prefix of a path in RULES ("" is spec.trainer itself).
SECTIONS = frozenset([""] + [p.rsplit(".", i)[0] for p in RULES for i in range(1, p.count(".") + 1)])


@dataclass(frozen=True)
class ModelConfig:
    name: str = RULES["model.name"].default
    hidden_sizes: tuple[int, ...] = RULES["model.hiddenSizes"].default
    channels: tuple[int, ...] = RULES["model.channels"].default
    dropout: float = RULES["model.dropout"].default
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
    name: str = RULES["dataset.name"].default
    samples: int = RULES["dataset.samples"].default
    features: int = RULES["dataset.features"].default
    classes: int = RULES["dataset.classes"].default
    noise: float = RULES["dataset.noise"].default
    path: str = ""
    target: str = RULES["dataset.target"].default
    module: str = ""
    test_fraction: float = RULES["dataset.testFraction"].default


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = RULES["optimizer.name"].default
    learning_rate: float = RULES["optimizer.learningRate"].default
    momentum: float = RULES["optimizer.momentum"].default
    weight_decay: float = RULES["optimizer.weightDecay"].default


@dataclass(frozen=True)
class ParameterServerConfig:
    mode: str = RULES["parameterServer.mode"].default
    max_staleness: int = RULES["parameterServer.maxStaleness"].default


@dataclass(frozen=True)
class PruningConfig:
    """Exactly one of ``sparsity`` and ``threshold`` is set."""

    method: str = RULES["compression.pruning.method"].default
    sparsity: float | None = None
    threshold: float | None = None
    fine_tune_epochs: int = RULES["compression.pruning.fineTuneEpochs"].default


@dataclass(frozen=True)
class DistillationConfig:
    """Exactly one of ``teacher_path`` and ``teacher_model_version`` is set; the operator turns a
    ModelVersion into its artifact path before the trainer sees the settings."""

    teacher_path: str = ""
    temperature: float = RULES["compression.distillation.temperature"].default
    alpha: float = RULES["compression.distillation.alpha"].default
    teacher_model_version: str = ""


@dataclass(frozen=True)
class CompressionConfig:
    pruning: PruningConfig | None = None
    distillation: DistillationConfig | None = None


@dataclass(frozen=True)
class TrainerConfig:
    """``spec.trainer`` as typed values. ``metric`` None: accuracy for classification, mse for regression."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    epochs: int = RULES["epochs"].default
    batch_size: int = RULES["batchSize"].default
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    seed: int = RULES["seed"].default
    checkpoint_every_steps: int = RULES["checkpointEverySteps"].default
    metric: str | None = RULES["metric"].default
    parameter_server: ParameterServerConfig = field(default_factory=ParameterServerConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    progress_interval_seconds: float = RULES["progressIntervalSeconds"].default

    @property
    def fine_tune_epochs(self) -> int:
        """Epochs trained after pruning, with the masks in place."""
        pruning = self.compression.pruning
        return pruning.fine_tune_epochs if pruning is not None else 0


def parse_trainer(raw: Mapping[str, Any] | None) -> TrainerConfig:
    """``spec.trainer`` as a :class:`TrainerConfig`; raises :class:`FieldError` naming the field."""
    r = _Reader(raw)
    config = TrainerConfig(
        model=_model(r),
        dataset=_dataset(r),
        epochs=r.get("epochs"),
        batch_size=r.get("batchSize"),
        optimizer=OptimizerConfig(*(r.get(f"optimizer.{k}") for k in ("name", "learningRate", "momentum", "weightDecay"))),
        seed=r.get("seed"),
        checkpoint_every_steps=r.get("checkpointEverySteps"),
        metric=r.get("metric"),
        parameter_server=ParameterServerConfig(r.get("parameterServer.mode"), r.get("parameterServer.maxStaleness")),
        compression=CompressionConfig(_pruning(r), _distillation(r)),
        progress_interval_seconds=r.get("progressIntervalSeconds"),
    )
    _check_metric(config)
    return config


def _model(r: "_Reader") -> ModelConfig:
    name = r.get("model.name")
    return ModelConfig(name, r.get("model.hiddenSizes"), r.get("model.channels"), r.get("model.dropout"),
                       r.get("model.module", required=name == "module"))


def _dataset(r: "_Reader") -> DatasetConfig:
    name = r.get("dataset.name")
    return DatasetConfig(
        name=name,
        samples=r.get("dataset.samples"),
        features=r.get("dataset.features"),
        classes=r.get("dataset.classes"),
        noise=r.get("dataset.noise"),
        path=r.get("dataset.path", required=name == "file"),
        target=r.get("dataset.target"),
        module=r.get("dataset.module", required=name == "module"),
        test_fraction=r.get("dataset.testFraction"),
    )


def _pruning(r: "_Reader") -> PruningConfig | None:
    if not r.present("compression.pruning"):
        return None
    sparsity, threshold = r.get("compression.pruning.sparsity"), r.get("compression.pruning.threshold")
    if (sparsity is None) == (threshold is None):
        raise FieldError(f"{ROOT}.compression.pruning.sparsity", "set exactly one of sparsity or threshold")
    return PruningConfig(r.get("compression.pruning.method"), sparsity, threshold,
                         r.get("compression.pruning.fineTuneEpochs"))


def _distillation(r: "_Reader") -> DistillationConfig | None:
    if not r.present("compression.distillation"):
        return None
    version = r.get("compression.distillation.teacher.modelVersion",
                    required=r.present("compression.distillation.teacher"))
    path = r.get("compression.distillation.teacherPath")
    if bool(version) == bool(path):
        raise FieldError(f"{ROOT}.compression.distillation.teacherPath",
                         "set exactly one of teacher.modelVersion or teacherPath")
    return DistillationConfig(path, r.get("compression.distillation.temperature"),
                              r.get("compression.distillation.alpha"), version)


def _check_metric(config: TrainerConfig) -> None:
    """A metric the dataset's task never reports would fail only at the end, at registration."""
    task_metrics = catalog.TASK_METRICS.get(catalog.DATASET_TASKS.get(config.dataset.name, ""))
    if config.metric is not None and task_metrics is not None and config.metric not in task_metrics:
        raise FieldError(f"{ROOT}.metric", f"must be one of {', '.join(task_metrics)} for dataset "
                         f"{config.dataset.name}; got {config.metric!r}")


class _Reader:
    """The raw settings, checked for unknown keys up front; :meth:`get` checks one value by its rule."""

    def __init__(self, raw: Any):
        self.raw = {} if raw is None else raw
        self._check_section(self.raw, "")

    def _check_section(self, data: Any, path: str) -> None:
        where = f"{ROOT}.{path}" if path else ROOT
        if not isinstance(data, Mapping):
            raise FieldError(where, f"must be an object, got {type(data).__name__}")
        prefix = f"{path}." if path else ""
        known = sorted({p[len(prefix):].split(".")[0] for p in RULES if p.startswith(prefix)})
        for key in sorted(data):
            child = f"{path}.{key}" if path else str(key)
            if key not in known:
                raise FieldError(f"{where}.{key}", f"is not a setting; known: {', '.join(known)}")
            if child in SECTIONS and data[key] is not None:
                self._check_section(data[key], child)

    def _value(self, path: str) -> Any:
        node: Any = self.raw
        for key in path.split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
            if node is None:
                return _MISSING
        return node

    def present(self, path: str) -> bool:
        return self._value(path) is not _MISSING

    def get(self, path: str, required: bool = False) -> Any:
        rule, value = RULES[path], self._value(path)
        if value is _MISSING or value == "":
            if required:
                raise FieldError(f"{ROOT}.{path}", "is required")
            return rule.default
        return check(rule, value, f"{ROOT}.{path}")


def check(rule: Rule, value: Any, where: str) -> Any:
    """``value`` if ``rule`` allows it (numbers as float, lists as tuples); else :class:`FieldError`."""
    if rule.kind == "choice":
        if value not in rule.choices:
            raise FieldError(where, f"must be one of {', '.join(rule.choices)}; got {value!r}")
        return value
    if rule.kind in ("string", "module"):
        if not isinstance(value, str):
            raise FieldError(where, f"must be a string, got {value!r}")
        if rule.kind == "module" and not catalog.MODULE_REF.match(value):
            raise FieldError(where, f"must look like 'package.module:function', got {value!r}")
        return value
    if rule.kind == "sizes":
        return _sizes(rule, value, where)
    return _ranged(rule, value, where)


def _sizes(rule: Rule, value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < rule.minimum for v in value):
        raise FieldError(where, f"must be a list of positive integers, got {value!r}")
    if len(value) < rule.min_items:
        raise FieldError(where, "must not be empty")
    return tuple(value)


def _ranged(rule: Rule, value: Any, where: str) -> Any:
    integer = rule.kind == "integer"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise FieldError(where, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    low = rule.minimum is not None and (value <= rule.minimum if rule.exclusive_minimum else value < rule.minimum)
    high = rule.maximum is not None and (value >= rule.maximum if rule.exclusive_maximum else value > rule.maximum)
    if low or high:
        raise FieldError(where, f"must be {rule.range_text()}, got {value}")
    return value if integer else float(value)
