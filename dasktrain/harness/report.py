"""Results -> one self-contained HTML report (bokeh with inline resources: it opens offline).

The report shows the results table, the time per engine with min/max whiskers, the speedup
against the baseline, the quality metric per engine, CPU and memory timelines per process or
worker, and the scaling curve when several data sizes ran.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bokeh is imported when a report is built
    from bokeh.models import LayoutDOM

logger = logging.getLogger(__name__)

__all__ = ["write_report", "build_layout"]

_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    return html.escape(str(v))


def _table_html(results):
    t = results.table.copy()
    t["peak_rss_mb"] = t["peak_rss_bytes"] / 2**20
    cols = [
        ("workload", "workload"),
        ("engine", "engine"),
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
        ("quality_metric", "metric"),
        ("quality", "quality"),
        ("cpu_percent_mean", "CPU % (mean)"),
        ("peak_rss_mb", "peak RSS (MiB)"),
        ("energy_j", "energy (J)"),
        ("edp", "EDP (J s)"),
        ("cost_usd", "cost / run (USD)"),
        ("workers_lost", "workers lost"),
        ("error", "error"),
    ]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = []
    for _, row in t.iterrows():
        cells = "".join(f"<td>{_fmt(row[c])}</td>" for c, _ in cols)
        body.append(f"<tr class='{html.escape(str(row['status']))}'>{cells}</tr>")
    return (
        "<table class='results'><thead><tr>"
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _setup_html(results):
    s = results.setup
    items = [
        ("baseline", results.baseline),
        ("time basis", results.time_basis),
        ("workers", s.get("workers")),
        ("threads (both engines)", s.get("threads")),
        ("GPUs", s.get("gpus")),
        ("repeats", s.get("repeat")),
        ("host", s.get("host")),
        ("started", s.get("started")),
    ]
    versions = s.get("versions") or {}
    items += [(k, v) for k, v in versions.items()]
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
        f"{', '.join(workers)}) are measured by Dask: their CPU and memory come from each "
        "worker's own SystemMonitor, collected through the scheduler, because psutil here "
        "cannot see processes on other hosts. They measure the worker process itself, not "
        "the processes it starts (DDP ranks). Their timeline entries are marked "
        "&quot;via Dask&quot;.</p>"
    )


def _process_label(name, g):
    role = str(g.role.iloc[0])
    if "source" in g and str(g.source.iloc[0]) == "dask":
        host = g["host"].iloc[0] if "host" in g else None
        on = f" on {host}" if isinstance(host, str) and host else ""
        return f"{name}{on} ({role}, via Dask)"
    return f"{name} ({role})" if role not in str(name) else str(name)


_CSS = """
<style>
table.results { border-collapse: collapse; font: 12px sans-serif; }
table.results th, table.results td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.results tr.error td, table.results tr.unavailable td,
table.results tr.timeout td { color: #a00; }
ul.setup { font: 12px sans-serif; columns: 3; }
</style>
"""


def _bar_chart(rows, factors, *, y, title, colors, tooltips, height=300, **figure_kw):
    """One bar per ``(workload, engine)`` factor, coloured by engine.

    ``y`` maps the column names of the data source to the values of ``rows``; ``tooltips``
    are bokeh's ``(label, "@column{format}")`` pairs.
    """
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure

    data = {"x": factors, "color": [colors[e] for e in rows.engine]}
    data.update({name: values.tolist() for name, values in y.items()})
    src = ColumnDataSource(data)
    p = figure(
        x_range=FactorRange(*factors),
        height=height,
        width=1000,
        title=title,
        toolbar_location="right",
        **figure_kw,
    )
    p.vbar(x="x", top=next(iter(y)), width=0.8, color="color", source=src)
    p.add_tools(HoverTool(tooltips=tooltips))
    p.xaxis.major_label_orientation = 0.9
    return p, src


def _factors(rows):
    return [(str(w), str(e)) for w, e in zip(rows.workload, rows.engine)]


def _time_chart(ok, colors):
    """Whole-step time per workload x engine: the median, with min..max whiskers."""
    from bokeh.models import Whisker

    p, src = _bar_chart(
        ok,
        _factors(ok),
        y={
            "median": ok.time_median,
            "lo": ok.time_min,
            "hi": ok.time_max,
            "workload": ok.workload.astype(str),
            "engine": ok.engine.astype(str),
        },
        title="Whole-step time per engine (median, whiskers = min..max)",
        colors=colors,
        tooltips=[
            ("workload", "@workload"),
            ("engine", "@engine"),
            ("median", "@median{0.000} s"),
            ("min", "@lo{0.000}"),
            ("max", "@hi{0.000}"),
        ],
        height=340,
        y_axis_label="seconds",
    )
    p.add_layout(Whisker(base="x", upper="hi", lower="lo", source=src))
    p.y_range.start = 0
    return p


def _speedup_chart(others, baseline, colors):
    """Speedup of each non-baseline engine, with the break-even line at 1."""
    from bokeh.models import Span

    p, _ = _bar_chart(
        others,
        _factors(others),
        y={"speedup": others.speedup, "improvement": others.improvement_pct},
        title=f"Speedup against {baseline} (> 1: faster)",
        colors=colors,
        tooltips=[("speedup", "@speedup{0.00}x"), ("improvement", "@improvement{0.0} %")],
        y_axis_label="speedup",
    )
    p.add_layout(Span(location=1, dimension="width", line_dash="dashed"))
    p.y_range.start = 0
    return p


def _quality_chart(q, colors):
    """The quality metric per workload x engine (median over repeats)."""
    factors = [(f"{w} ({m})", str(e)) for w, m, e in zip(q.workload, q.quality_metric, q.engine)]
    p, _ = _bar_chart(
        q,
        factors,
        y={"quality": q.quality},
        title="Quality per engine (median over repeats)",
        colors=colors,
        tooltips=[("quality", "@quality{0.0000}")],
    )
    return p


def _summary_charts(results, colors):
    """Time, speedup and quality bar charts of the table rows that have times."""
    t = results.table
    ok = t[t["time_median"].notna()]
    if not len(ok):
        return []
    charts = [_time_chart(ok, colors)]
    others = ok[ok.engine != results.baseline]
    if len(others):
        charts.append(_speedup_chart(others, results.baseline, colors))
    q = ok[ok.quality.notna()]
    if len(q):
        charts.append(_quality_chart(q, colors))
    return charts


def _timeline_figures():
    """Empty CPU and memory timelines sharing one time axis."""
    from bokeh.plotting import figure

    def timeline(title, y_label, **kw):
        x_label = "seconds since the comparison started"
        return figure(
            height=320, width=1300, title=title, x_axis_label=x_label, y_axis_label=y_label, **kw
        )

    cpu = timeline("CPU % per process / worker (100 = one core)", "CPU %")
    mem = timeline("Memory (RSS) per process / worker", "MiB", x_range=cpu.x_range)
    return cpu, mem


def _plot_processes(cpu, mem, samples, t0):
    """One series of markers per process or worker, on both timelines."""
    from bokeh.models import ColumnDataSource

    procs = samples[samples.role != "system"]
    for i, (name, g) in enumerate(procs.groupby("process", sort=True)):
        g = g.sort_values("time")
        color = _PALETTE[i % len(_PALETTE)]
        label = _process_label(name, g)
        src = ColumnDataSource(
            dict(t=(g.time - t0).tolist(), cpu=g.cpu_percent.tolist(), rss=(g.rss / 2**20).tolist())
        )
        cpu.scatter("t", "cpu", source=src, size=3, color=color, legend_label=label)
        mem.scatter("t", "rss", source=src, size=3, color=color, legend_label=label)
    sysrows = samples[samples.role == "system"].sort_values("time")
    if len(sysrows):
        # Markers, not a line: runs are sampled, the gaps between them are not.
        cpu.scatter(
            (sysrows.time - t0).tolist(),
            sysrows.cpu_percent.tolist(),
            color="black",
            alpha=0.3,
            size=3,
            marker="square",
            legend_label="whole machine (% of all cores)",
        )


def _shade_runs(figures, runs, t0, colors):
    """Shade each run's time span in its engine's colour, so a timeline reads against the table."""
    if "start" not in runs or not runs["start"].notna().any():
        return
    from bokeh.models import BoxAnnotation

    for _, r in runs[runs["start"].notna()].iterrows():
        color = colors.get(r.engine, "#999")
        for fig in figures:
            fig.add_layout(
                BoxAnnotation(
                    left=r.start - t0, right=r.end - t0, fill_alpha=0.06, fill_color=color
                )
            )


def _timelines(results, colors):
    """CPU and memory timelines per process / worker, with the runs shaded."""
    s = results.samples
    if s is None or not len(s) or "time" not in s:
        return []
    t0 = float(s["time"].min())
    cpu, mem = _timeline_figures()
    _plot_processes(cpu, mem, s, t0)
    _shade_runs((cpu, mem), results.runs, t0, colors)
    for fig in (cpu, mem):
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        # Outside the plot area: inside, a long list of workers hides the samples.
        fig.add_layout(fig.legend[0], "right")
    return [cpu, mem]


def _scaling(results):
    """The scaling curve (time against data size, log-log) and the crossover notes."""
    from bokeh.models import Div
    from bokeh.plotting import figure

    sc = results.scaling
    if sc is None or not len(sc):
        return []
    ps = figure(
        height=340,
        width=1300,
        title="Scaling: whole-step time against data size",
        x_axis_label="samples",
        y_axis_label="seconds",
        x_axis_type="log",
        y_axis_type="log",
    )
    for i, ((w, e), g) in enumerate(sc.groupby(["workload", "engine"], sort=False)):
        g = g[g.time_median.notna()].sort_values("size")
        color = _PALETTE[i % len(_PALETTE)]
        dash = "solid" if e == results.baseline else "dashed"
        x, y = g["size"].tolist(), g.time_median.tolist()
        ps.line(x, y, color=color, line_dash=dash, legend_label=f"{w} / {e}")
        ps.scatter(x, y, color=color, size=6)
    ps.legend.click_policy = "hide"
    ps.add_layout(ps.legend[0], "right")
    parts = [ps]
    cr = results.crossover
    if cr is not None and len(cr):
        li = "".join(
            f"<li>{html.escape(str(r.workload))}: {html.escape(str(r.note))}</li>"
            for _, r in cr.iterrows()
        )
        parts.append(Div(text=f"<h3>Crossover</h3><ul>{li}</ul>"))
    return parts


def build_layout(results) -> LayoutDOM:
    """The bokeh layout of the report: setup and table, summary charts, timelines, scaling.

    Parameters
    ----------
    results : Results

    Returns
    -------
    bokeh.layouts.LayoutDOM
        A column of Divs and figures.
    """
    from bokeh.layouts import column
    from bokeh.models import Div

    engines = list(dict.fromkeys(results.table["engine"]))
    colors = {e: _PALETTE[i % len(_PALETTE)] for i, e in enumerate(engines)}
    return column(
        Div(text="<h1>dasktrain comparison</h1>" + _CSS + _setup_html(results)),
        Div(text=_table_html(results), width=1350),
        *_summary_charts(results, colors),
        *_timelines(results, colors),
        *_scaling(results),
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
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    layout = build_layout(results)
    text = file_html(layout, INLINE, title="dasktrain comparison")
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path
