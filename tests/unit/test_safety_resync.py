"""The rare safety resync: nothing ends it, and every object is queued even when listing fails."""

from __future__ import annotations

import asyncio

from torchyard.handlers.lifecycle import safety_resync_forever


class Listing:
    """A cache whose listing fails as a dropped connection does, on every round."""

    def __init__(self) -> None:
        self.rounds = 0

    def relist(self, namespace: str | None) -> None:
        self.rounds += 1
        raise ConnectionResetError("connection reset by peer")


class Queue:
    def __init__(self) -> None:
        self.added: list[tuple[str, str]] = []

    def add(self, key) -> None:
        self.added.append(key)


async def rounds_of_resync(cached: Listing, queue: Queue, rounds: int) -> None:
    loop = asyncio.create_task(safety_resync_forever(cached, queue, None, 0.01, lambda: True,
                                                     keys=lambda: [("ml", "a"), ("ml", "b")]))
    while cached.rounds < rounds and not loop.done():
        await asyncio.sleep(0.01)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)


def test_a_failed_listing_neither_ends_the_loop_nor_skips_the_queueing():
    cached, queue = Listing(), Queue()
    asyncio.run(asyncio.wait_for(rounds_of_resync(cached, queue, rounds=3), timeout=10))
    assert cached.rounds >= 3
    assert queue.added[:4] == [("ml", "a"), ("ml", "b"), ("ml", "a"), ("ml", "b")]
