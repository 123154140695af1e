"""Resolving a user's ``package.module:function`` reference to the function itself."""

from __future__ import annotations

import importlib
import logging
from typing import Callable

from torchyard_trainer.errors import UserError

log = logging.getLogger(__name__)


def load_callable(reference: str, field: str) -> Callable:
    """The function named by ``reference``; a module that will not import is the user's error.

    The import runs the user's module top to bottom, so any exception it raises is reported
    against ``field`` rather than crashing the trainer with a traceback the operator cannot show.
    """
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user module may fail in any way while it imports
        raise UserError(field, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserError(field, f"{module_name!r} has no function {attribute!r}")
    log.info("using %s from %s", attribute, getattr(module, "__file__", module_name))
    return function
