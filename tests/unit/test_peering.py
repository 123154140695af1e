"""The resync loops act on the same replica kopf lets act."""

from datetime import datetime, timezone

from torchyard.peering import acting

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def peer(priority, seen="2026-01-01T11:59:50+00:00", lifetime=60):
    return {"priority": priority, "lastseen": seen, "lifetime": lifetime}


def test_the_highest_live_priority_acts_and_the_others_wait():
    peers = {"a": peer(10), "b": peer(20)}
    assert acting(peers, 20, NOW)
    assert not acting(peers, 10, NOW)


def test_a_dead_higher_peer_no_longer_blocks():
    peers = {"a": peer(10), "b": peer(20, seen="2026-01-01T11:58:00+00:00")}
    assert acting(peers, 10, NOW)


def test_a_tie_pauses_everyone_as_kopf_does():
    assert not acting({"a": peer(10), "b": peer(10)}, 10, NOW)


def test_before_its_own_entry_appears_a_replica_does_not_act():
    assert not acting({}, 10, NOW)
    assert not acting({"other": peer(5)}, 10, NOW)
