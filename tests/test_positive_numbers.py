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
