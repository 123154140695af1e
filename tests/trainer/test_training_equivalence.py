"""The distributed paths compute what plain training computes.

DDP with two workers must equal one process stepping on both workers' batches combined, and the
synchronous parameter server (one or two shards) must equal DDP. Asynchronous PS has no exact
twin, so it must simply learn digits well.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from torchyard_trainer.config import parse_config
from torchyard_trainer.data import load_dataset
from torchyard_trainer.optim import build_optimizer
from torchyard_trainer.ps_protocol import plan_shards
from torchyard_trainer.worker import initial_model
from trainer_gang import DIGITS_MLP, assert_succeeded, run_gang, steps_per_epoch

pytestmark = pytest.mark.trainer

WORKERS = 2


def combined_batch_training(raw_config: dict, workers: int) -> dict[str, torch.Tensor]:
    """One process, each step on the union of what every worker's sampler gives it."""
    torch.set_num_threads(1)
    config = parse_config(raw_config)
    data = load_dataset(config.dataset, config.seed)
    model = initial_model(config, data)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    samplers = [DistributedSampler(range(len(data.x_train)), num_replicas=workers, rank=r, shuffle=True,
                                   seed=config.seed) for r in range(workers)]
    steps = math.ceil(len(samplers[0]) / config.batch_size)
    for epoch in range(config.epochs):
        orders = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
        for step in range(steps):
            window = slice(step * config.batch_size, (step + 1) * config.batch_size)
            index = torch.tensor([i for order in orders for i in order[window]])
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.state_dict()


def assert_same_weights(actual: dict, expected: dict, atol: float) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(actual[name], expected[name], atol=atol, rtol=0), (
            f"{name} differs by {(actual[name] - expected[name]).abs().max():.2e}")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run = run_gang(tmp_path_factory.mktemp("ddp"), DIGITS_MLP, workers=WORKERS)
    assert_succeeded(run)
    return run


def test_ddp_equals_one_process_on_the_combined_batch(ddp_run):
    expected = combined_batch_training(DIGITS_MLP, WORKERS)
    assert_same_weights(ddp_run.weights(), expected, atol=1e-5)
    assert ddp_run.result()["steps"] == DIGITS_MLP["epochs"] * steps_per_epoch(WORKERS, 32)


@pytest.mark.parametrize("servers", [1, 2])
def test_synchronous_parameter_servers_equal_ddp(tmp_path, ddp_run, servers):
    config = {**DIGITS_MLP, "parameterServer": {"mode": "Sync"}}
    run = run_gang(tmp_path, config, workers=WORKERS, parameter_servers=servers)
    assert_succeeded(run)
    assert_same_weights(run.weights(), ddp_run.weights(), atol=1e-5)
    assert run.result()["steps"] == ddp_run.result()["steps"]
    assert run.result()["metrics"]["accuracy"] == pytest.approx(ddp_run.result()["metrics"]["accuracy"], abs=0.003)


def test_a_synchronous_parameter_server_fed_two_gradient_buckets_equals_ddp(tmp_path):
    """A model whose shard is pushed in two buckets during backward (the digits MLP above fits in one)."""
    config = {**DIGITS_MLP, "model": {"name": "mlp", "hiddenSizes": [512, 512]}, "epochs": 1}
    parsed = parse_config(config)
    model = initial_model(parsed, load_dataset(parsed.dataset, parsed.seed))
    assert len(plan_shards([p.numel() for p in model.parameters()], 1).buckets(0)) == 2
    ddp = run_gang(tmp_path / "ddp", config, workers=WORKERS)
    assert_succeeded(ddp)
    run = run_gang(tmp_path / "ps", {**config, "parameterServer": {"mode": "Sync"}}, workers=WORKERS,
                   parameter_servers=1)
    assert_succeeded(run)
    assert_same_weights(run.weights(), ddp.weights(), atol=1e-5)


def test_asynchronous_parameter_server_learns_digits(tmp_path):
    config = {
        "model": {"name": "mlp", "hiddenSizes": [128]},
        "optimizer": {"name": "adam", "learningRate": 0.005},
        "epochs": 8,
        "batchSize": 32,
        "parameterServer": {"mode": "Async", "maxStaleness": 2},
    }
    run = run_gang(tmp_path, config, workers=WORKERS, parameter_servers=1)
    assert_succeeded(run)
    result = run.result()
    assert result["metrics"]["accuracy"] >= 0.95, result
    assert result["steps"] == 8 * steps_per_epoch(WORKERS, 32)
