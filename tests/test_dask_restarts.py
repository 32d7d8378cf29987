"""Restarts: the one restart policy of the DDP job, the XGBoost fit and scatter's pieces."""

from __future__ import annotations

import logging

from dasktrain._dask.restarts import Restarts


def test_a_budget_of_two_restarts_allows_three_attempts(caplog):
    r = Restarts("the step", 2)
    assert (r.attempt, r.attempts, r.restarts) == (0, 1, 0)
    with caplog.at_level(logging.WARNING, logger="dasktrain._dask.restarts"):
        assert r.failed("worker A died", resume="ckpt-10")
        assert r.failed("worker B died")
    assert "the step failed: worker A died; restart 1 of 2" in caplog.text
    assert (r.attempt, r.attempts, r.restarts) == (2, 3, 2)
    assert not r.failed("worker C died")
    assert r.attempt == 2  # no attempt after the last failure
    assert r.failures == ["worker A died", "worker B died", "worker C died"]
    assert r.resumed == ["ckpt-10", None]


def test_no_budget_or_a_final_failure_never_restarts():
    assert not Restarts("the step", 0).failed("lost")
    r = Restarts("the step", 5)
    assert not r.failed("time is up", final=True)
    assert (r.attempt, r.failures, r.resumed) == (0, ["time is up"], [])
