"""A pass's writes sent at once: all of them go, the pass waits for all, the first failure wins."""

from __future__ import annotations

import logging
import threading

import pytest

from torchyard.fanout import Fanout


def test_the_calls_of_one_pass_run_at_once():
    meet = threading.Barrier(3, timeout=10)  # one after another, the first would wait forever alone
    fanout = Fanout(threads=4)
    try:
        fanout.all([meet.wait, meet.wait, meet.wait])
    finally:
        fanout.stop()


@pytest.mark.parametrize("threads", [0, 4])
def test_every_call_runs_and_the_first_failure_in_order_is_raised_after_all_ended(threads):
    done, fanout = [], Fanout(threads)

    def fails(name):
        def call():
            done.append(name)
            raise ValueError(name)
        return call

    with pytest.raises(ValueError, match="^b$"):
        fanout.all([lambda: done.append("a"), fails("b"), fails("c"), lambda: done.append("d")])
    fanout.stop()
    assert sorted(done) == ["a", "b", "c", "d"]


def test_a_call_left_to_run_later_logs_its_failure(caplog):
    fanout = Fanout(threads=1)

    def refused():
        raise RuntimeError("HTTP 403")

    with caplog.at_level(logging.WARNING, logger="torchyard.fanout"):
        fanout.later(refused, "event Running for TrainingJob ml/digits")
        fanout.stop(drain=True)
    assert "event Running for TrainingJob ml/digits: HTTP 403" in caplog.text
