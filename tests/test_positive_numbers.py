"""Positive numbers are checked by one helper: a bool, NaN or infinity is refused everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dasktrain
from dasktrain._validation import check_positive_number
from dasktrain.exceptions import ValidationError
from dasktrain.harness import ResourceMonitor


@pytest.mark.parametrize("value", [math.nan, math.inf, True, 0, -1.5, "2"])
def test_check_positive_number_refuses(value):
    with pytest.raises(ValidationError, match="must be a number of seconds > 0"):
        check_positive_number(value, "interval", unit="seconds")
    assert check_positive_number(np.float32(0.5), "x") == 0.5


@pytest.mark.parametrize("value", [math.nan, True])
def test_kmeans_oversampling_factor(value):
    # Regression: NaN and True passed the hand-written check (NaN <= 0 is False).
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValidationError, match="oversampling_factor=.* must be a number > 0"):
        dasktrain.KMeans(2, oversampling_factor=value, engine="local").fit(X)


@pytest.mark.parametrize("value", [math.inf, True])
def test_monitor_interval(value):
    # Regression: an infinite interval and True (as 1 s) were accepted.
    with pytest.raises(ValidationError, match="interval=.* must be a number of seconds > 0"):
        ResourceMonitor(interval=value).start()


def test_compare_timeout_refuses_infinity():
    # None is "no limit"; infinity was a second way to say it.
    with pytest.raises(ValidationError, match="timeout=inf must be a number of seconds > 0"):
        dasktrain.compare([lambda d, e, c: {}], data=(np.zeros((4, 2)), np.arange(4) % 2),
                          engines=("local",), timeout=math.inf)  # fmt: skip


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_ddp_timeouts_refuse_nan_and_infinity(value):
    # Regression: the launcher's own check let both through (NaN <= 0 is False). With NaN a
    # job that returns at once failed as "timed out"; with infinity every rank failed in its
    # set-up (timedelta(seconds=inf) overflows).
    import dasktrain.ddp as ddp

    with pytest.raises(ValidationError, match="timeout=.* must be a number of seconds > 0"):
        ddp.run(print, timeout=value)
    with pytest.raises(ValidationError, match="timeout=.* must be a number of seconds > 0"):
        ddp.RankPool(timeout=value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_tf_collective_timeout_refuses_nan_and_infinity(value):
    pytest.importorskip("tensorflow")
    import dasktrain.tf as dtf

    with pytest.raises(ValidationError, match="collective_timeout=.* must be a number of seconds"):
        dtf.run(print, all_interfaces=True, collective_timeout=value)
