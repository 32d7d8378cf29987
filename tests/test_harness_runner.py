"""compare(): interleaving, fairness, errors, and nothing lost on the way."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import dask
import numpy as np
import pytest

import dasktrain
from dasktrain.exceptions import ClusterConnectionError, ValidationError, WorkloadError
from dasktrain.harness import Results
from dasktrain.testing import make_blobs


def _one_builtin(name, data, client):
    """``compare([name])`` on both engines, once, unmonitored; its table by workload x engine."""
    res = dasktrain.compare(
        [name],
        data=data,
        repeat=1,
        client=client,
        warmup=False,
        performance_report=False,
        monitor=False,
    )
    return res.table.set_index(["workload", "engine"])


def test_builtin_workloads_accept_string_labels(client, blobs):
    # Regression: the train/test split used np.bincount and failed on labels like "NORMAL".
    X, y = blobs
    t = _one_builtin("logreg", (X, np.array(["NORMAL", "PNEUMONIA"])[y]), client)
    for e in ("local", "dask"):
        assert t.loc[("logreg", e), "status"] == "ok", t.loc[("logreg", e), "error"]
        assert t.loc[("logreg", e), "quality"] > 0.9


# ------------------------------------------------------------------------- compare()

CALLS = []


def user_step(data, engine, client):
    """A user workload: sums X on the chosen engine, reports train_time and a quality."""
    X, y = data
    CALLS.append(engine)
    t0 = time.perf_counter()
    if engine == "dask":
        import dask.array as da

        total = float(client.compute(da.from_array(X, chunks=50).sum()).result())
    else:
        total = float(np.sum(X))
    return {"train_time": time.perf_counter() - t0, "checksum": total, "n": len(X)}


def broken(data, engine, client):
    raise RuntimeError("this workload is broken on purpose")


def thread_probe(data, engine, client):
    from threadpoolctl import threadpool_info

    from dasktrain.harness import current

    pools = threadpool_info()
    return {
        "n_threads": current().n_threads,
        "blas_threads": max((p["num_threads"] for p in pools), default=-1),
    }


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(200, 4, 2, random_state=0)


def test_compare_user_workloads_interleaved_and_warmup_excluded(client, blobs):
    CALLS.clear()
    res = dasktrain.compare(
        [user_step, broken],
        data=blobs,
        repeat=2,
        client=client,
        interval=0.05,
        performance_report=False,
    )
    runs = res.runs
    ok = runs[runs.workload == "user_step"].sort_values("start")
    # warm-up (local, dask) then A B A B; the warm-up is not recorded.
    assert CALLS == ["local", "dask", "local", "dask", "local", "dask"]
    assert ok.engine.tolist() == ["local", "dask", "local", "dask"]
    assert (ok.status == "ok").all()
    assert ok["quality"].tolist() == [pytest.approx(float(blobs[0].sum()))] * 4
    assert (ok.time >= ok.train_time).all()
    assert (ok.threads == 2).all() and ok.devices.tolist() == [1, 2, 1, 2]
    t = res.table.set_index(["workload", "engine"])
    assert t.loc[("user_step", "dask"), "repeats"] == 2
    # The broken workload is reported in its rows with its error, and did not stop the others.
    for e in ("local", "dask"):
        assert t.loc[("broken", e), "status"] == "error"
        assert "broken on purpose" in t.loc[("broken", e), "error"]
    assert res.setup["workers"] == 2 and res.setup["threads"] == 2
    assert "numpy" in res.setup["versions"]
    assert len(res.samples) and set(res.samples.run) == set(ok.run)


def test_local_engine_gets_as_many_cores_as_the_cluster(blobs):
    # A 3-thread cluster on a 2-core machine: the local run must get 3 threads, not cpu_count().
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=3, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as lc,
        Client(lc, set_as_default=False) as c3,
    ):
        res = dasktrain.compare(
            [thread_probe],
            data=blobs,
            engines=("local",),
            repeat=1,
            client=c3,
            warmup=False,
            monitor=False,
        )
    row = res.runs.iloc[0]
    assert row["metric.n_threads"] == 3  # what compare told the workload
    # threadpoolctl limited the BLAS/OpenMP pools of the local run to the cluster's threads.
    assert row["metric.blas_threads"] in (3, -1)
    assert res.setup["threads"] == 3 and res.performance_report is None


def test_builtin_workloads_on_a_feature_matrix(client, blobs):
    names = ["kmeans", "logreg", "naive_bayes", "read"]
    res = dasktrain.compare(
        names,
        data=blobs,
        repeat=1,
        client=client,
        warmup=False,
        performance_report=False,
        interval=0.2,
    )
    t = res.table.set_index(["workload", "engine"])
    for w in ["kmeans", "logreg", "naive_bayes"]:
        for e in ("local", "dask"):
            assert t.loc[(w, e), "status"] == "ok", t.loc[(w, e), "error"]
            assert t.loc[(w, e), "quality"] > 0.5  # two well separated blobs
    # `read` needs a folder: it says so instead of faking a number.
    assert t.loc[("read", "local"), "status"] == "unavailable"
    assert "folder" in t.loc[("read", "local"), "error"]


def test_mlp_cv_learns_features_of_very_different_scales(client):
    # Regression: CNN feature channels differ in scale by orders of magnitude; the MLP of
    # mlp_cv got them unscaled and stayed at chance (0.48 in the default demo).
    from sklearn.datasets import make_classification

    X, y = make_classification(400, 8, n_informative=4, random_state=0)
    X = X * np.logspace(-3, 3, 8)
    t = _one_builtin("mlp_cv", (X, y), client)
    for e in ("local", "dask"):
        assert t.loc[("mlp_cv", e), "status"] == "ok", t.loc[("mlp_cv", e), "error"]
        assert t.loc[("mlp_cv", e), "quality"] > 0.8


# ------------------------------------------------------------------------- bad input


def test_unknown_workload(blobs):
    with pytest.raises(WorkloadError, match="unknown workload 'kmeanz'.*'kmeans'"):
        dasktrain.compare(["kmeanz"], data=blobs, engines=("local",))


def test_empty_data(tmp_path):
    with pytest.raises(WorkloadError, match="0 samples"):
        dasktrain.compare(["logreg"], data=(np.zeros((0, 3)), np.zeros(0)), engines=("local",))
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(WorkloadError, match="is empty"):
        dasktrain.compare(["read"], data=tmp_path, engines=("local",))
    with pytest.raises(WorkloadError, match="does not exist"):
        dasktrain.compare(["read"], data=tmp_path / "nope", engines=("local",))


def test_price_table_without_the_machine(blobs):
    with pytest.raises(WorkloadError, match="no entry for machine 'dask'.*'local'"):
        dasktrain.compare([user_step], data=blobs, prices={"local": 0.2})


def test_unreachable_scheduler(blobs):
    t0 = time.perf_counter()
    with dask.config.set({"dasktrain.connect-timeout": "1s"}):
        with pytest.raises(ClusterConnectionError, match="tcp://127.0.0.1:9"):
            dasktrain.compare([user_step], data=blobs, client="tcp://127.0.0.1:9")
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"engines": ("local", "flink")}, "flink"),
        ({"engines": ("dask",), "baseline": "local"}, "baseline"),
        ({"repeat": 0}, "repeat"),
        ({"sizes": [10, -1]}, "sizes"),
        ({"spot_discount": 2}, "spot_discount"),
        ({"client": "notaurl"}, "address='notaurl' is not a scheduler address"),
    ],
)
def test_bad_arguments(blobs, kw, match):
    with pytest.raises(ValidationError, match=match):
        dasktrain.compare([user_step], data=blobs, **kw)


def test_workload_must_return_a_dict(blobs):
    res = dasktrain.compare(
        [lambda d, e, c: 3.0], data=blobs, engines=("local",), repeat=1, warmup=False, monitor=False
    )
    assert res.runs.status.iloc[0] == "error"
    assert "must return a dict" in res.runs.error.iloc[0]


def needs_a_missing_package(data, engine, client):
    """A workload whose optional package is missing, as torch is on a machine without it."""
    from dasktrain._compat import import_optional

    import_optional("dasktrain_no_such_package", "torch")
    return {"accuracy": 1.0}


def test_missing_optional_package_is_an_unavailable_row(blobs):
    # Regression: an OptionalDependencyError raised by a workload was reported as an "error";
    # it is "unavailable", with the extra to install, and the comparison goes on.
    res = dasktrain.compare(
        [needs_a_missing_package, user_step],
        data=blobs,
        engines=("local",),
        repeat=2,
        warmup=False,
        monitor=False,
    )
    t = res.table.set_index("workload")
    assert t.loc["needs_a_missing_package", "status"] == "unavailable"
    assert "dasktrain[torch]" in t.loc["needs_a_missing_package", "error"]
    assert t.loc["user_step", "status"] == "ok" and t.loc["user_step", "repeats"] == 2
    # An unavailable workload is not run again for the remaining repeats.
    assert (res.runs.workload == "needs_a_missing_package").sum() == 1


# ------------------------------------------------------------------------- nothing lost
# Regressions of issue 11: a finished comparison threw its results away at the very end for
# a string metric, a train_time that is None or text, time_basis="train", a non-UTF-8 file name
# in an error, or an --out that is a file or cannot be written; Results.save wrote through links.


def str_first(data, engine, client):
    return {"model": "xgb-v2", "accuracy": 0.75}


def tt_none(data, engine, client):
    return {"train_time": None, "accuracy": 0.5}


def tt_text(data, engine, client):
    return {"train_time": "fast", "accuracy": 0.5}


def non_utf8_error(data, engine, client):
    name = b"/data/caf\xe9.png".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    raise OSError(f"cannot open {name}")


def test_metrics_that_are_not_numbers_never_lose_a_run(blobs, tmp_path):
    res = dasktrain.compare(
        [str_first, tt_none, tt_text, non_utf8_error],
        data=blobs,
        engines=("local",),
        repeat=1,
        warmup=False,
        monitor=False,
    )
    runs = res.runs.set_index("workload")
    assert runs.loc["str_first", "status"] == "ok"
    assert runs.loc["str_first", "quality_metric"] == "accuracy"  # the first *numeric* one
    assert runs.loc["str_first", "quality"] == 0.75
    assert runs.loc["str_first", "metric.model"] == "xgb-v2"
    assert runs.loc["tt_none", "status"] == "ok" and math.isnan(runs.loc["tt_none", "train_time"])
    assert (
        runs.loc["tt_text", "status"] == "ok"
        and "'fast' is not a number" in runs.loc["tt_text", "note"]
    )
    assert runs.loc["non_utf8_error", "status"] == "error"
    assert "caf\\udce9.png" in runs.loc["non_utf8_error", "error"]
    d = res.save(tmp_path / "out")
    assert "caf\\udce9.png" in (d / "results.csv").read_text(encoding="utf-8")
    assert "caf\\udce9.png" in res.to_string()
    # Results built by hand from such records work too.
    rec = {
        "workload": "w",
        "engine": "local",
        "time": 1.0,
        "error": "bad \udce9",
        "status": "error",
    }
    assert "\\udce9" in Results([rec]).table.error.iloc[0]


def _counted(data, engine, client):
    CALLS.append(engine)
    return {"accuracy": 1.0}


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"time_basis": "train"}, "time_basis='train' must be 'time'"),
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": "10s"}, "timeout='10s'"),
        ({"progress": "yes"}, "progress='yes'"),
    ],
)
def test_arguments_checked_before_any_run(blobs, kw, match):
    CALLS.clear()
    with pytest.raises(ValidationError, match=match):
        dasktrain.compare([_counted], data=blobs, engines=("local",), repeat=1, **kw)
    assert CALLS == []


def test_output_folder_checked_before_any_run(blobs, tmp_path):
    afile = tmp_path / "report"
    afile.write_text("my notes")
    bad = {
        "an existing file": (afile, "is an existing file"),
        "below a file": (afile / "sub", "cannot be written"),
        "an unwritable place": ("/proc/dasktrain-report", "cannot be written"),
        "empty": ("", "is empty"),
    }
    links = tmp_path / "links"
    links.mkdir()
    victim = tmp_path / "victim.csv"
    victim.write_text("precious")
    (links / "results.csv").symlink_to(victim)
    bad["a folder with a link"] = (links, r"symbolic link\(s\) \['results.csv'\]")
    for what, (out, match) in bad.items():
        CALLS.clear()
        with pytest.raises(ValidationError, match=match):
            dasktrain.compare([_counted], data=blobs, engines=("local",), repeat=1, out=out)
        assert CALLS == [], what
    assert afile.read_text() == "my notes" and victim.read_text() == "precious"


def test_save_never_writes_through_a_link(blobs, tmp_path):
    res = dasktrain.compare(
        [_counted], data=blobs, engines=("local",), repeat=1, warmup=False, monitor=False
    )
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.html"
    victim.write_text("precious")
    (out / "report.html").symlink_to(victim)
    with pytest.raises(ValidationError, match="never writes through a link"):
        res.save(out)
    assert victim.read_text() == "precious" and (out / "report.html").is_symlink()
    (out / "report.html").unlink()
    res.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html",
        "results.csv",
        "results.json",
        "runs.csv",
        "samples.csv",
    ]  # no temporary file left


def _interrupt_on_third(data, engine, client):
    CALLS.append(engine)
    if len(CALLS) == 3:
        raise KeyboardInterrupt
    return {"accuracy": float(len(CALLS)), "train_time": 0.01}


def test_each_run_is_appended_as_it_finishes(blobs, tmp_path):
    out = tmp_path / "out"
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        dasktrain.compare(
            [_interrupt_on_third],
            data=blobs,
            engines=("local",),
            repeat=5,
            warmup=False,
            monitor=False,
            out=out,
        )
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the two runs that finished before the interruption
    kept = Results.from_runs(out)
    assert kept.runs.quality.tolist() == [1.0, 2.0] and (kept.runs.status == "ok").all()
    # A second comparison appends to the same file; each reads back its own rows.
    res = dasktrain.compare(
        [_counted], data=blobs, engines=("local",), repeat=2, warmup=False, monitor=False, out=out
    )
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4
    again = Results.from_runs(out / "runs.jsonl")
    assert len(again.runs) == 2 and again.setup["comparison"] == res.setup["comparison"]
    first = json.loads(lines[0])["comparison"]
    assert len(Results.from_runs(out, comparison=first).runs) == 2
    with pytest.raises(ValidationError, match="no runs of comparison 'nope'"):
        Results.from_runs(out, comparison="nope")


def test_runs_read_back_keep_the_setups_of_their_comparison(blobs, client, tmp_path):
    # Read back from runs.jsonl, a report used to say "(? cores)": the setups were not logged.
    from dasktrain.harness.report.page import write_report

    out = tmp_path / "out"
    res = dasktrain.compare(
        [_counted],
        data=blobs,
        engines=("local", "dask"),
        client=client,
        repeat=1,
        warmup=False,
        monitor=False,
        performance_report=False,
        out=out,
    )
    kept = Results.from_runs(out)
    assert kept.setup["setups"] == res.setup["setups"] and kept.setup["engines"] == [
        "local",
        "dask",
    ]
    assert kept.setup["comparison"] == res.setup["comparison"]
    html = write_report(kept, tmp_path / "kept.html").read_text()
    assert "? cores" not in html and "(2 cores)" in html


RELEASE = threading.Event()


def hangs_locally(data, engine, client):
    if engine == "local":
        RELEASE.wait(60)  # a local run that never returns (released at the end of the test)
        return {"accuracy": 0.0}
    return {"accuracy": 1.0}


def _sleep_seceded(seconds):
    from distributed import secede

    secede()  # frees the worker's thread slot: the session cluster stays usable meanwhile
    time.sleep(seconds)
    return seconds


def hangs_on_the_cluster(data, engine, client):
    if engine == "dask":
        client.submit(_sleep_seceded, 30, pure=False).result()
    return {"accuracy": 1.0}


def test_timeout_reports_the_run_and_the_comparison_returns(blobs, client, tmp_path):
    RELEASE.clear()
    t0 = time.perf_counter()
    try:
        res = dasktrain.compare(
            [hangs_locally, hangs_on_the_cluster, user_step],
            data=blobs,
            repeat=2,
            client=client,
            warmup=False,
            monitor=False,
            performance_report=False,
            timeout=2,
            out=tmp_path / "out",
        )
    finally:
        RELEASE.set()
    elapsed = time.perf_counter() - t0
    assert elapsed < 40, elapsed  # 2 timeouts of 2 s (+ up to 2 s each to wind down), not 60
    runs = res.runs.set_index(["workload", "engine"]).sort_index()
    local = runs.loc[("hangs_locally", "local")]
    assert local.status == "timeout" and "time limit of 2 s" in local.error
    assert "left running in the background" in local.error  # honest: a thread cannot be killed
    assert runs.loc[("hangs_locally", "dask"), "status"].tolist() == ["ok", "ok"]
    dask_row = runs.loc[("hangs_on_the_cluster", "dask")]
    assert (
        dask_row.status == "timeout" and "1 task(s) on the cluster were cancelled" in dask_row.error
    )
    assert "background" not in dask_row.error  # cancelling its task ended it
    assert (runs.loc[("user_step",)].status == "ok").all()
    t = res.table.set_index(["workload", "engine"])
    assert t.loc[("hangs_locally", "local"), "status"] == "timeout"
    # The timed-out rows were written as they happened.
    logged = [json.loads(x) for x in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "timeout" for r in logged) == 2


def test_worker_watch_sees_a_death_after_a_broadcast_scatter(own_client):
    # Regression: Client.scatter(broadcast=True) logs a scheduler event holding WorkerState
    # objects; reading the whole "all" topic then failed, and every later worker death went
    # unseen (runs that lost a worker said they lost none).
    import signal

    from dasktrain._dask import WorkerWatch

    own_client.scatter(np.arange(4096.0), broadcast=True)
    watch = WorkerWatch(own_client)
    pids = own_client.run(os.getpid)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    lost = watch.lost(wait=10)
    assert [a for a, expected in lost if not expected] == [victim]


def _slow_block(*blocks, block_index, row_offset, seconds):
    time.sleep(seconds)
    return block_index


def test_direct_passes_are_compute_not_idle(client):
    # Regression: "compute 0.00025 s" for a KMeans run whose passes went over direct
    # connections: its work ran outside any task the task stream shows, and was counted idle.
    import dask.array as da

    from dasktrain._dask import BlockRunner
    from dasktrain.harness.measure.breakdown import observe, split_time

    X = da.from_array(np.zeros((400, 2)), chunks=(100, 2))
    with BlockRunner([X], client, direct="test-compute") as runner:
        runner.map(_slow_block, seconds=0.0)  # the group starts outside the observed window
        assert runner._group, "the direct group did not start"
        with observe(client, "direct-compute-test") as obs:
            t0 = time.time()
            assert runner.map(_slow_block, seconds=0.3) == [0, 1, 2, 3]  # 2 blocks a worker
            t1 = time.time()
    parts = split_time(t0, t1, obs)
    assert parts["tasks"] == 0  # no task ran: the stream alone saw nothing to call compute
    assert parts["compute_s"] >= 0.55 and parts["idle_s"] < 0.1, parts
