"""The typed settings of a comparison: every default once, unknown keys refused, checked once."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import dasktrain
from dasktrain.exceptions import ValidationError, WorkloadError
from dasktrain.harness import Results
from dasktrain.harness.settings import CostSettings, RunContext, WorkloadOptions

CALLS = []


def _counted(data, engine, client):
    CALLS.append(engine)
    return {"accuracy": 1.0}


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype(np.float32), np.repeat([0, 1], 20)


def _compare(data, **kw):
    CALLS.clear()
    return dasktrain.compare(
        [_counted], data=data, engines=("local",), repeat=1, warmup=False, monitor=False, **kw
    )


def test_an_unknown_option_is_refused_before_any_run(features):
    # Regression: options={"epochz": 3} was silently ignored and ddp_cnn ran 8 epochs.
    with pytest.raises(WorkloadError, match=r"'epochz'; did you mean 'epochs'\? the settings are "):
        _compare(features, options={"epochz": 3})
    assert CALLS == []
    with pytest.raises(WorkloadError, match="no setting 'colour'; the settings are image_size, "):
        _compare(features, options={"colour": "rgb"})
    with pytest.raises(WorkloadError, match="must be a dict of workload settings"):
        _compare(features, options=[("epochs", 3)])
    assert CALLS == []


def test_a_bad_feature_kind_is_refused_before_any_run(features):
    # It used to fail only when the model workloads' features were first built.
    with pytest.raises(WorkloadError, match="model_features'\\]='sift'"):
        _compare(features, options={"model_features": "sift"})
    assert CALLS == []


def test_the_workloads_read_the_options_of_their_run(features):
    seen = []

    def step(data, engine, client):
        seen.append(dasktrain.harness.current().options)
        return {"accuracy": 1.0}

    res = dasktrain.compare(
        [step], data=features, engines=("local",), repeat=1, warmup=False, monitor=False,
        options={"epochs": 3},
    )  # fmt: skip
    assert seen == [WorkloadOptions(epochs=3)]
    assert res.setup["options"] == {"epochs": 3}  # what differs from the defaults
    assert RunContext().options == WorkloadOptions()
    assert RunContext(options={"epochs": 3}).options == WorkloadOptions(epochs=3)
    with pytest.raises(WorkloadError, match="did you mean 'epochs'"):
        RunContext(options={"epoch": 3})


def _documented_options():
    """``{name: default text}`` of the ``options`` entry of compare()'s docstring."""
    doc = dasktrain.compare.__doc__
    block = doc.split("    options : dict, optional\n")[1].split("\n    n_per_class")[0]
    text = " ".join(block.split())
    return dict(re.findall(r"``(\w+)`` \(([^):]+)", text))


def test_the_compare_docstring_lists_every_option_with_its_default():
    documented = _documented_options()
    fields = {f.name: f.default for f in dataclasses.fields(WorkloadOptions)}
    assert list(documented) == list(fields)
    for name, default in fields.items():
        assert documented[name] == repr(default).replace("'", '"'), name


def test_the_command_line_says_the_same_default_epochs():
    from dasktrain.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["compare"]
    (action,) = [a for a in sub._actions if a.dest == "epochs"]
    assert f"default: {WorkloadOptions().epochs};" in action.help


def _runs():
    return [
        {"workload": "w", "engine": "local", "setup": "local", "time": 2.0, "status": "ok"},
        {"workload": "w", "engine": "dask", "setup": "dask", "time": 1.0, "status": "ok"},
    ]


class CountingPrices(dict):
    """A price table that counts how often a machine is looked up in it."""

    lookups = 0

    def __contains__(self, key):
        type(self).lookups += 1
        return super().__contains__(key)


def test_the_cost_settings_are_checked_once_on_their_way_to_the_tables():
    CountingPrices.lookups = 0
    cost = CostSettings(prices=CountingPrices(local=0.2, dask=0.4)).for_setups(["local", "dask"])
    assert CountingPrices.lookups == 2
    res = Results(_runs(), settings=cost)
    assert CountingPrices.lookups == 2  # the runs' setups were checked already
    assert res.settings is cost
    assert (res.baseline, res.prices, res.time_basis) == ("local", cost.prices, "time")
    assert res.table.cost_usd.notna().all()


def test_results_take_the_settings_or_their_arguments_never_both():
    with pytest.raises(WorkloadError, match="not both"):
        Results(_runs(), settings=CostSettings(), baseline="dask")
    res = Results(_runs(), baseline="dask", time_basis="train_time", spot_discount=0.5)
    assert res.settings == CostSettings(
        baseline="dask",
        time_basis="train_time",
        spot_discount=0.5,
        setups=frozenset(["local", "dask"]),
    )
    with pytest.raises(ValidationError, match="time_basis='train' must be 'time'"):
        Results(_runs(), time_basis="train")
    with pytest.raises(WorkloadError, match="no entry for machine 'dask'"):
        Results(_runs(), prices={"local": 0.2})
    with pytest.raises(WorkloadError, match="must be a dict machine"):
        Results(_runs(), prices=[0.2])
