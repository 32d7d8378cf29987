"""The curves of the report: time against size (the crossover), strong scaling, and the
resource timelines of every process, worker and DDP rank."""

from __future__ import annotations

import math

from .figures import PALETTE

__all__ = ["crossover_grid", "scaling_figures", "timelines", "process_labels"]


# --------------------------------------------------------------------------------------------
# Time against size
# --------------------------------------------------------------------------------------------
def _crossover_title(w, rows):
    """One line: the crossover, measured or extrapolated, of the best non-baseline setup."""
    if rows is None or rows.empty:
        return f"{w}"
    measured = rows[rows.measured.notna()]
    if len(measured):
        r = measured.loc[measured.measured.idxmin()]
        return f"{w}: crossover at {r.measured:g} samples ({r.setup})"
    ex = rows[rows.extrapolated.notna()]
    if len(ex):
        r = ex.loc[ex.extrapolated.idxmin()]
        return f"{w}: no crossover measured; ~{r.extrapolated:,.0f} extrapolated ({r.setup})"
    return f"{w}: no crossover in the measured range"


def _fit_line(p, fixed, per_sample, x0, x1, color):
    """The fitted line t = fixed + per_sample * n from x0 to x1 (dotted), where positive."""
    import numpy as np

    if not (math.isfinite(fixed) and math.isfinite(per_sample)) or x1 <= x0:
        return
    xs = np.geomspace(x0, x1, 40)
    ys = fixed + per_sample * xs
    keep = ys > 0
    if keep.sum() >= 2:
        p.line(xs[keep].tolist(), ys[keep].tolist(), color=color, line_dash="dotted", alpha=0.7)


def _mark(p, x, label, dash):
    from bokeh.models import Label, Span

    p.add_layout(Span(location=x, dimension="height", line_dash=dash, line_color="black"))
    p.add_layout(
        Label(x=x, y=5, x_units="data", y_units="screen", text=label, text_font_size="8pt")
    )


def _crossover_figure(results, w, g, rows, colors):
    from bokeh.plotting import figure

    p = figure(
        height=280,
        width=440,
        title=_crossover_title(w, rows),
        x_axis_type="log",
        y_axis_type="log",
        x_axis_label="samples",
        y_axis_label="seconds",
        toolbar_location=None,
    )
    p.title.text_font_size = "9pt"
    hi = float(g["size"].max())
    reach = hi
    if rows is not None and rows.extrapolated.notna().any():
        reach = max(hi, float(rows.extrapolated.max()) * 1.3)
    for s in [*colors, *(x for x in dict.fromkeys(g.setup) if x not in colors)]:
        gs = g[(g.setup == s) & g.time_median.notna()].sort_values("size")
        if gs.empty:
            continue
        color = colors.get(s, "#999")
        x, y = gs["size"].tolist(), gs.time_median.tolist()
        p.line(x, y, color=color, line_width=2, legend_label=str(s))
        p.scatter(x, y, color=color, size=6)
        fit = rows[rows.setup == s] if rows is not None else None
        if fit is not None and len(fit):
            f = fit.iloc[0]
            _fit_line(p, f.fixed_s, f.per_sample_s, hi, reach, color)
        elif s == results.baseline and rows is not None and len(rows):
            f = rows.iloc[0]
            _fit_line(p, f.base_fixed_s, f.base_per_sample_s, hi, reach, color)
    if rows is not None:
        for r in rows.itertuples():
            if r.measured == r.measured:
                _mark(p, r.measured, f"crossover {r.measured:g}", "solid")
            elif r.extrapolated == r.extrapolated:
                _mark(p, r.extrapolated, f"~{r.extrapolated:,.0f} (extrapolated)", "dotted")
    if p.legend:  # a workload measured nowhere has no lines, hence no legend
        p.legend.location = "top_left"
        p.legend.label_text_font_size = "8pt"
    return p


def crossover_grid(results, colors):
    """One small log-log chart per workload: median time against size per setup, the
    crossover marked (solid) or extrapolated from straight-line fits (dotted); None with a
    single size."""
    from bokeh.layouts import gridplot

    sc = results.scaling
    if sc is None or not len(sc):
        return None
    cross = results.crossovers
    figs = []
    for w in dict.fromkeys(results.table.workload):  # the table's order, not the alphabet's
        g = sc[sc.workload == w]
        if g.empty:
            continue
        rows = cross[cross.workload == w] if cross is not None else None
        figs.append(_crossover_figure(results, w, g, rows, colors))
    return gridplot(figs, ncols=3, toolbar_location=None)


# --------------------------------------------------------------------------------------------
# Strong scaling
# --------------------------------------------------------------------------------------------
def scaling_figures(results):
    """Speedup and parallel efficiency against the number of workers, one line per workload,
    with the ideal; [] when clusters of one size ran."""
    from bokeh.plotting import figure

    ss = results.strong_scaling
    if ss is None or not len(ss):
        return []
    kw = dict(height=320, width=500, x_axis_label="workers", toolbar_location=None)
    sp = figure(title="Strong scaling: speedup against the fewest workers", **kw)
    ef = figure(title="Strong scaling: parallel efficiency (1 = ideal)", **kw)
    ideal = ss.groupby("workers").ideal.first().sort_index()
    sp.line(ideal.index.tolist(), ideal.tolist(), color="black", line_dash="dashed")
    ef.line(ideal.index.tolist(), [1.0] * len(ideal), color="black", line_dash="dashed")
    for i, (w, g) in enumerate(ss.groupby("workload", sort=False)):
        g = g.sort_values("workers")
        color = PALETTE[i % len(PALETTE)]
        x = g.workers.tolist()
        sp.line(x, g.speedup.tolist(), color=color, line_width=2, legend_label=str(w))
        sp.scatter(x, g.speedup.tolist(), color=color, size=6)
        ef.line(x, g.efficiency.tolist(), color=color, line_width=2, legend_label=str(w))
        ef.scatter(x, g.efficiency.tolist(), color=color, size=6)
    from bokeh.layouts import row

    for fig in (sp, ef):
        fig.legend.label_text_font_size = "8pt"
        fig.legend.location = "top_left"
        fig.y_range.start = 0
    return [row(sp, ef)]


# --------------------------------------------------------------------------------------------
# Resource timelines
# --------------------------------------------------------------------------------------------
def process_labels(results) -> dict:
    """``{worker address: "dask-2w worker 1"}`` from the setups the comparison ran."""
    out = {}
    for name, info in (results.setup.get("setups") or {}).items():
        for i, addr in enumerate(info.get("worker_addresses") or (), start=1):
            out[addr] = f"{name} worker {i}"
    return out


def _label(name, g, labels):
    role = str(g.role.iloc[0])
    text = str(name)
    for addr, label in labels.items():
        if addr in text:
            text = text.replace(addr, label) if role == "rank" else f"{label} ({addr})"
            break
    if "source" in g and str(g.source.iloc[0]) == "dask":
        host = g["host"].iloc[0] if "host" in g else None
        on = f" on {host}" if isinstance(host, str) and host else ""
        return f"{text}{on} ({role}, via Dask)"
    if role in ("worker", "rank") and text != str(name):
        return text
    return f"{text} ({role})" if role not in text else text


def _timeline_figures():
    from bokeh.plotting import figure

    def timeline(title, y_label, **kw):
        x_label = "seconds since the comparison started"
        return figure(
            height=320, width=1300, title=title, x_axis_label=x_label, y_axis_label=y_label, **kw
        )

    cpu = timeline("CPU % per process / worker / DDP rank (100 = one core)", "CPU %")
    mem = timeline("Memory (RSS) per process / worker / DDP rank", "MiB", x_range=cpu.x_range)
    return cpu, mem


def _plot_processes(cpu, mem, samples, t0, labels):
    from bokeh.models import ColumnDataSource

    procs = samples[~samples.role.isin(("system", "idle"))]
    for i, (name, g) in enumerate(procs.groupby("process", sort=True)):
        g = g.sort_values("time")
        color = PALETTE[i % len(PALETTE)]
        label = _label(name, g, labels)
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
    """Shade each run's time span in its setup's colour, so a timeline reads against the
    table: one strip glyph per setup (not one annotation per run, which made a comparison
    of many runs slow to save and to draw)."""
    if "start" not in runs or not runs["start"].notna().any():
        return
    for setup, g in runs[runs["start"].notna()].groupby("setup", sort=False):
        x0 = (g.start - t0).tolist()
        x1 = (g.end - t0).tolist()
        color = colors.get(setup, "#999")
        for fig in figures:
            fig.vstrip(x0=x0, x1=x1, fill_alpha=0.06, fill_color=color, line_alpha=0)


def timelines(results, colors) -> list:
    """CPU and memory timelines per process, worker and DDP rank, with the runs shaded."""
    s = results.samples
    if s is None or not len(s) or "time" not in s:
        return []
    t0 = float(s["time"].min())
    cpu, mem = _timeline_figures()
    _plot_processes(cpu, mem, s, t0, process_labels(results))
    _shade_runs((cpu, mem), results.runs, t0, colors)
    for fig in (cpu, mem):
        if not fig.legend:
            continue
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        # Outside the plot area: inside, a long list of workers hides the samples.
        fig.add_layout(fig.legend[0], "right")
    return [cpu, mem]
