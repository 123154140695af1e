"""What the operator and the trainer image both know, in one standard-library-only package.

The operator image and the trainer image each install this package whole, so anything both sides
of the pod boundary rely on lives here exactly once: the environment contract of a training pod
(:mod:`torchyard_spec.contract`) and the names of the bundled models, datasets, optimizers and
metrics (:mod:`torchyard_spec.catalog`). It must never import the operator (``torchyard``), the
trainer (``torchyard_trainer``) or anything outside the standard library;
tests/unit/test_trainer_imports.py checks that.
"""
