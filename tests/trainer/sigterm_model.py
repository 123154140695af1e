"""A user model (``model.name: module``) that sends SIGTERM mid-training, as a kubelet would.

It wraps the bundled MLP. In attempt 0, the process whose ``RANK`` equals ``SIGNAL_RANK`` sends
SIGTERM in its ``SIGNAL_AT_STEP``-th training forward pass: to itself, or to the process whose pid
is in the file ``SIGNAL_PID_FILE`` (a parameter server, which runs no forward pass).
"""

import os
import signal
from pathlib import Path

from torch import nn

from torchyard_trainer.models import MLP


class SignalAt(nn.Module):
    def __init__(self, net: nn.Module, signal_at: int):
        super().__init__()
        self.net = net
        self.signal_at = signal_at
        self.calls = 0

    def forward(self, x):
        if self.training and self.signal_at:
            self.calls += 1
            if self.calls == self.signal_at:
                os.kill(_target(), signal.SIGTERM)
        return self.net(x)


def _target() -> int:
    pid_file = os.environ.get("SIGNAL_PID_FILE")
    return int(Path(pid_file).read_text()) if pid_file else os.getpid()


def build(input_shape, num_outputs):
    chosen = os.environ.get("RANK") == os.environ.get("SIGNAL_RANK") and os.environ.get("TORCHYARD_ATTEMPT") == "0"
    signal_at = int(os.environ.get("SIGNAL_AT_STEP", "0")) if chosen else 0
    return SignalAt(MLP(input_shape[0], [64], num_outputs, 0.0), signal_at)
