"""The /dasktrain dashboard page: live events from a running comparison, read in Chromium."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request

import cloudpickle
import numpy as np
import pytest
from browser import Browser, chromium_exe

import dasktrain
from dasktrain._dask.events import emit, recording

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
# The ranks cannot import this test module: its train functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _live_cluster():
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="4GiB",
        scheduler_kwargs={"preload": ["dasktrain.dashboard"]},
    )


@pytest.fixture(scope="module")
def live_client():
    from distributed import Client

    with _live_cluster() as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _state(dask_scheduler=None):
    s = dask_scheduler.plugins["dasktrain-live"]
    return {
        "metrics": sum(len(r["series"]) for j in s.jobs.values() for r in j["ranks"].values()),
        "pids": [r["pid"] for j in s.jobs.values() for r in j["ranks"].values()],
        "fits": {k: len(f["points"]) for k, f in s.fits.items()},
        "cells": len(s.comparison["cells"]),
        "state": s.comparison["state"],
        "verdicts": dict(s.comparison["verdicts"]),
        "features": len(s.features),
    }


# JavaScript: the text of the cells a DataTable of the page shows (inside Bokeh's shadow DOM).
_SHOWN = """name => {
  const out = [];
  const walk = v => {
    if (!v) return;
    if (v.model && v.model.type === "DataTable" && v.model.source.name === name) {
      const root = v.shadow_el || v.el.shadowRoot;
      root.querySelectorAll(".slick-cell").forEach(c => out.push(c.textContent.trim()));
    }
    (v.child_views || []).forEach(walk);
  };
  Object.values(Bokeh.index).forEach(walk);
  return out;
}"""


def _train_until(flag, steps=6):
    """A DDP train function: reports a few steps, then waits for ``flag`` (a file)."""
    import dasktrain.ddp as ddp

    for step in range(1, steps + 1):
        ddp.report(step=step, loss=1.0 / step, accuracy=0.5 + 0.05 * step)
        time.sleep(0.05)
    deadline = time.monotonic() + 120
    while flag and not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"steps": steps}


def _ddp_workload(flag):
    def ddp_wait(data, engine, client):
        import dasktrain.ddp as ddp

        t0 = time.perf_counter()
        if engine == "dask":
            ddp.run(_train_until, flag, client=client, timeout=180)
        else:
            ddp.run_local(_train_until, None)
        return {"train_time": time.perf_counter() - t0, "accuracy": 0.8}

    ddp_wait.metric = "accuracy"
    return ddp_wait


@pytest.mark.browser
def test_the_page_shows_a_running_comparison(live_client, tmp_path):
    """A comparison with a KMeans fit and a DDP job: while the DDP job still runs, the page
    in Chromium holds its ranks' metrics, the KMeans passes and the grid of runs."""
    if chromium_exe() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flag = tmp_path / "release"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 512)).astype(np.float32)  # CNN-width features, k = 8
    X += np.repeat(rng.normal(scale=0.3, size=(8, 512)), 250, axis=0).astype(np.float32)
    y = np.repeat(np.arange(8), 250)

    def kmeans8(data, engine, client):
        from dasktrain.models import KMeans

        t0 = time.perf_counter()
        KMeans(8, engine=engine, random_state=0, client=client).fit(data[0])
        return {"train_time": time.perf_counter() - t0}

    box = {}

    def run():
        try:
            box["res"] = dasktrain.compare(
                [kmeans8, _ddp_workload(str(flag))],
                data=(X, y),
                client=live_client,
                repeat=1,
                warmup=False,
                monitor=False,
                performance_report=False,
                progress=False,
            )
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    try:
        url = dasktrain.dashboard_link(live_client)
        assert url.endswith("/dasktrain")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and live_client.run_on_scheduler(_state)["metrics"] < 12:
            time.sleep(0.2)
        seen = live_client.run_on_scheduler(_state)
        assert seen["metrics"] >= 12, seen  # 2 ranks x 6 steps, and the job is still running
        with Browser(url, tmp_path) as page:
            probe = page.wait_for(
                "(e => e && e.textContent && JSON.parse(e.textContent))"
                "(document.getElementById('dasktrain-live'))"
                " && JSON.parse(document.getElementById('dasktrain-live').textContent)",
                timeout=60,
            )
            assert not flag.exists() and runner.is_alive()  # read while the job runs
            assert probe is not None
            assert probe["ranks"] == 2 and probe["rank_states"] == ["start", "start"], probe
            assert probe["loss"] == 2 and probe["accuracy"] == 2, probe  # a curve per rank
            assert probe["fits"] >= 1 and probe["fit_curves"] >= 1, probe  # KMeans passes
            assert probe["cells"] == 4 and probe["done"] >= 2 and probe["running"] == 1, probe
            assert probe["workers"] == 2, probe
            shot = page.screenshot(tmp_path / "live.png")
            flag.write_text("go")
            runner.join(180)
            assert not runner.is_alive() and "error" not in box, box.get("error")
            # The tables redraw the rows whose values changed (regression: the DDP run's
            # row stayed "running" on screen, its data already said "done").
            shown = page.wait_for(f"({_SHOWN})('cells').filter(s => s === 'done').length == 4")
            assert shown, page.evaluate(f"({_SHOWN})('cells')")
        after = live_client.run_on_scheduler(_state)
        assert after["state"] == "end" and set(after["verdicts"]) == {"kmeans8", "ddp_wait"}
        assert all(p for p in after["pids"])  # every rank's pid came with its log lines
        # The report keeps what the page showed: the passes and the ranks' metrics, per run.
        kinds = {e["kind"] for e in box["res"].events}
        assert {"fit", "ddp", "ddp-metrics"} <= kinds, kinds
        out = box["res"].save(tmp_path / "report")
        report = (out / "report.html").read_text()
        assert "On this machine, " in report  # the answer opens the report
        assert "DDP ranks: loss" in report and "Iterative fits: the value" in report
        assert (out / "events.jsonl").read_text().count("ddp-metrics") >= 12
        from PIL import Image

        img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
        assert ((img.max(axis=2) - img.min(axis=2)) > 60).mean() > 0.0008  # drawn in colour
    finally:
        flag.write_text("go")
        runner.join(180)


def test_the_dashboard_lists_the_page(live_client):
    with urllib.request.urlopen(live_client.dashboard_link) as r:
        status = r.read().decode()
    assert 'href="dasktrain"' in status  # in the dashboard's list of pages
    with urllib.request.urlopen(dasktrain.dashboard_link(live_client)) as r:
        assert r.status == 200 and "dasktrain-live" in r.read().decode()


def test_a_scheduler_without_the_preload(client):
    """Absent-safe: no page, the link helper says how to get one, the library works."""
    from dasktrain.models import KMeans

    with pytest.warns(UserWarning, match="--preload dasktrain.dashboard"):
        assert dasktrain.dashboard_link(client) is None
    X = np.random.default_rng(0).normal(size=(400, 512))
    import dask.array as da

    km = KMeans(8, engine="dask", random_state=0, client=client).fit(da.from_array(X, 100))
    assert km.n_iter_ >= 1


def test_connect_starts_clusters_with_the_page():
    with dasktrain.connect(n_workers=1, dashboard_address="127.0.0.1:0") as client:
        try:
            assert dasktrain.dashboard_link(client).endswith("/dasktrain")
        finally:
            client.cluster.close()


def test_events_reach_the_page_state_and_the_recording(live_client):
    """Driver events go to the scheduler and to the open recordings; features from a task."""
    from dasktrain.features import HistogramFeatures

    with recording() as seen:
        emit(
            "fit",
            live_client,
            fit="t-1",
            estimator="T",
            iteration=1,
            metric="m",
            value=2.0,
            ms=1.0,
            path="test",
        )
        imgs = np.random.default_rng(0).random((64, 32, 32), dtype=np.float32)
        import dask.array as da

        F = HistogramFeatures(engine="dask").fit(imgs).transform(da.from_array(imgs, 16))
        live_client.compute(F).result()
    assert [e["kind"] for e in seen] == ["fit"]  # the chunks' events were sent by workers
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = live_client.run_on_scheduler(_state)
        if s["fits"].get("t-1") and s["features"] >= 4:
            break
        time.sleep(0.1)
    assert s["fits"]["t-1"] == 1 and s["features"] >= 4, s


def test_an_event_never_fails_its_step(live_client):
    """A value msgpack cannot carry is dropped (logged), the caller goes on."""
    rec = emit("fit", live_client, fit="bad", value=object())
    assert rec["kind"] == "fit"
    assert json.dumps(live_client.run_on_scheduler(_state)["cells"]) is not None


def _fail_once(marker):
    """Rank 1 fails on the job's first attempt (the marker file says it did)."""
    import dasktrain.ddp as ddp

    ddp.report(step=1, loss=1.0)
    if ddp.rank_info().rank == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("rank 1 fails on its first attempt")
    return 1


def test_the_page_shows_a_restart_and_its_reason(live_client, tmp_path):
    import dasktrain.ddp as ddp

    result = ddp.run(_fail_once, str(tmp_path / "failed"), client=live_client, max_restarts=1)
    assert result.attempts == 2

    def job(dask_scheduler=None):
        s = dask_scheduler.plugins["dasktrain-live"]
        j = list(s.jobs.values())[-1]
        return {"state": j["state"], "attempt": j["attempt"], "errors": j["errors"]}

    deadline = time.monotonic() + 10
    while (seen := live_client.run_on_scheduler(job))["state"] != "done":
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    assert seen["attempt"] == 1 and [e[1] for e in seen["errors"]] == ["restart"]
    assert "rank 1 fails on its first attempt" in seen["errors"][0][2]


def test_a_paused_worker_is_red_with_its_reason(own_client):
    """The workers table says why a worker is paused (its memory against its limit)."""
    from dasktrain.dashboard._page import worker_rows

    def pause_for_memory(dask_worker):
        # Dask's own memory monitor pauses it: its memory is above this pause mark. (Setting
        # the status by hand raced the monitor, which resumes a worker under its mark every
        # 100 ms: the test failed in a fresh clone.)
        dask_worker.memory_manager.memory_pause_fraction = 0.001

    first = sorted(own_client.scheduler_info()["workers"])[0]
    own_client.run(pause_for_memory, workers=[first])

    def rows(dask_scheduler=None):
        return worker_rows(dask_scheduler)

    deadline = time.monotonic() + 10
    while "paused" not in (r := own_client.run_on_scheduler(rows))["status"]:
        assert time.monotonic() < deadline, r
        time.sleep(0.1)
    i = r["worker"].index(first)
    assert r["status"][i] == "paused" and r["reason"][i].startswith("paused for memory: ")
    assert "MiB of a 4,096 MiB limit" in r["reason"][i]
    assert [x for j, x in enumerate(r["reason"]) if j != i] == [""]


def test_boosting_rounds_reach_the_page(live_client):
    """XGBoost on the dask engine: one event per round from rank 0, its eval metric."""
    import dask.array as da

    from dasktrain.models import XGBClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 512)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    Xd, yd = da.from_array(X, 100), da.from_array(y, 100)
    est = XGBClassifier(n_estimators=7, engine="dask", client=live_client)
    est.fit(Xd, yd, eval_set=[(Xd, yd)])

    def rounds(dask_scheduler=None):
        fits = dask_scheduler.plugins["dasktrain-live"].fits
        return [f for f in fits.values() if f["estimator"] == "XGBClassifier"]

    deadline = time.monotonic() + 10
    while not (fits := live_client.run_on_scheduler(rounds)) or len(fits[-1]["points"]) < 7:
        assert time.monotonic() < deadline, fits
        time.sleep(0.1)
    points = fits[-1]["points"]
    assert [p[0] for p in points] == list(range(1, 8))
    assert fits[-1]["metric"] == "validation_0-logloss" and points[-1][1] < points[0][1]


def _rows_read():
    import dasktrain.ddp as ddp

    return sum(len(y) for _, y in ddp.shard("train", window=1))


def test_a_job_fed_by_dask_shows_each_ranks_share(live_client):
    """Each rank's row says how many of the dataset's rows its own worker holds."""
    import dask.array as da

    import dasktrain.ddp as ddp

    X = da.random.random((640, 512), chunks=(80, 512))
    y = da.zeros(640, chunks=80, dtype=int)
    X, y = live_client.persist([X, y])
    read = ddp.run(_rows_read, client=live_client, datasets={"train": (X, y)}, timeout=120)
    assert sum(read.values()) == 640

    def shards(dask_scheduler=None):
        jobs = dask_scheduler.plugins["dasktrain-live"].jobs
        return [r["shards"] for r in list(jobs.values())[-1]["ranks"].values()]

    held = [s["train"] for s in live_client.run_on_scheduler(shards)]
    assert len(held) == 2 and all(h.endswith(" of 640 rows here") for h in held), held
    assert sum(int(h.split(" of ")[0].replace(",", "")) for h in held) == 640


@pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")
def test_a_worker_killed_mid_fit_shows_on_the_page(tmp_path):
    """SIGKILL a worker in the middle of a KMeans fit on a cluster with the page: the fit ends
    with the same model, its passes on the page switch from the direct connections to the
    scheduler, and the page and the client keep working."""
    import signal

    import dask.array as da
    from distributed import Client

    from dasktrain.models import KMeans

    X = np.random.default_rng(0).random((12000, 512), dtype=np.float32)
    Xd = da.from_array(X, chunks=(1000, -1))
    params = dict(n_clusters=8, engine="dask", tol=0, max_iter=60, random_state=0)
    with _live_cluster() as cluster, Client(cluster, set_as_default=False) as client:
        ref = KMeans(**params, client=client).fit(Xd)
        pids = client.run(os.getpid)

        def passes(dask_scheduler=None):
            fits = list(dask_scheduler.plugins["dasktrain-live"].fits.values())
            return [(f["path"], len(f["points"])) for f in fits]

        def kill_at_pass_20():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen = client.run_on_scheduler(passes)
                if len(seen) == 2 and seen[-1][1] >= 20:
                    os.kill(pids[sorted(pids)[1]], signal.SIGKILL)
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_at_pass_20)
        killer.start()
        km = KMeans(**params, client=client).fit(Xd)
        killer.join(10)
        np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-5)

        def points(dask_scheduler=None):
            return list(dask_scheduler.plugins["dasktrain-live"].fits.values())[-1]["points"]

        seen = client.run_on_scheduler(points)
        assert [p[0] for p in seen] == list(range(1, km.n_iter_ + 1))
        paths = [p[3] for p in seen]
        # The pass that lost its worker went through the scheduler; the group then restarts.
        assert paths[:20] == ["direct"] * 20 and "scheduler" in paths[20:], paths
        client.wait_for_workers(2, timeout=60)
        with urllib.request.urlopen(dasktrain.dashboard_link(client), timeout=30) as r:
            assert r.status == 200
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3


@pytest.mark.browser
def test_events_missing_fields_never_break_the_page(live_client, tmp_path):
    """Regression: a fit event without a path made the page's callback raise, and bokeh then
    left curdoc() patched with the page's document: every later report in this process (the
    test's LocalCluster runs its scheduler here) failed."""
    if chromium_exe() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from bokeh.io import curdoc

    from dasktrain.harness.report.page import build_layout

    with Browser(dasktrain.dashboard_link(live_client), tmp_path) as page:
        assert page.wait_for("window.Bokeh && Bokeh.documents.length")
        for kind in ("fit", "features", "ddp", "ddp-rank", "cell", "verdict", "compare"):
            emit(kind, live_client, fit="partial", job="partial", rank=0)
        emit("fit", live_client, fit="whole", estimator="E", iteration=1, value=1.0, path="p")
        found = "Bokeh.documents[0].get_model_by_name('fits').data.fit.includes('whole')"
        assert page.wait_for(found, timeout=10)  # still drawing
    time.sleep(1.5)  # the page's callbacks ran with the partial events in the state
    curdoc()  # raised "Patched curdoc has been previously destroyed"
    from dasktrain.harness import Results

    build_layout(Results([{"workload": "w", "engine": "local", "time": 1.0}]))
