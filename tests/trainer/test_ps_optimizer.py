"""A server's shard stepped bucket by bucket is the shard stepped whole, and checkpoints keep the
whole-shard layout, so those written before the buckets load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchyard_trainer import ps_protocol as wire
from torchyard_trainer.config import OptimizerConfig
from torchyard_trainer.ps_optimizer import ShardOptimizer

pytestmark = pytest.mark.trainer

SIZES = [6, 4, 5]  # three tensors; with buckets of at least 5 values: [5] alone, then [6, 4]
OPTIMIZERS = [
    OptimizerConfig(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.01),
    OptimizerConfig(name="adam", learning_rate=0.01, weight_decay=0.01),
    OptimizerConfig(name="adamw", learning_rate=0.01, weight_decay=0.01),
]


def buckets() -> list[wire.Bucket]:
    result = wire.plan_shards(SIZES, 1).buckets(0, values=5)
    assert [(b.start, b.end) for b in result] == [(10, 15), (0, 10)]  # last tensors first
    return result


def gradients(steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(sum(SIZES), generator=generator) for _ in range(steps)]


def whole_shard(config: OptimizerConfig) -> tuple[nn.Parameter, torch.optim.Optimizer]:
    """The shard as one parameter, as servers stepped it before the buckets."""
    from torchyard_trainer.optim import build_optimizer

    param = nn.Parameter(torch.linspace(-1, 1, sum(SIZES)))
    return param, build_optimizer([param], config)


def step_whole(param: nn.Parameter, optimizer: torch.optim.Optimizer, gradient: torch.Tensor) -> None:
    param.grad = gradient.clone()
    optimizer.step()


def step_by_bucket(shard: ShardOptimizer, gradient: torch.Tensor) -> None:
    for index, bucket in enumerate(shard.buckets):
        shard.step(index, gradient[bucket.start:bucket.end].clone())


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: c.name)
def test_stepping_bucket_by_bucket_is_stepping_the_whole_shard(config):
    param, optimizer = whole_shard(config)
    flat = torch.linspace(-1, 1, sum(SIZES))
    shard = ShardOptimizer(flat, buckets(), config)
    for gradient in gradients(4):
        step_whole(param, optimizer, gradient)
        step_by_bucket(shard, gradient)
    assert torch.allclose(flat, param.detach(), atol=1e-7, rtol=0)


def test_a_bucket_stepped_alone_leaves_the_others_untouched():
    flat = torch.zeros(sum(SIZES))
    shard = ShardOptimizer(flat, buckets(), OPTIMIZERS[0])
    shard.step(0, torch.ones(5))
    assert torch.equal(flat[:10], torch.zeros(10)) and bool((flat[10:] < 0).all())


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: c.name)
def test_the_state_is_saved_as_one_shard_and_a_whole_shard_state_resumes(config):
    """A checkpoint from before the buckets (one parameter) resumes bucket by bucket where it left off,
    and what a bucketed server saves is that same layout, value for value."""
    param, optimizer = whole_shard(config)
    first, second = gradients(6)[:3], gradients(6)[3:]
    for gradient in first:
        step_whole(param, optimizer, gradient)
    flat = param.detach().clone()
    shard = ShardOptimizer(flat, buckets(), config)
    shard.load_state_dict(optimizer.state_dict())
    saved = shard.state_dict()
    expected = optimizer.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    assert saved["state"].keys() == expected["state"].keys() == {0}
    for key, value in expected["state"][0].items():
        assert torch.equal(saved["state"][0][key], value), key
    for gradient in second:
        step_whole(param, optimizer, gradient)
        step_by_bucket(shard, gradient)
    assert torch.allclose(flat, param.detach(), atol=1e-7, rtol=0)


def test_a_fresh_shard_saves_an_empty_state_that_loads():
    shard = ShardOptimizer(torch.zeros(sum(SIZES)), buckets(), OPTIMIZERS[1])
    ShardOptimizer(torch.zeros(sum(SIZES)), buckets(), OPTIMIZERS[1]).load_state_dict(shard.state_dict())
    assert shard.state_dict()["state"] == {}


def test_a_state_of_several_parameters_is_refused_with_what_was_expected():
    shard = ShardOptimizer(torch.zeros(sum(SIZES)), buckets(), OPTIMIZERS[0])
    with pytest.raises(ValueError, match="one parameter, its whole shard; got \\[2\\]"):
        shard.load_state_dict(shard.optimizer.state_dict())
