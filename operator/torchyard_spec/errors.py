"""The one error the shared parsers raise: a setting the user must fix, named by its dotted path."""


class FieldError(ValueError):
    """``field`` is the dotted path (``spec.trainer.optimizer.momentum``) so the operator's
    condition and Event, and the trainer's result, all point the user at the same place."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem
