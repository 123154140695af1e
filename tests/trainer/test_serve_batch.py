"""The adaptive batcher on its own: who shares a pass, what each request gets back, what a failure does."""

from __future__ import annotations

import asyncio

import pytest
import torch

from torchyard_trainer.serve_batch import Batcher

pytestmark = pytest.mark.trainer


class Recorder:
    """A model that doubles its input and remembers the size of every pass."""

    def __init__(self, fail: bool = False):
        self.passes: list[int] = []
        self.fail = fail

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.passes.append(batch.shape[0])
        if self.fail:
            raise RuntimeError("model exploded")
        return batch * 2


def rows(n: int, start: float) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1)


async def submit_all(batcher: Batcher, requests: list[torch.Tensor]) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.stop()


@pytest.mark.parametrize("wait", [0.0, 0.05])
def test_concurrent_requests_share_passes_and_each_gets_its_own_rows(wait):
    model, observed = Recorder(), []
    requests = [rows(1, 0), rows(2, 10), rows(1, 20), rows(3, 30), rows(1, 40)]
    results = asyncio.run(submit_all(Batcher(model, max_rows=4, max_wait=wait, observe=observed.append), requests))
    for request, result in zip(requests, results):
        assert torch.equal(result, request * 2)
    # In arrival order, never above 4 rows, never splitting a request: [1, 2, 1] then [3, 1].
    assert model.passes == [4, 4]
    assert observed == model.passes


def test_a_request_larger_than_the_limit_runs_alone():
    model = Recorder()
    results = asyncio.run(submit_all(Batcher(model, max_rows=2, max_wait=0), [rows(5, 0), rows(1, 9)]))
    assert model.passes == [5, 1]
    assert torch.equal(results[0], rows(5, 0) * 2)


def test_without_waiting_a_lone_request_is_not_held_back():
    model = Recorder()

    async def scenario():
        batcher = Batcher(model, max_rows=64, max_wait=0)
        batcher.start()
        try:
            return await asyncio.wait_for(batcher.submit(rows(1, 0)), timeout=5)
        finally:
            await batcher.stop()

    assert torch.equal(asyncio.run(scenario()), rows(1, 0) * 2)
    assert model.passes == [1]


def test_a_failing_pass_fails_every_request_in_it_and_the_batcher_goes_on():
    model = Recorder(fail=True)

    async def scenario():
        batcher = Batcher(model, max_rows=8, max_wait=0)
        batcher.start()
        try:
            first = await asyncio.gather(batcher.submit(rows(1, 0)), batcher.submit(rows(1, 1)), return_exceptions=True)
            model.fail = False
            second = await batcher.submit(rows(1, 5))
            return first, second
        finally:
            await batcher.stop()

    first, second = asyncio.run(scenario())
    assert [str(e) for e in first] == ["model exploded", "model exploded"]
    assert torch.equal(second, rows(1, 5) * 2)


def test_a_model_that_returns_the_wrong_number_of_rows_is_an_error_not_a_misrouted_answer():
    async def scenario():
        batcher = Batcher(lambda batch: batch[:1], max_rows=8, max_wait=0)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit(rows(1, 0)), batcher.submit(rows(1, 1)), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "returned 1 rows for a batch of 2" in str(r) for r in results)
