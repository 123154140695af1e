"""The security settings every pod the operator creates gets: the `restricted` Pod Security level.

Non-root, no privilege escalation, no capabilities, the runtime's default seccomp profile and a
read-only root filesystem; writable paths are emptyDir volumes the builders mount.
"""

from __future__ import annotations

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


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
