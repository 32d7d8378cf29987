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
from dasktrain.harness.report.page import SECTIONS
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
    # Every size, one row per workload x setup x size (the terminal's table: the largest).
    table = pd.read_csv(out / "results.csv")
    assert len(res.table) == 3 and len(table) == 5
    assert table[["workload", "setup"]].values.tolist() == [
        ["kmeans", "local"], ["kmeans", "dask"], ["kmeans", "local"], ["kmeans", "dask"],
        ["ddp_cnn", "local"],
    ]  # fmt: skip
    assert table["size"].fillna(0).tolist() == [100, 100, 400, 400, 0]
    assert table.repeats.tolist() == [2, 2, 2, 2, 0]
    data = json.loads((out / "results.json").read_text())
    assert {"setup", "table", "runs", "scaling", "crossover", "answer", "machine"} <= set(data)
    assert [r["size"] for r in data["table"]] == [100, 100, 400, 400, None]
    # The report's table too.
    html = (out / "report.html").read_text(encoding="utf-8")
    details = html[html.index("<section id='details'>") :]
    assert details.count("<td>kmeans</td>") == 4
    assert data["crossover"][0]["crossover_size"] == 400
    assert len(pd.read_csv(out / "samples.csv")) == len(res.samples)
    assert not (out / "dask-performance-report.html").exists()  # no dask runs here


def test_report_html_parses_and_is_offline(tmp_path):
    res = _synthetic_results()
    path = res.save(tmp_path) / "report.html"
    parser = _parse(path)
    assert "script" in parser.tags and "section" in parser.tags
    assert _network_refs(parser) == []
    text = path.read_text(encoding="utf-8")
    # bokeh's JS is inlined, the plots are embedded as document JSON.
    assert "Bokeh" in text and "cdn.bokeh.org" not in text
    for title in (
        "Whole-step time per engine",
        "Speedup against local",
        "Quality per engine",
        "CPU % per process",
        "Memory (RSS)",
        "Where the time went",
        "Crossover",
        "kmeans",
    ):
        assert title in text, title
    # Error text is escaped, never injected as markup.
    assert "&lt;script&gt;" in text or "\\u003cscript\\u003e" in text or "&amp;lt;script" in text


def test_report_reads_in_order(tmp_path):
    """Verdicts first, then crossover, scaling, breakdown, quality, resources, cost, details."""
    from dasktrain.harness.report.page import SECTIONS

    res = _synthetic_results()
    text = res.save(tmp_path).joinpath("report.html").read_text(encoding="utf-8")
    where = [text.index(f"<section id='{sid}'>") for sid, _ in SECTIONS]
    assert where == sorted(where)
    assert [sid for sid, _ in SECTIONS][:2] == ["verdicts", "crossover"]
    verdicts = text[where[0] : where[1]]
    # The verdict is computed: dask is slower at 100 samples, faster at 400.
    assert "kmeans: dask pays from ~400 samples" in verdicts, verdicts
    assert "ddp_cnn: not measured" in verdicts


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


def _full_results():
    """Runs of every kind the report draws: 3 setups (local, 1 and 2 workers) at 2 sizes,
    with time breakdowns, DDP accuracy per epoch and resource samples of workers and ranks."""
    runs, samples = [], []
    clock = 1_700_000_000.0
    setups = {"local": ("local", 0), "dask-1w": ("dask", 1), "dask-2w": ("dask", 2)}
    times = {"local": (1.0, 4.0), "dask-1w": (2.5, 5.0), "dask-2w": (2.0, 3.0)}
    for i, size in enumerate((100, 400)):
        for workload in ("kmeans", "ddp_cnn"):
            for setup, (engine, workers) in setups.items():
                t = times[setup][i]
                row = {
                    "workload": workload,
                    "engine": engine,
                    "setup": setup,
                    "size": size,
                    "repeat": 1,
                    "time": t,
                    "quality_metric": "accuracy",
                    "quality": 0.9,
                    "workers": workers,
                    "threads": max(workers, 2) if engine == "local" else workers,
                    "devices": max(1, workers),
                    "start": clock,
                    "end": clock + t,
                }
                if engine == "dask":
                    row.update(startup_s=0.2 * t, transfer_s=0.1 * t, idle_s=0.3 * t)
                    row.update(compute_s=0.4 * t, tasks=8, idle_gaps=3)
                if workload == "ddp_cnn":
                    row["metric.accuracy_per_epoch"] = "0.5 0.7 0.88 0.93"
                runs.append(row)
                procs = [("driver", "driver")]
                if engine == "dask":
                    procs += [("tcp://127.0.0.1:4001", "worker")]
                    procs += [("ddp rank 0 (pid 7) of tcp://127.0.0.1:4001", "rank")]
                for k in range(4):
                    for proc, role in procs:
                        samples.append(
                            {
                                "time": clock + k * t / 4,
                                "source": "psutil",
                                "process": proc,
                                "pid": 1,
                                "role": role,
                                "cpu_percent": 40.0 + 10 * k,
                                "rss": 1e8 + 1e6 * k,
                                "run": len(runs),
                            }
                        )
                clock += t
    setup = {
        "sizes": [100, 400],
        "repeat": 1,
        "setups": {
            "local": {"engine": "local", "workers": 0, "threads": 2},
            "dask-1w": {"engine": "dask", "workers": 1, "threads": 1},
            "dask-2w": {
                "engine": "dask",
                "workers": 2,
                "threads": 2,
                "worker_addresses": ["tcp://127.0.0.1:4001"],
            },
        },
    }
    return Results(runs, samples=pd.DataFrame(samples), setup=setup)


# Run in the page once bokeh has drawn: per section, how many chart divs it has and how many
# hold a drawn canvas (bokeh draws inside shadow roots), written where --dump-dom shows it.
_PROBE = """<script>
function drawn(node) {
  if (node.querySelector && node.querySelector("canvas")) return true;
  for (const el of (node.querySelectorAll ? node.querySelectorAll("*") : [])) {
    if (el.shadowRoot && drawn(el.shadowRoot)) return true;
  }
  return false;
}
window.addEventListener("load", () => setTimeout(() => {
  const out = {};
  for (const sec of document.querySelectorAll("section")) {
    const charts = [...sec.querySelectorAll("div.chart")];
    out[sec.id] = [charts.length, charts.filter(drawn).length];
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 2000));
</script>"""


def _chromium(exe, tmp_path, *args):
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
        "--virtual-time-budget=15000",
        *args,
    ]
    return subprocess.run(cmd, check=True, timeout=180, capture_output=True, text=True)


@pytest.mark.browser
def test_report_in_headless_chromium(tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    res = _full_results()
    page = res.save(tmp_path / "r") / "report.html"
    # Every section that should hold a chart holds drawn ones, in reading order.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium(exe, tmp_path, "--dump-dom", probe.as_uri()).stdout
    drawn = json.loads(dom.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0])
    assert list(drawn) == [sid for sid, _ in SECTIONS]
    for sid in ("crossover", "scaling", "breakdown", "quality", "resources", "cost", "details"):
        n, ok = drawn[sid]
        assert n >= 1 and ok == n, (sid, drawn)
    assert drawn["quality"][0] == 2  # quality per setup and DDP accuracy per epoch
    text = page.read_text()
    # DDP ranks are labelled as ranks of a named worker, not as tcp://.../pid (worker).
    assert "ddp rank 0 (pid 7) of dask-2w worker 1" in text
    # The screenshot: the charts drew in colour.
    shot = tmp_path / "shot.png"
    _chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri())
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (3000, 1400)
    sat = (img.max(axis=2) - img.min(axis=2)) > 60
    assert sat.mean() > 0.005, sat.mean()


def test_report_says_which_workers_dask_measured(tmp_path):
    from dasktrain.harness.report.page import write_report

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
