"""The one error a malformed custom resource raises while it is parsed."""


class SpecError(ValueError):
    """A field of a custom resource is missing or holds a value the operator cannot use.

    ``field`` is the dotted path (``spec.worker.replicas``) so that the message, the status
    condition and the Kubernetes Event all point the user at the same place.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem
