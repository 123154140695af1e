"""A plain DDP training script, as a user would write one: launched by `torchrun train.py`, it
reads only what torchrun gives every process (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), checks one gloo all_reduce, trains a tiny model for a few steps on the digits
dataset and prints one line starting with E2E-RESULT and a JSON object. Rank 0 saves the model
into --output (or TORCHYARD_MODEL_DIR) when one is given."""
from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch.nn.parallel import DistributedDataParallel


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", default=os.environ.get("TORCHYARD_MODEL_DIR", ""))
    args = parser.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")  # env:// from MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    model, losses = train(rank, world, args.epochs)
    saved = save(args.output, rank, model, losses)
    print("E2E-RESULT " + json.dumps({
        "rank": rank, "world_size": world, "local_rank": int(os.environ["LOCAL_RANK"]),
        "master_addr": os.environ["MASTER_ADDR"], "master_port": int(os.environ["MASTER_PORT"]),
        "host": socket.gethostname(), "allreduce": total.item(), "expected": world * (world + 1) / 2,
        "first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses), "saved": saved,
    }), flush=True)
    dist.destroy_process_group()
    return 0


def train(rank: int, world: int, epochs: int) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data[rank::world], dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target[rank::world])
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(epochs):
        for start in range(0, len(x) - 63, 64):  # the same number of steps on every rank
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[start:start + 64]), y[start:start + 64])
            loss.backward()
            optimizer.step()
            losses.append(round(loss.item(), 4))
    return model.module, losses


def save(output: str, rank: int, model: torch.nn.Module, losses: list[float]) -> list[str] | None:
    if not output or rank != 0:
        return None
    path = Path(output)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / "model.pt")
    (path / "losses.json").write_text(json.dumps(losses))
    return sorted(p.name for p in path.iterdir())


if __name__ == "__main__":
    raise SystemExit(main())
