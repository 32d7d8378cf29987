"""The report's curves from inside the runs: what the ``/dasktrain`` dashboard page showed live.

``Results.events`` keeps, per timed run, the DDP ranks' reported metrics and the iterative
fits' passes (:func:`dasktrain.harness.run.live.kept_events`); these figures draw them again, so
that what was watched live stays in the offline report.
"""

from __future__ import annotations

import math

from .figures import PALETTE

__all__ = ["rank_curves", "fit_curves", "live_charts"]


def _x(record, i):
    for key in ("step", "epoch"):
        if isinstance(record.get(key), (int, float)):
            return float(record[key])
    return float(i + 1)


def _last_run(events, kind):
    """The events of ``kind`` of the last run of every (workload, setup)."""
    last = {}
    for e in events:
        if e.get("kind") == kind:
            last[(e["workload"], e["setup"])] = max(
                last.get((e["workload"], e["setup"]), 0), e["run"]
            )
    return [
        e for e in events if e.get("kind") == kind and last[(e["workload"], e["setup"])] == e["run"]
    ]


def rank_curves(results, metric="loss"):
    """``metric`` against step (or epoch) for every rank of the last DDP run of each setup;
    None when no rank reported it."""
    from bokeh.plotting import figure

    series = {}
    for e in _last_run(results.events, "ddp-metrics"):
        if isinstance(e.get(metric), (int, float)):
            series.setdefault((e["workload"], e["setup"], e.get("rank")), []).append(e)
    if not series:
        return None
    p = figure(
        height=300,
        width=1000,
        x_axis_label="step (or epoch)",
        y_axis_label=metric,
        title=f"DDP ranks: {metric} as each rank reported it (last run of each setup)",
    )
    for i, ((w, s, rank), recs) in enumerate(sorted(series.items(), key=str)):
        xs = [_x(r, j) for j, r in enumerate(recs)]
        color = PALETTE[i % len(PALETTE)]
        p.line(
            xs,
            [r[metric] for r in recs],
            color=color,
            line_width=2,
            legend_label=f"{w} / {s} rank {rank}",
        )
    p.legend.location = "top_right"
    return p


def fit_curves(results):
    """The value per pass (KMeans inertia, an XGBoost eval metric) of the last run of each
    setup, log scale; None when no fit sent its passes."""
    from bokeh.plotting import figure

    fits = {}
    for e in _last_run(results.events, "fit"):
        v = e.get("value")
        if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
            fits.setdefault((e["workload"], e["setup"], e["fit"]), []).append(e)
    if not fits:
        return None
    p = figure(
        height=300,
        width=1000,
        y_axis_type="log",
        x_axis_label="pass / round",
        title="Iterative fits: the value after each pass (last run of each setup)",
    )
    for i, ((w, s, _), recs) in enumerate(sorted(fits.items(), key=str)):
        ms = sorted(r.get("ms", math.nan) for r in recs)
        how = f"{ms[len(ms) // 2]:.1f} ms/pass, {recs[0].get('path')}"
        label = f"{w} / {s} {recs[0].get('metric')} ({how})"
        color = PALETTE[i % len(PALETTE)]
        p.line(
            [r["iteration"] for r in recs],
            [r["value"] for r in recs],
            color=color,
            line_width=2,
            legend_label=label,
        )
    return p


def live_charts(results):
    """The section's parts: a line on where the curves come from, then the figures."""
    link = (
        " Dask's own performance report of the dask runs is beside this file: "
        "<a href='dask-performance-report.html'>dask-performance-report.html</a>."
        if results.performance_report
        else ""
    )
    charts = [rank_curves(results, "loss"), rank_curves(results, "accuracy"), fit_curves(results)]
    charts = [c for c in charts if c is not None]
    text = (
        "<p>What the dashboard's <code>/dasktrain</code> page showed while the runs went: "
        "each DDP rank's reported metrics and each iterative fit's passes."
        + ("" if charts else " No run of this comparison sent any.")
        + link
        + "</p>"
    )
    return [text, *charts]
