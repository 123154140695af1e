"""Compression inside a training run: the distillation teacher and loss, pruning and its record.

The algorithms live in :mod:`torchyard_trainer.compression`; this module connects them to the
settings in ``spec.trainer.compression`` and to the run: a teacher must fit the dataset, pruning
errors are the user's, and what was achieved (sparsity, sizes, accuracy against the teacher) is
written down in the compact form the result and the artifact's lineage carry.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from torchyard_trainer import artifact, compression, objstore
from torchyard_trainer.config import ROOT, DistillationConfig, PruningConfig
from torchyard_trainer.data import CLASSIFICATION, Dataset
from torchyard_trainer.errors import UserError
from torchyard_trainer.evaluation import evaluate
from torchyard_trainer.serve_source import ObjectSource

log = logging.getLogger(__name__)

PRUNING_FIELD = f"{ROOT}.compression.pruning"
DISTILLATION_FIELD = f"{ROOT}.compression.distillation"
TEACHER_FIELD = f"{DISTILLATION_FIELD}.teacherPath"


@functools.lru_cache(maxsize=4)
def teacher_directory(path: str) -> str:
    """The teacher artifact as a local directory: one in object storage is fetched once, and only
    when its files match the digest its metadata.json records."""
    if not objstore.is_uri(path):
        return path
    try:
        local = ObjectSource(path).fetch()
    except objstore.ObjectStoreError as exc:
        raise UserError(TEACHER_FIELD, f"cannot load the teacher: {exc}") from None
    if not artifact.verify_artifact(local):
        raise UserError(TEACHER_FIELD, f"cannot load the teacher: the files at {path} do not match their digest")
    return str(local)


def check_teacher(cfg: DistillationConfig, data: Dataset) -> None:
    """Refuse a teacher that cannot teach on this dataset, reading only its config.json.

    Parameter servers call this too, so a bad teacher stops every process of the job at once.
    """
    if data.task != CLASSIFICATION:
        raise UserError(DISTILLATION_FIELD, "distillation needs a classification dataset")
    try:
        config = artifact.read_config(teacher_directory(cfg.teacher_path))
    except (artifact.ArtifactError, OSError) as exc:
        raise UserError(TEACHER_FIELD, f"cannot load the teacher: {exc}") from None
    shape, outputs = tuple(config["inputShape"]), config["numOutputs"]
    if shape != tuple(data.input_shape) or outputs != data.num_outputs:
        raise UserError(TEACHER_FIELD, f"teacher takes {list(shape)} -> {outputs} outputs; the dataset has "
                                       f"{list(data.input_shape)} -> {data.num_outputs}")


class Teacher:
    """A trained model loaded from an earlier artifact, and the loss that distils it."""

    def __init__(self, cfg: DistillationConfig, data: Dataset, device: torch.device):
        check_teacher(cfg, data)
        try:
            loaded = artifact.load_artifact(teacher_directory(cfg.teacher_path))
        except (artifact.ArtifactError, OSError) as exc:
            raise UserError(TEACHER_FIELD, f"cannot load the teacher: {exc}") from None
        self.cfg = cfg
        self.module = loaded.module.to(device).eval()
        self.metadata = loaded.metadata
        log.info("distilling from teacher %s (%s)", cfg.teacher_path, loaded.metadata.get("metrics"))

    def loss(self, outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.module(inputs)
        return compression.distillation_loss(outputs, teacher_logits, targets, self.cfg.temperature, self.cfg.alpha)

    def report(self, student: nn.Module, student_metrics: dict, data: Dataset, device: torch.device) -> dict:
        """Student against teacher on the same held-out split: sizes, accuracy, the gap."""
        teacher_metrics = evaluate(self.module, data.x_test, data.y_test, data.task, device)
        teacher_size = compression.model_size_bytes(self.module)
        student_size = compression.model_size_bytes(student)
        return {
            "teacherPath": self.cfg.teacher_path,
            "temperature": self.cfg.temperature,
            "alpha": self.cfg.alpha,
            "teacherSizeBytes": teacher_size,
            "studentSizeBytes": student_size,
            "sizeRatio": round(student_size / teacher_size, 4) if teacher_size else None,
            "teacherAccuracy": round(teacher_metrics["accuracy"], 4),
            "studentAccuracy": round(student_metrics["accuracy"], 4),
            "accuracyGap": round(teacher_metrics["accuracy"] - student_metrics["accuracy"], 4),
        }


def prune(model: nn.Module, cfg: PruningConfig) -> dict:
    """Attach pruning masks to ``model``; returns the size before, for the final record."""
    before = compression.model_size_bytes(model)
    try:
        compression.apply_pruning(model, cfg.method, sparsity=cfg.sparsity, threshold=cfg.threshold)
    except ValueError as exc:
        raise UserError(PRUNING_FIELD, str(exc)) from None
    return {"sizeBytesBefore": before}


def pruning_record(model: nn.Module, cfg: PruningConfig, started: dict) -> dict:
    """What pruning achieved, measured on the final (fine-tuned) weights with the masks applied."""
    return {
        "method": cfg.method,
        "requestedSparsity": cfg.sparsity,
        "threshold": cfg.threshold,
        "fineTuneEpochs": cfg.fine_tune_epochs,
        "measuredSparsity": round(compression.measured_sparsity(model), 6),
        "sizeBytesBefore": started["sizeBytesBefore"],
        "sizeBytes": compression.model_size_bytes(model),
        "sparseSizeBytes": compression.model_size_bytes(model, sparse=True),
    }
