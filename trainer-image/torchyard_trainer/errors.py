"""How a trainer process fails, and the exit code each failure maps to.

The operator's ``ExitCode`` restart policy treats codes 1-127 as permanent and 128-255 as worth a
retry, so the codes here are chosen to land on the right side of that line: a bad config is the
user's to fix (2), a lost peer is infrastructure and a restart of the gang can cure it (170). A
process stopped by SIGTERM (preemption, a drain, a gang restart) exits with 143, 128 + SIGTERM, as
a process without a handler would; the operator counts that as an infrastructure restart, never
against ``backoffLimit``, whatever the restart policy.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_PEER_LOST = 170
EXIT_PREEMPTED = 143  # 128 + SIGTERM: stopped on request, after writing a checkpoint where it could

# Substrings of the errors torch.distributed backends raise when a peer process is gone or silent.
_COMMUNICATION_MARKERS = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "timed out",
    "pair closure",
    "gloo",
    "nccl",
    "socket",
)


class UserError(Exception):
    """A problem the user must fix in ``spec.trainer`` (or the files it points at).

    ``field`` is the dotted path of the offending setting, ``spec.trainer.dataset.path`` for
    example, so the operator can name it in the job's Failed condition.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Preempted(Exception):
    """The process was asked to stop (SIGTERM) and stopped at a safe point."""


class PeerLost(Exception):
    """Another process of the job stopped answering; the gang must be restarted."""


def is_communication_error(exc: BaseException) -> bool:
    """Whether ``exc`` means a peer is gone rather than a bug in this process."""
    if isinstance(exc, PeerLost):
        return True
    try:
        from torch.distributed import DistError
    except ImportError:  # pragma: no cover - torch always ships it
        DistError = ()  # type: ignore[assignment]
    if isinstance(exc, DistError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(marker in text for marker in _COMMUNICATION_MARKERS)
    return False
