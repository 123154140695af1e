"""Which replica acts, read from kopf's peering object.

kopf pauses its own handlers on every replica but the live one with the highest priority, and on
all of them when the highest priority is tied. Work the operator starts itself (the resync loops)
must follow the same rule, or a standby replica would reconcile too. kopf does not expose its
pause flag, so this reads the same peering status kopf writes and applies kopf's rule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from torchyard.reconcile.observe import parse_time


def acting(peers: Mapping[str, Mapping[str, Any]], priority: int, now: datetime) -> bool:
    """True when exactly one live peer has this replica's priority (itself) and none a higher one.

    `peers` is the peering object's status: peer id -> {priority, lastseen, lifetime}. Before this
    replica's own entry appears, it does not act.
    """
    live = [p for p in peers.values() if isinstance(p, Mapping) and _alive(p, now)]
    higher = [p for p in live if int(p.get("priority", 0)) > priority]
    same = [p for p in live if int(p.get("priority", 0)) == priority]
    return not higher and len(same) == 1


def _alive(peer: Mapping[str, Any], now: datetime) -> bool:
    seen = parse_time(peer.get("lastseen"))
    if seen is None:
        return False
    return seen + timedelta(seconds=int(peer.get("lifetime", 60))) > now
