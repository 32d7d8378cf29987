"""compare(clusters=...): several setups in one comparison, on real local clusters."""

from __future__ import annotations

import os
import time

import numpy as np
import psutil
import pytest

import dasktrain
from dasktrain.harness import current
from dasktrain.testing import make_blobs


def summed(data, engine, client):
    """Sum the rows; on the dask engine in 4 chunks (tasks the breakdown can see)."""
    X, _ = data
    if engine == "local":
        return {"total": float(X.sum())}
    import dask.array as da

    if current().setup == "one":
        # Output of a worker of a cluster compare() started: to the log file, not the terminal.
        client.run(os.write, 2, b"noise from a worker of 'one'\n")
    total = client.compute(da.from_array(X, chunks=len(X) // 4).sum()).result()
    return {"total": float(total)}


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.timeout(240)
def test_two_clusters_of_different_sizes_give_the_scaling_curve(client, tmp_path):
    X, y = make_blobs(2000, 16, 2)
    before = _children()
    log = tmp_path / "dasktrain.log"
    res = dasktrain.compare(
        [summed],
        data=(X, y),
        clusters={"one": 1, "mine": client},  # a cluster started here and the caller's own
        repeat=2,
        warmup=False,
        interval=0.1,
        log=log,
    )
    # One row per setup, the local engine first; every run ok and right.
    t = res.table.set_index("setup")
    assert list(t.index) == ["local", "one", "mine"]
    assert (t.status == "ok").all() and (t.repeats == 2).all()
    assert t.loc["one", "workers"] == 1 and t.loc["mine", "workers"] == 2
    assert t.loc["local", "threads"] == 2  # as many cores as the largest cluster
    assert res.runs["quality"].dropna().tolist() == [pytest.approx(X.sum())] * 6
    # The strong-scaling curve: 1 -> 2 workers, with its ideal.
    ss = res.strong_scaling.set_index("setup")
    assert ss.workers.tolist() == [1, 2] and ss.ideal.tolist() == [1.0, 2.0]
    assert ss.loc["mine", "efficiency"] == pytest.approx(ss.loc["mine", "speedup"] / 2)
    assert list(res.by_setup.columns) == ["local", "one", "mine"]
    # Every dask run ran in a span named after it, and its time is split into parts that add
    # up to its whole-step time.
    d = res.runs[res.runs.engine == "dask"]
    assert sorted(set(d.span)) == [
        f"summed/{s}/all/run-{i}" for s in ("mine", "one") for i in (1, 2)
    ]
    parts = d[["startup_s", "transfer_s", "idle_s", "compute_s"]].sum(axis=1)
    # (to a microsecond: the parts come from UNIX timestamps, the time from perf_counter)
    np.testing.assert_allclose(parts, d.time, rtol=1e-6, atol=1e-6)
    assert (d.tasks >= 4).all() and (d.compute_s > 0).all()
    assert "summed" in res.verdicts.verdict.iloc[0]
    # The caller's client still works; the cluster compare() started is gone.
    assert client.submit(sum, [1, 2]).result() == 3
    deadline = time.monotonic() + 20
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (_children() - before)
    # What the started cluster's workers wrote went to the log file.
    assert "noise from a worker of 'one'" in log.read_text()


def test_spans_reach_the_callers_scheduler(client, blobs):
    res = dasktrain.compare(
        [summed], data=blobs, clusters={"mine": client}, repeat=1, warmup=False, monitor=False
    )

    def span_names(dask_scheduler):
        return [s.name for s in dask_scheduler.extensions["spans"].spans.values()]

    (span_id,) = res.runs[res.runs.engine == "dask"].span_id
    names = client.run_on_scheduler(span_names)
    assert ("summed/mine/all/run-1",) in names, names  # a span's name is a tuple of tags
    assert span_id


def _spans_with_tasks(dask_scheduler):
    """``{span name: [task group names]}`` of every span on the scheduler that holds tasks
    that computed (scattered data, which no task computes, is left out)."""
    ext = dask_scheduler.extensions["spans"]
    out = {}
    for s in ext.spans.values():
        computed = sorted(g.name for g in s.groups if g.duration > 0)
        if computed:
            out.setdefault("/".join(s.name), []).extend(computed)
    return out


@pytest.mark.timeout(240)
def test_every_task_runs_in_the_span_of_its_run(own_client):
    # Regression: the warm-up and the timed runs shared one span name, and xgboost's predict
    # tasks landed in the "default" span. (The booster its predictions scatter is data, not a
    # task: the scheduler files scattered data under "default", and it computes nothing there.)
    res = dasktrain.compare(
        ["kmeans", "xgboost", "logreg"],
        data=make_blobs(600, 8, 2),
        clusters={"mine": own_client},
        sizes=[300, 600],
        repeat=2,
        monitor=False,
        performance_report=False,
    )
    assert (res.runs.status == "ok").all(), res.runs.error.dropna().tolist()
    found = own_client.run_on_scheduler(_spans_with_tasks)
    runs = {f"{w}/mine/{s}/run-{i}" for w in ("kmeans", "xgboost", "logreg") for s in (300, 600)
            for i in (1, 2)}  # fmt: skip
    warmups = {f"{w}/mine/300/warm-up" for w in ("kmeans", "xgboost", "logreg")}
    assert set(found) == runs | warmups, {k: v for k, v in found.items() if k not in runs}
    assert set(res.runs[res.runs.engine == "dask"].span) == runs


@pytest.fixture
def blobs():
    return make_blobs(512, 8, 2)
