"""Results: the table, scaling and crossover math against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from dasktrain.exceptions import ValidationError, WorkloadError
from dasktrain.harness import Results, RunRecord
from dasktrain.harness.measure.records import RUN_COLUMNS


def _runs(workload, engine, times, *, train=None, energy=None, devices=1, size=None, quality=None):
    out = []
    for i, t in enumerate(times):
        out.append(
            {
                "workload": workload,
                "engine": engine,
                "repeat": i + 1,
                "status": "ok",
                "time": t,
                "train_time": train[i] if train else math.nan,
                "energy_j": energy[i] if energy else math.nan,
                "devices": devices,
                "size": size,
                "quality_metric": "accuracy",
                "quality": quality[i] if quality else 0.9,
            }
        )
    return out


# ------------------------------------------------------------------------- Results math


def test_results_table_math():
    runs = _runs("xgb", "local", [10.0, 12.0, 11.0], train=[8.0, 9.0, 10.0], energy=[200, 220, 210])
    runs += _runs(
        "xgb", "dask", [5.0, 6.0, 4.0], train=[2.0, 3.0, 4.0], energy=[100, 120, 110], devices=4
    )
    prices = {"m5": {"usd_per_hour": 0.4, "spot_discount": 0.5}, "c5": 1.0}
    res = Results(runs, prices=prices, machines={"local": "c5", "dask": ("m5", 4)})
    t = res.table.set_index("engine")
    assert t.loc["local", "time_median"] == 11.0
    assert (t.loc["dask", "time_min"], t.loc["dask", "time_max"]) == (4.0, 6.0)
    assert t.loc["dask", "train_time_median"] == 3.0
    assert t.loc["dask", "speedup"] == pytest.approx(11 / 5)  # 2.2
    assert t.loc["dask", "improvement_pct"] == pytest.approx(120.0)  # (11/5 - 1) x 100
    assert t.loc["dask", "efficiency"] == pytest.approx(2.2 / 4)  # speedup / devices
    assert t.loc["local", "speedup"] == 1 and t.loc["local", "improvement_pct"] == 0
    assert t.loc["dask", "edp"] == pytest.approx(110 * 5)  # median energy x median time
    assert t.loc["local", "edp"] == pytest.approx(210 * 11)
    # Cost per run: 4 machines x 0.4 USD/h x (1 - 0.5 spot) x 5 s / 3600.
    assert t.loc["dask", "cost_usd"] == pytest.approx(4 * 0.4 * 0.5 * 5 / 3600)
    assert t.loc["local", "cost_usd"] == pytest.approx(1.0 * 11 / 3600)
    assert t.loc["dask", "machine"] == "4 x m5"


def test_results_global_spot_discount_and_train_basis():
    runs = _runs("lr", "local", [4.0], train=[3.0]) + _runs("lr", "dask", [8.0], train=[1.0])
    res = Results(
        runs, prices={"local": 2.0, "dask": 2.0}, spot_discount=0.7, time_basis="train_time"
    )
    t = res.table.set_index("engine")
    assert t.loc["dask", "speedup"] == pytest.approx(3.0)
    assert t.loc["dask", "improvement_pct"] == pytest.approx(200.0)
    assert t.loc["dask", "cost_usd"] == pytest.approx(2.0 * 0.3 * 1.0 / 3600)
    # The whole-step basis says the opposite: slower, negative improvement.
    t2 = Results(runs).table.set_index("engine")
    assert t2.loc["dask", "speedup"] == pytest.approx(0.5)
    assert t2.loc["dask", "improvement_pct"] == pytest.approx(-50.0)
    assert math.isnan(t2.loc["dask", "cost_usd"]) and math.isnan(t2.loc["dask", "edp"])


def test_edp_uses_the_whole_step_time_on_a_train_basis():
    # Regression: with time_basis="train_time", EDP multiplied whole-step energy by the
    # training time only.
    runs = _runs("lr", "local", [10.0], train=[5.0], energy=[100])
    t = Results(runs, time_basis="train_time").table.set_index("engine")
    assert t.loc["local", "edp"] == pytest.approx(100 * 10.0)


def test_crossover():
    sizes = [100, 200, 400, 800]
    runs = []
    for s, tl, td in zip(sizes, [1, 2, 4, 8], [3, 3, 3, 3]):
        runs += _runs("km", "local", [tl], size=s) + _runs("km", "dask", [td], size=s)
    for s, tl, td in zip(sizes, [1, 2, 3, 4], [2, 3, 4, 5]):
        runs += _runs("nb", "local", [tl], size=s) + _runs("nb", "dask", [td], size=s)
    for s, tl, td in zip(sizes, [3, 2, 4, 8], [1, 3, 3, 3]):  # wins, loses, then wins for good
        runs += _runs("mlp", "local", [tl], size=s) + _runs("mlp", "dask", [td], size=s)
    for s in sizes:
        runs += _runs("xgb", "local", [10], size=s) + _runs("xgb", "dask", [1], size=s)
    res = Results(runs)
    cr = res.crossover.set_index("workload")
    assert cr.loc["km", "crossover_size"] == 400
    assert cr.loc["mlp", "crossover_size"] == 400
    assert math.isnan(cr.loc["nb", "crossover_size"])
    assert "does not win in range [100, 800]" in cr.loc["nb", "note"]
    assert cr.loc["xgb", "crossover_size"] == 100 and "whole range" in cr.loc["xgb", "note"]
    sc = res.scaling
    assert len(sc) == 4 * 2 * 4
    km = sc[(sc.workload == "km") & (sc.engine == "dask")].set_index("size")
    assert km.loc[800, "speedup"] == pytest.approx(8 / 3)
    # The main table holds the largest size.
    assert set(res.table["size"]) == {800}


def test_results_errors_and_failed_rows():
    runs = _runs("a", "local", [1.0]) + _runs("a", "dask", [2.0])
    runs.append(
        {"workload": "b", "engine": "local", "status": "error", "error": "boom", "time": math.nan}
    )
    res = Results(runs)
    row = res.table.set_index("workload").loc["b"]
    assert row.status == "error" and row.error == "boom" and math.isnan(row.time_median)
    assert "boom" in res.to_string()
    with pytest.raises(WorkloadError, match="no entry for machine 'dask'"):
        Results(runs, prices={"local": 1.0})
    with pytest.raises(ValidationError, match="spot_discount"):
        Results(runs, spot_discount=1.5)
    with pytest.raises(WorkloadError, match="at least one run"):
        Results([])


def test_run_records_and_dicts_make_the_same_runs():
    # A RunRecord is what compare() keeps; a user's dicts are what Results(...) accepts.
    rec = RunRecord("a", "local", time=1.0, quality_metric="accuracy", quality=0.9)
    rec.metrics["accuracy"] = 0.9
    rec.add_note("first")
    rec.add_note("second")
    row = rec.as_row()
    assert row["note"] == "first; second" and row["metric.accuracy"] == 0.9
    assert set(RUN_COLUMNS) <= set(row) and "metrics" not in row
    from_record = Results([rec]).table
    from_dict = Results([row]).table
    assert from_record.equals(from_dict)


def test_a_busy_machine_is_said_in_the_text_and_the_report(tmp_path):
    from dasktrain.harness.report.page import write_report

    quiet = _runs("fit", "local", [1.0, 1.1]) + _runs("fit", "dask", [0.6, 0.7])
    for r in quiet:
        r["others_cpu_percent_mean"] = 12.0
    busy = [dict(r) for r in quiet]
    busy[2]["others_cpu_percent_mean"] = busy[3]["others_cpu_percent_mean"] = 160.0
    text = Results(quiet).to_string()
    assert text.splitlines()[1].startswith("Machine: quiet: other programs used at most 0.12")
    header = next(line for line in text.splitlines() if line.startswith("workload"))
    assert "BUSY" not in text and "busy" not in header  # no busy column on a quiet machine
    assert "fit: dask is faster here (1.6x); 2 runs each: local 1-1.1 s, dask 0.6-0.7 s" in text
    res = Results(busy)
    text = res.to_string()
    assert text.splitlines()[1].startswith("Machine: BUSY: more than 0.50 cores during 2 of")
    assert "2/2" in text  # dask's row: both of its runs busy
    html = write_report(res, tmp_path / "r.html").read_text()
    assert "Machine: BUSY" in html and "<tr class='ok busy'>" in html
