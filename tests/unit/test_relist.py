"""A burst of kopf's listing events asks for one listing of the watch cache, and jobs are queued
after it; a listing that failed is tried again."""

from __future__ import annotations

import threading

import kopf

from torchyard import relist
from torchyard.relist import Relister


def test_a_burst_of_requests_lists_once_then_queues_the_jobs():
    calls, done = [], threading.Event()
    relister = Relister(lambda: calls.append("list"), lambda: (calls.append("queue"), done.set()), delay=0.05)
    for _ in range(50):
        relister.request()
    assert done.wait(5)
    assert calls == ["list", "queue"]


def test_a_request_after_the_listing_began_lists_again():
    calls, second = [], threading.Event()
    relister = Relister(lambda: calls.append("list"), lambda: second.set() if len(calls) == 2 else None, delay=0.01)
    relister.request()
    while not calls:
        pass
    relister.request()
    assert second.wait(5) and calls == ["list", "list"]


def test_a_failed_listing_is_tried_again(monkeypatch):
    monkeypatch.setattr(relist, "RETRY_SECONDS", 0.01)
    outcomes, done = [kopf.TemporaryError("connection refused"), None], threading.Event()

    def listing():
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome

    Relister(listing, done.set, delay=0.01).request()
    assert done.wait(5) and outcomes == []
