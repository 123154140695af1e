"""Which pod failures are worth a retry, and whose fault they were.

`restartPolicy` is the user's rule: `Never` never retries, `OnFailure` always does, `ExitCode`
treats exit codes 1-127 as permanent (the program said no) and 128-255 as retryable (it was
killed by a signal, the OOM killer among them). Whatever the policy, a failure the program did
not cause (eviction, preemption, a lost node, a stop on SIGTERM) is retried and not charged to
`backoffLimit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from torchyard.reconcile.conditions import timestamp
from torchyard.reconcile.observe import PodView

# Pod-level reasons set by the kubelet or the control plane, never by the program.
INFRASTRUCTURE_REASONS = frozenset(
    {"Evicted", "Preempted", "Preempting", "NodeLost", "NodeShutdown", "Shutdown", "Terminated",
     "UnexpectedAdmissionError", "DeletionByTaintManager", "DisruptionTarget"}
)

# 128 + SIGTERM: the program was stopped from outside (a preemption, a drain, a suspend). The
# bundled trainer exits with it after checkpointing; any program without a handler dies with it.
EXIT_STOPPED = 143
# The bundled trainer's code for "a peer of the gang was lost": the consequence of another
# member's failure, charged to whatever that failure was when one is seen.
EXIT_PEER_LOST = 170


@dataclass(frozen=True)
class Failure:
    pod: str
    role: str
    index: int
    exit_code: int | None
    reason: str
    message: str
    retryable: bool
    infrastructure: bool

    @property
    def consequence(self) -> bool:
        return self.exit_code == EXIT_PEER_LOST

    def describe(self) -> str:
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"
        text = f"{self.pod} failed ({code}, {self.reason or 'Error'})"
        return f"{text}: {self.message}" if self.message else text

    def as_status(self, now: datetime) -> dict:
        out = {"pod": self.pod, "role": self.role, "index": self.index, "reason": self.reason or "Error",
               "message": self.message, "time": timestamp(now)}
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        return out


def classify(pod: PodView, restart_policy: str) -> Failure:
    infrastructure = pod.reason in INFRASTRUCTURE_REASONS or pod.exit_code in (None, EXIT_STOPPED)
    if infrastructure:
        retryable = True
    elif restart_policy == "Never":
        retryable = False
    elif restart_policy == "ExitCode":
        retryable = (pod.exit_code or 0) >= 128
    else:
        retryable = True
    return Failure(pod.name, pod.role, pod.index, pod.exit_code, pod.reason, pod.message, retryable, infrastructure)
