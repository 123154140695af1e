"""The names the bundled trainer understands, in the one place the operator and trainer read them.

The CRD's enums for ``spec.trainer`` list the same names; tests/unit/test_crd_schema.py compares
them with these tuples.
"""

from __future__ import annotations

import re

MODELS = ("mlp", "cnn", "module")
DATASETS = ("digits", "synthetic-classification", "synthetic-regression", "file", "module")
OPTIMIZERS = ("sgd", "adam", "adamw")
METRICS = ("accuracy", "loss", "mse", "mae")
PS_MODES = ("Sync", "Async")
PRUNING_METHODS = ("global-unstructured", "structured-channel")

# A user's own model or dataset factory: ``package.module:function``. The CRD uses the same pattern.
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
MODULE_REF = re.compile(MODULE_PATTERN)

# What a bundled dataset teaches, and the metrics each task reports (file and module datasets
# decide their task from their data, so only the trainer can check those).
CLASSIFICATION = "classification"
REGRESSION = "regression"
DATASET_TASKS = {"digits": CLASSIFICATION, "synthetic-classification": CLASSIFICATION, "synthetic-regression": REGRESSION}
TASK_METRICS = {CLASSIFICATION: ("accuracy", "loss"), REGRESSION: ("mse", "mae", "loss")}
