"""Results.save(): report files, an HTML that parses and loads nothing from the network."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import dasktrain
from dasktrain.harness import Results
from dasktrain.testing import make_blobs


class _Refs(HTMLParser):
    """Collects tags and every src/href attribute (script bodies are not tags)."""

    def __init__(self):
        super().__init__()
        self.tags, self.refs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append((tag, k, v))


def _parse(path):
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def _network_refs(parser):
    return [r for r in parser.refs if r[2].startswith(("http://", "https://", "//"))]


def _synthetic_results():
    runs, samples = [], []
    t0 = 1_700_000_000.0
    clock = t0
    for size, (tl, td) in {100: (1.0, 2.0), 400: (4.0, 3.0)}.items():
        for rep in (1, 2):
            for engine, t in (("local", tl), ("dask", td)):
                runs.append(
                    {
                        "workload": "kmeans",
                        "engine": engine,
                        "size": size,
                        "repeat": rep,
                        "status": "ok",
                        "time": t * (1 + 0.1 * rep),
                        "train_time": t / 2,
                        "quality_metric": "silhouette",
                        "quality": 0.5,
                        "devices": 2 if engine == "dask" else 1,
                        "start": clock,
                        "end": clock + t,
                        "energy_j": math.nan,
                    }
                )
                for k in range(3):
                    for proc, role in (("driver", "driver"), ("tcp://w1", "worker")):
                        samples.append(
                            {
                                "time": clock + k * 0.5,
                                "elapsed": k * 0.5,
                                "source": "psutil",
                                "process": proc,
                                "pid": 1,
                                "role": role,
                                "cpu_percent": 50.0 + k,
                                "rss": 1e8 + k,
                                "run": len(runs),
                            }
                        )
                clock += t
    runs.append(
        {
            "workload": "ddp_cnn",
            "engine": "local",
            "status": "unavailable",
            "error": "dasktrain.ddp is not available <script>",
            "time": math.nan,
        }
    )
    return Results(
        runs,
        samples=pd.DataFrame(samples),
        prices={"local": 0.1, "dask": 0.2},
        setup={"workers": 2, "threads": 2, "versions": {"numpy": np.__version__}},
    )


def test_save_writes_every_file(tmp_path):
    res = _synthetic_results()
    out = res.save(tmp_path / "report")
    for name in ("report.html", "results.csv", "results.json", "samples.csv", "runs.csv"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "results.csv")
    assert len(table) == len(res.table) == 3
    data = json.loads((out / "results.json").read_text())
    assert {"setup", "table", "runs", "scaling", "crossover"} <= set(data)
    assert data["crossover"][0]["crossover_size"] == 400
    assert len(pd.read_csv(out / "samples.csv")) == len(res.samples)
    assert not (out / "dask-performance-report.html").exists()  # no dask runs here


def test_report_html_parses_and_is_offline(tmp_path):
    res = _synthetic_results()
    path = res.save(tmp_path) / "report.html"
    parser = _parse(path)
    assert "script" in parser.tags and "table" not in parser.tags  # table is inside bokeh Divs
    assert _network_refs(parser) == []
    text = path.read_text(encoding="utf-8")
    # bokeh's JS is inlined, the plots and the table are embedded as document JSON.
    assert "Bokeh" in text and "cdn.bokeh.org" not in text
    for title in (
        "Whole-step time per engine",
        "Speedup against local",
        "Quality per engine",
        "CPU % per process",
        "Memory (RSS)",
        "Scaling",
        "Crossover",
        "kmeans",
    ):
        assert title in text, title
    # Error text is escaped, never injected as markup.
    assert "&lt;script&gt;" in text or "\\u003cscript\\u003e" in text or "&amp;lt;script" in text


def test_report_from_a_real_comparison(tmp_path, client):
    def step(data, engine, client):
        X, y = data
        if engine == "dask":
            import dask.array as da

            return {"total": float(client.compute(da.from_array(X, chunks=64).sum()).result())}
        return {"total": float(X.sum())}

    res = dasktrain.compare(
        [step], data=make_blobs(256, 4, 2), repeat=2, client=client, interval=0.05, warmup=False
    )
    out = res.save(tmp_path)
    perf = out / "dask-performance-report.html"
    assert perf.exists()
    assert _network_refs(_parse(perf)) == []
    assert _network_refs(_parse(out / "report.html")) == []
    samples = pd.read_csv(out / "samples.csv")
    assert {"worker", "driver", "system"} <= set(samples.role)


@pytest.mark.browser
def test_report_in_headless_chromium(tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    res = _synthetic_results()
    page = res.save(tmp_path / "r") / "report.html"
    shot = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1400,3000",
        "--virtual-time-budget=10000",
        page.as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (3000, 1400)
    # The plots drew: many pixels are neither white nor the text's black/grey, i.e. bars and
    # lines in the palette colours (a page whose JS failed shows only the table text).
    sat = (img.max(axis=2) - img.min(axis=2)) > 60
    assert sat.mean() > 0.005, sat.mean()


def test_report_says_which_workers_dask_measured(tmp_path):
    from dasktrain.harness.report import write_report

    res = _synthetic_results()
    plain = write_report(res, tmp_path / "plain.html").read_text()
    assert "measured by Dask" not in plain
    s = res.samples
    remote = s[s.process == "tcp://w1"].assign(
        source="dask", process="tcp://10.0.0.2:9000", host="node-b"
    )
    res.samples = pd.concat([s[s.process != "tcp://w1"].assign(host="node-a"), remote])
    text = write_report(res, tmp_path / "remote.html").read_text()
    assert "measured by Dask" in text and "on node-b: tcp://10.0.0.2:9000" in text
    assert "tcp://10.0.0.2:9000 on node-b (worker, via Dask)" in text  # the timeline legend
