"""The bar charts of the report: time, speedup, quality, where the time went, cost, epochs.

Each function takes :class:`~dasktrain.harness.Results` (or its table) and returns bokeh
figures; :mod:`dasktrain.harness.report.page` lays them out. Setups keep one colour everywhere.
"""

from __future__ import annotations

from ..measure.breakdown import CATEGORIES

__all__ = [
    "PALETTE",
    "setup_colors",
    "summary_charts",
    "breakdown_chart",
    "cost_chart",
    "epochs_chart",
]

PALETTE = [
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
#: Colours of the time breakdown's categories (start-up, transfer, scheduler/idle, compute).
_CATEGORY_COLORS = ["#9467bd", "#ff7f0e", "#bdbdbd", "#2ca02c"]


def setup_colors(results) -> dict:
    """``{setup: colour}``, in the order of the table (the baseline first)."""
    names = list(dict.fromkeys(results.table["setup"]))
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _bar_chart(rows, factors, *, y, title, colors, tooltips, height=300, **figure_kw):
    """One bar per ``(workload, setup)`` factor, coloured by setup.

    ``y`` maps the column names of the data source to the values of ``rows``; ``tooltips``
    are bokeh's ``(label, "@column{format}")`` pairs.
    """
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure

    data = {"x": factors, "color": [colors.get(s, "#999") for s in rows.setup]}
    data.update({name: list(values) for name, values in y.items()})
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
    return [(str(w), str(s)) for w, s in zip(rows.workload, rows.setup)]


def _time_chart(ok, colors):
    """Whole-step time per workload x setup: the median, with min..max whiskers."""
    from bokeh.models import Whisker

    p, src = _bar_chart(
        ok,
        _factors(ok),
        y={
            "median": ok.time_median,
            "lo": ok.time_min,
            "hi": ok.time_max,
            "workload": ok.workload.astype(str),
            "setup": ok.setup.astype(str),
        },
        title="Whole-step time per engine and setup (median, whiskers = min..max)",
        colors=colors,
        tooltips=[
            ("workload", "@workload"),
            ("setup", "@setup"),
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
    """Speedup of each non-baseline setup, with the break-even line at 1."""
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


def quality_chart(results, colors):
    """The quality metric per workload x setup (median over repeats); None without one."""
    t = results.table
    q = t[t.quality.notna() & t.time_median.notna()]
    if not len(q):
        return None
    factors = [(f"{w} ({m})", str(s)) for w, m, s in zip(q.workload, q.quality_metric, q.setup)]
    p, _ = _bar_chart(
        q,
        factors,
        y={"quality": q.quality},
        title="Quality per engine and setup (median over repeats)",
        colors=colors,
        tooltips=[("quality", "@quality{0.0000}")],
    )
    return p


def summary_charts(results, colors) -> list:
    """Time and speedup bar charts of the table rows that have times."""
    t = results.table
    ok = t[t["time_median"].notna()]
    if not len(ok):
        return []
    charts = [_time_chart(ok, colors)]
    others = ok[ok.setup != results.baseline]
    if len(others):
        charts.append(_speedup_chart(others, results.baseline, colors))
    return charts


def _breakdown_data(t):
    """``{"y": setups, <category>: seconds}`` of one workload's rows, top to bottom."""
    data = {"y": [str(x) for x in t.setup][::-1]}
    for col in CATEGORIES:
        data[col] = [0.0 if v != v else float(v) for v in t[col]][::-1]
    # Rows without a breakdown (records from before it existed) show their whole time.
    for i, total in enumerate(list(t.time_median)[::-1]):
        if sum(data[c][i] for c in CATEGORIES) == 0:
            data["compute_s"][i] = float(total)
    return data


def _breakdown_figure(workload, t, legend):
    from bokeh.models import ColumnDataSource, HoverTool, Legend
    from bokeh.plotting import figure

    data = _breakdown_data(t)
    p = figure(
        y_range=data["y"],
        height=150 + 36 * len(data["y"]),
        width=440,
        title=workload,
        x_axis_label="seconds",
        toolbar_location=None,
    )
    src = ColumnDataSource(data)
    renderers = p.hbar_stack(
        list(CATEGORIES), y="y", height=0.7, color=_CATEGORY_COLORS, source=src
    )
    p.add_tools(
        HoverTool(tooltips=[(label, f"@{col}{{0.000}} s") for col, label in CATEGORIES.items()])
    )
    if legend:
        items = [(CATEGORIES[c], [r]) for c, r in zip(CATEGORIES, renderers)]
        p.add_layout(
            Legend(items=items, orientation="horizontal", label_text_font_size="8pt"), "below"
        )
    p.x_range.start = 0
    return p


def breakdown_chart(results):
    """Stacked bars per workload, each on its own scale: every setup's seconds split into
    start-up, data transfer, scheduler/idle and compute (a local run is all compute, or
    start-up then compute); None without times."""
    from bokeh.layouts import gridplot

    t = results.table
    t = t[t.time_median.notna()]
    if not len(t):
        return None
    figs = [
        # Each with its legend: the charts of a row keep one height.
        _breakdown_figure(str(w), g, legend=True)
        for w, g in t.groupby("workload", sort=False)
    ]
    return gridplot(figs, ncols=3, toolbar_location=None)


def cost_chart(results, colors):
    """Cost of one run per workload x setup: USD with a price table, else core-seconds."""
    t = results.table
    priced = results.prices is not None
    col = "cost_usd" if priced else "core_seconds"
    t = t[t[col].notna()]
    if not len(t):
        return None
    unit = "USD" if priced else "core-seconds (cores held x seconds)"
    p, _ = _bar_chart(
        t,
        _factors(t),
        y={"cost": t[col]},
        title=f"Cost of one run, {unit}",
        colors=colors,
        tooltips=[("cost", "@cost{0.0000}")],
        y_axis_label=unit,
        height=280,
    )
    p.y_range.start = 0
    return p


def _epoch_values(text):
    try:
        return [float(v) for v in str(text).split()]
    except ValueError:
        return []


def epochs_chart(results, colors):
    """Accuracy per epoch of the DDP runs (``accuracy_per_epoch``), one line per setup, at
    the largest size; None when no run reported it."""
    from bokeh.plotting import figure

    runs = results.runs
    col = "metric.accuracy_per_epoch"
    if col not in runs:
        return None
    r = runs[runs[col].notna() & (runs.status == "ok")]
    if "size" in r and r["size"].notna().any():
        r = r[r["size"] == r["size"].max()]
    if not len(r):
        return None
    p = figure(
        height=300,
        width=1000,
        title="DDP training: accuracy on the held-out images after each epoch",
        x_axis_label="epoch",
        y_axis_label="accuracy",
        y_range=(0, 1.02),
    )
    for (w, s), g in r.groupby(["workload", "setup"], sort=False):
        values = _epoch_values(g[col].iloc[-1])
        if not values:
            continue
        x = list(range(1, len(values) + 1))
        color = colors.get(s, "#999")
        p.line(x, values, color=color, line_width=2, legend_label=f"{w} / {s}")
        p.scatter(x, values, color=color, size=6)
    if not p.renderers:
        return None
    p.legend.location = "bottom_right"
    return p
