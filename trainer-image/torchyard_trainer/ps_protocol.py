"""The parameter-server wire protocol, shared by both ends (docs/trainer.md describes it).

All messages are torch.distributed point-to-point transfers (gloo) on the job's one process
group. A worker starts every request with a header, an int64 tensor ``[op, step, rank, numel]``
sent with tag 1; a push follows it with its gradient shard (float32, tag 2) in buckets, last
tensors first, so a worker can send each bucket as soon as its backward pass has produced it
(see :func:`buckets`). A parameter server
answers pushes and pulls with its parameter shard (float32, tag 3) and a state request with one
pickled object (``send_object_list``). Each server owns the parameters the shard plan gives it and
keeps them as one flat tensor in model order. Each parameter reply carries one more value at its
end: 1.0 once the server has been asked to stop (SIGTERM), so the workers stop and checkpoint too.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch

OP_PUSH = 1   # gradients for one step; answered with fresh parameters (Sync: once all workers pushed)
OP_PULL = 2   # answered at once with the current parameters
OP_STATE = 3  # answered at once with {"optimizer": state_dict, "updates": n} (for a checkpoint)
OP_DONE = 4   # the worker has finished; no answer. A server exits once every worker is done.
OP_STOP = 5   # the worker stopped early on request (checkpoint written); no answer. The server stops too.
OP_NAMES = {OP_PUSH: "push", OP_PULL: "pull", OP_STATE: "state", OP_DONE: "done", OP_STOP: "stop"}
FINAL_OPS = (OP_DONE, OP_STOP)

TAG_HEADER = 1
TAG_GRADIENTS = 2
TAG_PARAMETERS = 3
HEADER_SIZE = 4
BUCKET_VALUES = 1 << 18  # a gradient bucket holds at least this many values (1 MiB), or the rest


@dataclass(frozen=True)
class Bucket:
    """One gradient message: tensors ``first..last`` of a server's shard, values ``start:end`` of its flat vector."""

    positions: tuple[int, ...]  # indices into the server's owned tensors, in model order
    start: int
    end: int


def header(op: int, step: int, rank: int, numel: int) -> torch.Tensor:
    return torch.tensor([op, step, rank, numel], dtype=torch.int64)


def wait(work, seconds: float) -> None:
    """Wait for one send or receive, giving up after ``seconds`` (the peer counts as lost)."""
    work.wait(timeout=datetime.timedelta(seconds=seconds))


@dataclass(frozen=True)
class ShardPlan:
    """Which parameter server owns each parameter tensor (by index in ``named_parameters`` order)."""

    owners: tuple[int, ...]
    sizes: tuple[int, ...]
    servers: int

    def owned(self, server: int) -> list[int]:
        """Indices of the tensors ``server`` holds, in model order (the order of its flat tensor)."""
        return [i for i, owner in enumerate(self.owners) if owner == server]

    def numel(self, server: int) -> int:
        return sum(self.sizes[i] for i in self.owned(server))

    def buckets(self, server: int, values: int = BUCKET_VALUES) -> list[Bucket]:
        """``server``'s gradient shard in send order: last tensors first, as backward produces them."""
        sizes = [self.sizes[i] for i in self.owned(server)]
        result, positions, end, count = [], [], sum(sizes), 0
        for position in reversed(range(len(sizes))):
            positions.insert(0, position)
            count += sizes[position]
            if count >= values or position == 0:
                result.append(Bucket(tuple(positions), end - count, end))
                positions, end, count = [], end - count, 0
        return result


def plan_shards(sizes: list[int], servers: int) -> ShardPlan:
    """Assign tensors to servers, largest first, each to the least-loaded server (ties: lowest).

    Every process computes the same plan from the same model, so the plan itself never travels.
    """
    load = [0] * servers
    owners = [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        server = min(range(servers), key=lambda s: (load[s], s))
        owners[index] = server
        load[server] += sizes[index]
    return ShardPlan(owners=tuple(owners), sizes=tuple(sizes), servers=servers)


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One contiguous float32 CPU tensor of ``tensors`` in order (what goes on the wire)."""
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for t in tensors])


def unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy ``flat`` back into ``tensors`` (in place, keeping their device and dtype)."""
    offset = 0
    with torch.no_grad():
        for tensor in tensors:
            count = tensor.numel()
            tensor.copy_(flat[offset:offset + count].view_as(tensor))
            offset += count
