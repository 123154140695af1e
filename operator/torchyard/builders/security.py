"""The security settings every pod the operator creates gets: the `restricted` Pod Security level.

Non-root, no privilege escalation, no capabilities, the runtime's default seccomp profile and a
read-only root filesystem; writable paths are emptyDir volumes the builders mount. A role's
template.securityContext may relax the user and the root filesystem, and only where the operator's
administrator allowed it (Settings.allow_security_context_overrides): explicit, never the default.
"""

from __future__ import annotations

from typing import Any, Mapping

from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import TrainingJob
from torchyard.settings import Settings
from torchyard_spec import contract

SETTING = "TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES (chart value security.allowSecurityContextOverrides)"
ROLE_FIELDS = {contract.ROLE_WORKER: "spec.worker", contract.ROLE_PARAMETER_SERVER: "spec.parameterServer"}

# The pods' user when the image does not say; any non-zero id passes the restricted level.
RUN_AS_USER = 1000


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(overrides: Mapping[str, Any] | None = None) -> dict:
    """The restricted defaults, with a role's allowed overrides; those win over the pod's."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        **dict(overrides or {}),
    }


def check_overrides(job: TrainingJob, settings: Settings) -> None:
    """Raise ``SpecError`` naming the field when a role relaxes security and the operator forbids it."""
    if settings.allow_security_context_overrides:
        return
    for name, field in ROLE_FIELDS.items():
        role = job.spec.role(name)
        if role is not None and role.security_context:
            raise SpecError(f"{field}.template.securityContext", "is not allowed by this operator: an administrator "
                            f"must set {SETTING} to let jobs run as root or with a writable root filesystem")
