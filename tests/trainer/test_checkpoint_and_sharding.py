"""Checkpoint files and the parameter-server shard plan, without starting any process."""

from __future__ import annotations

import pytest
import torch

from torchyard_trainer import checkpoint
from torchyard_trainer.config import parse_config
from torchyard_trainer.ps_protocol import flatten, plan_shards, unflatten_into

pytestmark = pytest.mark.trainer


def state(step: int, fingerprint: str = "f1") -> dict:
    return {"fingerprint": fingerprint, "step": step, "epoch": 0, "batch": step, "model": {"w": torch.full((2,), step)},
            "rng": [None]}


def test_the_newest_complete_checkpoint_of_the_same_run_wins(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(str(tmp_path), state(step))
    (tmp_path / ".ckpt-0000000040.pt.abc.tmp").write_bytes(b"half a write")  # a writer that crashed
    checkpoint.save(str(tmp_path), state(50, fingerprint="other settings"))
    (tmp_path / "ckpt-0000000060.pt").write_bytes(b"not a checkpoint")
    assert checkpoint.latest(str(tmp_path), "f1")["step"] == 30


def test_only_the_newest_few_checkpoints_are_kept(tmp_path):
    for step in range(1, 7):
        checkpoint.save(str(tmp_path), state(step))
    kept = sorted(p.name for p in tmp_path.glob("ckpt-*.pt"))
    assert kept == [f"ckpt-{s:010d}.pt" for s in range(7 - checkpoint.KEEP, 7)]


def test_the_background_writer_has_written_once_closed(tmp_path):
    writer = checkpoint.Writer(str(tmp_path / "new"))
    writer.submit(state(5))
    writer.submit(state(6))
    writer.close()
    assert checkpoint.latest(str(tmp_path / "new"), "f1")["step"] == 6


def test_the_fingerprint_ignores_epochs_but_not_what_shapes_the_numbers():
    base = checkpoint.fingerprint(parse_config({"epochs": 5}), "AllReduce", 2, 0)
    assert checkpoint.fingerprint(parse_config({"epochs": 9}), "AllReduce", 2, 0) == base
    assert checkpoint.fingerprint(parse_config({"epochs": 5, "seed": 1}), "AllReduce", 2, 0) != base
    assert checkpoint.fingerprint(parse_config({"epochs": 5}), "AllReduce", 3, 0) != base


def test_shards_are_balanced_by_size_and_cover_every_tensor_once():
    sizes = [8192, 128, 1280, 10, 64, 64]
    plan = plan_shards(sizes, 2)
    owned = [plan.owned(s) for s in range(2)]
    assert sorted(owned[0] + owned[1]) == list(range(len(sizes)))
    assert owned[0] == [0] and plan.numel(1) == sum(sizes) - 8192  # the big tensor alone, the rest together
    assert plan_shards(sizes, 2) == plan  # every process computes the same plan
    assert [plan_shards([5] * 6, 3).numel(s) for s in range(3)] == [10, 10, 10]


def test_flat_shards_round_trip_into_the_tensors():
    tensors = [torch.zeros(2, 3), torch.zeros(4)]
    values = torch.arange(10, dtype=torch.float32)
    unflatten_into(values, tensors)
    assert torch.equal(flatten(tensors), values) and tensors[0][1, 2] == 5
