"""Adaptive batching: concurrent inference requests share one forward pass.

Each request queues its checked input rows and awaits its slice of the output. One task takes what
is queued, waits at most ``max_wait`` seconds for more while the batch is short of ``max_rows``
rows, runs the model once on the stacked rows and hands each request its part. With a wait of 0
nothing is held back: a batch is whatever arrived while the previous pass ran, so batching adds no
latency when the server is idle and grows with the load. A request larger than ``max_rows`` runs
alone; requests are never split.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

import torch

class Batcher:
    """Runs ``forward`` on batches of queued requests, in the order they arrived."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], max_rows: int, max_wait: float,
                 observe: Callable[[int], None] = lambda rows: None):
        self._forward = forward
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._observe = observe
        self._queue: deque[tuple[torch.Tensor, asyncio.Future]] = deque()
        self._rows = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, future in self._queue:
            if not future.done():
                future.set_exception(RuntimeError("the server stopped before this request ran"))

    async def submit(self, rows: torch.Tensor) -> torch.Tensor:
        """The model's output for ``rows``, computed in a batch with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future))
        self._rows += rows.shape[0]
        self._arrived.set()
        if self._rows >= self._max_rows:
            self._full.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            await self._fill()
            taken = self._take()
            if not self._queue:
                self._arrived.clear()
            self._run_batch(taken)
            await asyncio.sleep(0)  # let requests that arrived meanwhile queue up first

    async def _fill(self) -> None:
        if self._max_wait <= 0 or self._rows >= self._max_rows:
            return
        self._full.clear()
        try:
            await asyncio.wait_for(self._full.wait(), self._max_wait)
        except TimeoutError:
            pass

    def _take(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        taken = [self._queue.popleft()]
        rows = taken[0][0].shape[0]
        while self._queue and rows + self._queue[0][0].shape[0] <= self._max_rows:
            item = self._queue.popleft()
            rows += item[0].shape[0]
            taken.append(item)
        self._rows -= rows
        if self._rows < self._max_rows:
            self._full.clear()
        return taken

    def _run_batch(self, taken: list[tuple[torch.Tensor, asyncio.Future]]) -> None:
        live = [(rows, future) for rows, future in taken if not future.done()]  # a cancelled request drops out
        if not live:
            return
        batch = live[0][0] if len(live) == 1 else torch.cat([rows for rows, _ in live])
        try:
            output = self._forward(batch)
            if output.shape[0] != batch.shape[0]:
                raise RuntimeError(f"the model returned {output.shape[0]} rows for a batch of {batch.shape[0]}")
        except Exception as exc:  # each request of the batch answers 500 with the model's error (and logs it)
            for _, future in live:
                future.set_exception(exc)
            return
        self._observe(batch.shape[0])
        start = 0
        for rows, future in live:
            future.set_result(output[start:start + rows.shape[0]])
            start += rows.shape[0]
