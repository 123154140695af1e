"""The bundled trainer's settings (``spec.trainer``): the shared parser, as the trainer uses it.

The rules (defaults, ranges, names, cross-field checks) live once, in :mod:`torchyard_spec.trainer`,
which the operator applies to the same JSON when the job is created. Here a refused value becomes
the trainer's :class:`UserError` (exit code 2), naming the field as the user wrote it.
"""

from __future__ import annotations

from typing import Any, Mapping

from torchyard_spec.errors import FieldError
from torchyard_spec.trainer import (ROOT, CompressionConfig, DatasetConfig, DistillationConfig, ModelConfig,
                                    OptimizerConfig, ParameterServerConfig, PruningConfig, TrainerConfig,
                                    parse_trainer)
from torchyard_trainer.errors import UserError

__all__ = ["ROOT", "CompressionConfig", "DatasetConfig", "DistillationConfig", "ModelConfig", "OptimizerConfig",
           "ParameterServerConfig", "PruningConfig", "TrainerConfig", "parse_config"]


def parse_config(raw: Mapping[str, Any] | None) -> TrainerConfig:
    """``spec.trainer`` as a :class:`TrainerConfig`; raises :class:`UserError` naming the field."""
    try:
        config = parse_trainer(raw)
    except FieldError as exc:
        raise UserError(exc.field, exc.problem) from None
    distillation = config.compression.distillation
    if distillation is not None and not distillation.teacher_path:
        raise UserError(f"{ROOT}.compression.distillation.teacher.modelVersion",
                        "names a ModelVersion, which the operator resolves to teacherPath; run the job "
                        "through the operator, or give the teacher's artifact directory as teacherPath")
    return config
