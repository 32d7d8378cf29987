"""Results -> one self-contained HTML report, in the order a person reads it.

1. **Verdicts**: per workload, where distributing pays, why, on which setup.
2. **Crossover**: time against size per setup (log-log), the crossover marked or extrapolated;
   **scaling** against the number of workers, and the setups side by side.
3. **Where the time went**: each setup's whole step split into start-up, data transfer,
   scheduler/idle and compute.
4. **Quality** per setup, and the DDP runs' accuracy after each epoch.
5. **Resources**: CPU and memory timelines of every process, worker and DDP rank.
6. **Cost** of one run and of the whole comparison.
7. The full table, the time and speedup charts, and the setup.

The text (verdicts, tables) is plain HTML, readable without JavaScript; the charts are bokeh
with inline resources, so the file opens offline. Each section is a ``<section id=...>`` and
each chart a ``<div class="chart">`` that bokeh fills when the page loads (the browser test
checks that every one of them was drawn).
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..results.answer import answer_paragraph, machine_line, machine_state
from . import curves, figures, run_curves

if TYPE_CHECKING:  # bokeh is imported when a report is built
    from bokeh.models import LayoutDOM

logger = logging.getLogger(__name__)

__all__ = ["write_report", "build_layout", "build_sections", "SECTIONS"]

#: ``(id, heading)`` of the report's sections, in reading order.
SECTIONS = [
    ("verdicts", "Verdicts: where distributing pays"),
    ("crossover", "Crossover: time against data size"),
    ("scaling", "Scaling: setups side by side"),
    ("breakdown", "Where the time went"),
    ("quality", "Quality per engine and setup"),
    ("inside", "Inside the runs: DDP ranks and iterative fits"),
    ("resources", "Resources over time"),
    ("cost", "Cost"),
    ("details", "All results"),
]


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    return html.escape(str(v))


def _html_table(head, rows, cls="results", row_classes=None):
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        cls_attr = f" class='{html.escape(row_classes[i])}'" if row_classes else ""
        body.append(f"<tr{cls_attr}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return (
        f"<table class='{cls}'><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


_TABLE_COLUMNS = [
    ("workload", "workload"),
    ("setup", "setup"),
    ("engine", "engine"),
    ("size", "size"),
    ("status", "status"),
    ("repeats", "n"),
    ("time_median", "time median (s)"),
    ("time_min", "min"),
    ("time_max", "max"),
    ("train_time_median", "train time (s)"),
    ("speedup", "speedup"),
    ("improvement_pct", "improvement %"),
    ("devices", "devices"),
    ("efficiency", "parallel efficiency"),
    ("startup_s", "start-up (s)"),
    ("transfer_s", "transfer (s)"),
    ("idle_s", "sched/idle (s)"),
    ("compute_s", "compute (s)"),
    ("quality_metric", "metric"),
    ("quality", "quality"),
    ("quality_min", "quality min"),
    ("quality_max", "quality max"),
    ("busy_runs", "busy runs"),
    ("cpu_percent_mean", "CPU % (mean)"),
    ("peak_rss_mb", "peak RSS (MiB)"),
    ("energy_j", "energy (J)"),
    ("edp", "EDP (J s)"),
    ("core_seconds", "core-seconds / run"),
    ("cost_usd", "cost / run (USD)"),
    ("workers_lost", "workers lost"),
    ("error", "error"),
]


def _table_html(results):
    """Every workload x setup x size; a row with busy runs has the class ``busy``."""
    t = results.by_size.copy()
    t["peak_rss_mb"] = t["peak_rss_bytes"] / 2**20
    rows = [[_fmt(r[c]) for c, _ in _TABLE_COLUMNS] for _, r in t.iterrows()]
    classes = [f"{s} busy" if b else str(s) for s, b in zip(t.status, t.busy_runs.fillna(0))]
    table = _html_table([label for _, label in _TABLE_COLUMNS], rows, row_classes=classes)
    return (
        "<p>Every workload, setup and size (as <code>results.csv</code>): medians of the timed "
        "runs with their min and max; <i>busy runs</i>: runs during which other programs used "
        "more than half a core of this machine.</p>"
        f"<div class='wide'>{table}</div>"
    )


def _answer_html(results):
    """The overall answer and the machine's state: the first thing the report says."""
    busy = " busy" if machine_state(results)["busy"] else ""
    return (
        f"<p class='answer'><b>{html.escape(answer_paragraph(results))}</b></p>"
        f"<p class='machine{busy}'>{html.escape(machine_line(results))}</p>"
    )


def _verdicts_html(results):
    items = "".join(f"<li>{html.escape(v)}</li>" for v in results.verdicts.verdict)
    sizes = results.setup.get("sizes")
    basis = (
        f"Measured at {', '.join(f'{s:g}' for s in sizes)} samples"
        if sizes
        else "Measured at one data size"
    )
    return (
        f"{_answer_html(results)}<ul class='verdicts'>{items}</ul><p class='note'>"
        f"{html.escape(basis)}, {results.setup.get('repeat', '?')} timed run(s) each after a "
        "warm-up; a setup wins at a size only when all its runs there beat all of the other's; "
        "computed from the measurements below.</p>"
    )


def _setups_html(results):
    t = results.by_setup
    table = results.table.set_index(["workload", "setup"])
    rows = []
    for w, r in t.iterrows():
        cells = [html.escape(str(w))]
        for s in t.columns:
            v = r[s]
            known = (w, s) in table.index
            sp = table.speedup.get((w, s), math.nan) if known else math.nan
            busy = table.busy_runs.get((w, s), 0) if known else 0
            cell = "-" if v != v else f"{v:.3g} s" + (f" ({sp:.2f}x)" if sp == sp else "")
            cells.append(cell + (f" [{busy:g} busy]" if busy else ""))
        rows.append(cells)
    setups = results.setup.get("setups") or {}
    head = ["workload"] + [
        f"{s} ({setups[s]['workers']} workers, {setups[s]['threads']} threads"
        + (f", {setups[s]['gpus']} GPU" if setups[s].get("gpus") else "")
        + ")"
        if s in setups and setups[s].get("engine") == "dask"
        else f"{s} ({setups.get(s, {}).get('threads', '?')} cores)"
        for s in t.columns
    ]
    return (
        "<p>Median whole-step seconds at the largest size (speedup against "
        f"{html.escape(results.baseline)}).</p>" + _html_table(head, rows, cls="setups")
    )


def _setup_html(results):
    s = results.setup
    items = [
        ("baseline", results.baseline),
        ("time basis", results.time_basis),
        ("workers (largest cluster)", s.get("workers")),
        ("threads (local engine)", s.get("threads")),
        ("GPUs", s.get("gpus")),
        ("repeats", s.get("repeat")),
        ("host", s.get("host")),
        ("started", s.get("started")),
    ]
    items += [(f"dashboard of {k}", v.get("dashboard")) for k, v in (s.get("setups") or {}).items()]
    items += list((s.get("versions") or {}).items())
    energy = results.table["energy_j"]
    note = (
        "Energy: not measured on this machine (no readable RAPL / NVML counter); it is never "
        "estimated."
        if energy.isna().all()
        else "Energy: measured (RAPL / NVML counters)."
    )
    li = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {_fmt(v)}</li>" for k, v in items if v is not None
    )
    return f"<ul class='setup'>{li}</ul><p>{html.escape(note)}</p>" + _remote_note(results)


def _remote_note(results):
    """Say which workers were measured by Dask rather than by psutil on this machine."""
    s = results.samples
    if s is None or not len(s) or "source" not in s:
        return ""
    remote = s[s.source == "dask"]
    if not len(remote):
        return ""
    workers = sorted(map(str, remote.process.unique()))
    hosts = sorted(map(str, remote["host"].dropna().unique())) if "host" in remote else []
    where = f" on {', '.join(hosts)}" if hosts else ""
    return (
        f"<p>Workers outside this machine's process tree ({len(workers)}{where}: "
        f"{', '.join(html.escape(w) for w in workers)}) are measured by Dask: their CPU and "
        "memory come from each worker's own SystemMonitor, collected through the scheduler, "
        "because psutil here cannot see processes on other hosts. They measure the worker "
        "process itself, not the processes it starts (DDP ranks). Their timeline entries are "
        "marked &quot;via Dask&quot;.</p>"
    )


def _cost_html(results):
    c = results.cost
    wall = c["wall_s"]
    parts = [
        f"The whole comparison: {wall:.0f} s from start to finish" if wall else "The comparison",
        f"{c['runs']} timed runs took {c['run_s']:.1f} s and held "
        f"{c['core_seconds']['total']:.0f} core-seconds",
    ]
    per = ", ".join(f"{k} {v:.0f}" for k, v in c["core_seconds"].items() if k != "total")
    text = "; ".join(parts) + (f" ({per})." if per else ".")
    if c["usd"] is not None:
        usd = ", ".join(f"{k} {v:.4f}" for k, v in c["usd"].items() if k != "total")
        text += f" At the prices given: {c['usd']['total']:.4f} USD ({usd})."
    else:
        text += " Pass prices= (USD per hour per setup) for the cost in USD."
    return f"<p>{html.escape(text)}</p>"


_CSS = """
body { font: 14px sans-serif; margin: 1em 2em; }
section { margin-bottom: 2em; }
h2 { border-bottom: 1px solid #ccc; }
ul.verdicts li { margin: 0.4em 0; }
p.note { color: #555; font-size: 12px; }
table.results, table.setups { border-collapse: collapse; font: 12px sans-serif; }
table.results th, table.results td, table.setups th, table.setups td
  { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.results tr.error td, table.results tr.unavailable td,
table.results tr.timeout td { color: #a00; }
table.results tr.busy td { background: #fff3cd; }
p.answer { font-size: 16px; }
p.machine.busy { background: #fff3cd; border: 1px solid #d39e00; padding: 0.5em; }
ul.setup { font: 12px sans-serif; columns: 3; }
div.chart { margin: 0.5em 0; }
div.wide { overflow-x: auto; }
"""


def build_sections(results, colors=None) -> list:
    """``[(id, heading, [HTML text or bokeh model, ...])]`` in reading order (see
    ``SECTIONS``); a section with nothing to show says why."""
    colors = colors or figures.setup_colors(results)
    grid = curves.crossover_grid(results, colors)
    parts = {
        "verdicts": [_verdicts_html(results)],
        "crossover": [grid]
        if grid is not None
        else ["<p>One data size ran: pass sizes= for the crossover.</p>"],
        "scaling": [*curves.scaling_figures(results), _setups_html(results)],
        "breakdown": [
            "<p>Start-up: until the first task (or the training) began; data transfer: the "
            "client sending inputs or fetching results, workers fetching from each other; "
            "scheduler/idle: the cluster waiting between tasks (round trips); compute: at "
            "least one task running. From the task stream and spans of each run.</p>",
            figures.breakdown_chart(results),
        ],
        "quality": [figures.quality_chart(results, colors), figures.epochs_chart(results, colors)],
        "inside": run_curves.live_charts(results),
        "resources": curves.timelines(results, colors),
        "cost": [_cost_html(results), figures.cost_chart(results, colors)],
        "details": [
            _table_html(results),
            *figures.summary_charts(results, colors),
            _setup_html(results),
        ],
    }
    return [(sid, title, [p for p in parts[sid] if p is not None]) for sid, title in SECTIONS]


def build_layout(results) -> LayoutDOM:
    """The report as one bokeh layout (headings and tables as Divs, then the charts).

    Parameters
    ----------
    results : Results

    Returns
    -------
    bokeh.layouts.LayoutDOM
    """
    from bokeh.layouts import column
    from bokeh.models import Div  # type: ignore[attr-defined]  # bokeh's lazy exports

    items = [Div(text="<h1>dasktrain comparison</h1>")]
    for _, title, parts in build_sections(results):
        items.append(Div(text=f"<h2>{html.escape(title)}</h2>", width=1300))
        items += [Div(text=p, width=1300) if isinstance(p, str) else p for p in parts]
    return column(*items)


def _page(results):
    """The HTML page: the text in place, each chart in a div bokeh fills on load."""
    from bokeh.embed import components
    from bokeh.resources import INLINE

    sections = build_sections(results)
    models = {}
    for sid, _, parts in sections:
        for i, p in enumerate(parts):
            if not isinstance(p, str):
                models[f"{sid}-{i}"] = p
    script, divs = components(models) if models else ("", {})
    body = []
    for sid, title, parts in sections:
        inner = []
        for i, p in enumerate(parts):
            key = f"{sid}-{i}"
            inner.append(
                p
                if isinstance(p, str)
                else f"<div class='chart' id='chart-{key}'>{divs[key]}</div>"
            )
        body.append(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{''.join(inner)}</section>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>dasktrain comparison</title><style>{_CSS}</style>{INLINE.render()}</head>"
        f"<body><h1>dasktrain comparison</h1>{''.join(body)}{script}</body></html>"
    )


def write_report(results, path) -> Path:
    """Write the report of ``results`` to ``path`` as one offline HTML file.

    Bokeh's JavaScript and CSS are inlined (``bokeh.resources.INLINE``), so the file references
    no network resource and opens without internet access.

    Parameters
    ----------
    results : Results
    path : str or Path

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    path.write_text(_page(results), encoding="utf-8")
    return path
