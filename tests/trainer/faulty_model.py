"""A user model (``model.name: module``) that can kill its own process mid-training.

It wraps the bundled MLP; the process whose ``RANK`` equals ``FAULT_RANK`` SIGKILLs itself in
its ``FAULT_AT_STEP``-th training forward pass, in attempt 0 only, as a crashed node would.
"""

import os
import signal

from torch import nn

from torchyard_trainer.models import MLP


class KillAt(nn.Module):
    def __init__(self, net: nn.Module, kill_at: int):
        super().__init__()
        self.net = net
        self.kill_at = kill_at
        self.calls = 0

    def forward(self, x):
        if self.training and self.kill_at:
            self.calls += 1
            if self.calls == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def build(input_shape, num_outputs):
    chosen = os.environ.get("RANK") == os.environ.get("FAULT_RANK") and os.environ.get("TORCHYARD_ATTEMPT") == "0"
    kill_at = int(os.environ.get("FAULT_AT_STEP", "0")) if chosen else 0
    return KillAt(MLP(input_shape[0], [64], num_outputs, 0.0), kill_at)
