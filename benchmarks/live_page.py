"""The /dasktrain dashboard page: how fast a new event shows, and what the open page costs.

A scheduler of its own (``dask scheduler --preload dasktrain.dashboard``, so its CPU is its
own) and two 1-thread workers run the same comparison (features, kmeans, xgboost, ddp_cnn on
the built-in images, 300 per class, 2 repeats) alternately with the page open in headless
Chromium and closed, after one warm-up comparison; then 20 events are sent from the client and
timed until the page's own data holds them (over the DevTools protocol), and the driver's
cost of sending one is timed. Run it alone on a quiet
machine::

    python benchmarks/live_page.py [folder for the two screenshots of the docs]

It needs chromium. Not an asv benchmark: nothing here runs at import.
"""

import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent


def _browser():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import Browser

    return Browser


def _start_cluster(tmp):
    """A scheduler with the page and two 1-thread workers, each in processes of their own."""
    sf = tmp / "sched.json"
    local = ["--host", "127.0.0.1"]
    sched = subprocess.Popen(
        [BIN / "dask", "scheduler", *local, "--port", "0", "--dashboard-address", "127.0.0.1:0"]
        + ["--preload", "dasktrain.dashboard", "--scheduler-file", sf],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not sf.exists():
        time.sleep(0.1)
    time.sleep(0.5)  # the file is written before the scheduler listens
    workers = subprocess.Popen(
        [BIN / "dask", "worker", "--scheduler-file", sf, "--nthreads", "1", "--nworkers", "2"]
        + ["--memory-limit", "4GiB", *local],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return sched, workers, sf


def latency(client, url, tmp, n=20):
    """Seconds from sending a ``fit`` event to the page's data holding it, ``n`` times."""
    from dasktrain._dask.events import emit

    out = []
    with _browser()(url, tmp) as page:
        page.wait_for("window.Bokeh && Bokeh.documents.length")
        for _ in range(n):
            fid = uuid.uuid4().hex[:8]
            t0 = time.time()
            emit("fit", client, fit=fid, estimator="probe", iteration=1, value=1.0, path="probe")
            expr = f"Bokeh.documents[0].get_model_by_name('fits').data.fit.includes('{fid}')"
            while not page.evaluate(expr):
                time.sleep(0.01)
            out.append(time.time() - t0)
            time.sleep(0.3)
    return sorted(out)


def emit_cost(client, n=2000):
    """Microseconds the driver spends sending one event (a KMeans pass sends one)."""
    from dasktrain._dask.events import emit

    t0 = time.perf_counter()
    for i in range(n):
        emit("fit", client, fit="cost", estimator="probe", iteration=i, value=1.0, path="probe")
    return (time.perf_counter() - t0) / n * 1e6


_PROBE = "(e => e ? e.textContent : null)(document.getElementById('dasktrain-live'))"


def _watch(page, runner, shots):
    """Keep the page open while ``runner`` runs; screenshots during DDP and at the end."""
    taken = False
    while runner.is_alive():
        probe = json.loads(page.evaluate(_PROBE) or "{}")
        if shots and not taken and "start" in probe.get("rank_states", []):
            time.sleep(3)  # a few epochs in
            page.screenshot(shots / "dasktrain-page-ddp.png")
            taken = True
        time.sleep(0.5)
    if shots:
        time.sleep(2)
        page.screenshot(shots / "dasktrain-page-comparison.png")


def comparison(client, data, page_url, tmp, shots):
    """One comparison; the page open in Chromium while it runs when ``page_url`` is given."""
    import dasktrain

    box = {}

    def go():
        box["res"] = dasktrain.compare(
            ["features", "kmeans", "xgboost", "ddp_cnn"],
            data=data,
            client=client,
            repeat=2,
            warmup=False,
            progress=False,
            performance_report=False,
            options={"epochs": 4},
        )

    runner = threading.Thread(target=go)
    runner.start()
    if page_url:
        with _browser()(page_url, tmp, height=2000) as page:
            _watch(page, runner, shots)
    runner.join()
    return box["res"]


def main(shots):
    import psutil
    from distributed import Client

    import dasktrain
    from dasktrain.datasets import make_xray_like

    tmp = Path(tempfile.mkdtemp())
    data = make_xray_like(tmp / "data", n_per_class=300, size=64, seed=0)
    sched, workers, sf = _start_cluster(tmp)
    try:
        with Client(scheduler_file=str(sf)) as client:
            client.wait_for_workers(2)
            url = dasktrain.dashboard_link(client)
            cpu = psutil.Process(sched.pid)
            comparison(client, data, None, tmp, None)  # warm-up: imports on the workers
            for mode in ("open", "closed") * 3:
                c0, w0 = sum(cpu.cpu_times()[:2]), time.time()
                res = comparison(client, data, url if mode == "open" else None, tmp, shots)
                c, w = sum(cpu.cpu_times()[:2]) - c0, time.time() - w0
                print(
                    f"page {mode}: scheduler CPU {c:.2f} s over {w:.1f} s wall = "
                    f"{100 * c / w:.1f}% of a core; runs {sorted(set(res.runs.status))}"
                )
                shots = None if mode == "open" else shots
            print(f"emit from the driver: {emit_cost(client):.1f} us per event")
            lat = latency(client, url, tmp)
            print(f"event -> page: median {lat[len(lat) // 2]:.3f} s, max {lat[-1]:.3f} s")
    finally:
        workers.terminate()
        sched.terminate()
        workers.wait()
        sched.wait()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
