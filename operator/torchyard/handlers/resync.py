"""The resync loop: every object of a kind reconciled every few seconds, so rules that only time
changes (deadlines, TTL, grace periods) fire without an event, and a failed pass is retried."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import kopf

log = logging.getLogger(__name__)


async def resync_forever(
    kind: str,
    list_items: Callable[[str | None], list[dict]],
    reconcile: Callable[[str, str], None],
    namespaces: list[str] | None,
    interval: float,
    acting: Callable[[], bool],
) -> None:
    """`acting()` says whether this replica may act (see torchyard.peering); a standby only waits.

    No error ends the loop: it is what repairs a missed event, so a connection reset while listing
    (not an API error, and so not translated to kopf's errors) is logged and the next pass runs.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await _resync_once(kind, list_items, reconcile, namespaces, acting)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("resync of %s failed; retrying in %.0fs", kind, interval)


async def _resync_once(kind, list_items, reconcile, namespaces, acting) -> None:
    try:
        if not await asyncio.to_thread(acting):
            return
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("resync of %s: cannot tell which replica acts: %s", kind, exc)
        return
    for namespace in namespaces or [None]:
        try:
            items = await asyncio.to_thread(list_items, namespace)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.warning("resync of %s: %s", kind, exc)
            continue
        for item in items:
            meta = item["metadata"]
            await asyncio.to_thread(logged, kind, reconcile, meta["namespace"], meta["name"])


def logged(kind: str, reconcile: Callable[[str, str], None], namespace: str, name: str) -> None:
    """Reconcile, logging instead of raising: kopf does not retry event handlers, the resync does."""
    try:
        reconcile(namespace, name)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("reconcile of %s %s/%s: %s", kind, namespace, name, exc)
    except Exception:
        log.exception("reconcile of %s %s/%s failed", kind, namespace, name)
