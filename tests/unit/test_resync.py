"""The resync loop repairs what events missed, so nothing may end it."""

import asyncio

from torchyard.handlers.resync import resync_forever


def test_a_connection_error_while_listing_does_not_end_the_loop():
    calls, reconciled = [], asyncio.Event()

    def list_items(namespace):
        calls.append(namespace)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")  # urllib3's, not an ApiException
        return [{"metadata": {"namespace": "ml", "name": "digits"}}]

    async def scenario():
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(resync_forever(
            "TrainingJob", list_items, lambda ns, name: loop.call_soon_threadsafe(reconciled.set),
            ["ml"], 0.01, lambda: True))
        try:
            await asyncio.wait_for(reconciled.wait(), 5)
        finally:
            task.cancel()
        assert not task.done() or task.cancelled()

    asyncio.run(scenario())
    assert len(calls) >= 2
