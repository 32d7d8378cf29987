"""The ``/dasktrain`` Bokeh document: tables and curves drawn from :class:`~._state.LiveState`.

One document per open browser tab, served by the scheduler's own Bokeh server (like Dask's
pages). A periodic callback (every ``_PERIOD_MS``) redraws when the state's ``version`` moved;
every source is small (bounded stores), so a redraw replaces the data whole.
"""

from __future__ import annotations

import logging
import math
import os
import time

from ._state import PLUGIN_NAME

__all__ = ["live_doc", "TITLE"]

logger = logging.getLogger(__name__)

TITLE = "dasktrain"
_PERIOD_MS = 500
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_TEMPLATE = os.path.join(os.path.dirname(__file__), "templates", "dasktrain.html")
_RECORD_KEYS = ("rank", "time", "attempt", "epoch", "step", "job", "kind")


def _host(address):
    from distributed.comm import get_address_host

    return get_address_host(address) if address else ""


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


# -- state -> columns ------------------------------------------------------------------------
def cell_rows(state):
    cells = state.comparison["cells"]
    cols = {k: [] for k in ("workload", "setup", "size", "repeat", "state", "seconds", "status")}
    for (w, setup, size, rep), c in cells.items():
        for k, v in zip(cols, (w, setup, size, rep, c.get("state"), c.get("seconds"), None)):
            cols[k].append(v if k != "seconds" else _num(v))
        cols["status"][-1] = c.get("status") or ""
    return cols


def verdict_rows(state):
    v = state.comparison["verdicts"]
    return {
        "workload": list(v),
        "outcome": [x["outcome"] for x in v.values()],
        "verdict": [x["verdict"] for x in v.values()],
    }


def _x(record, i):
    for key in ("step", "epoch"):
        if isinstance(record.get(key), (int, float)):
            return float(record[key])
    return float(i + 1)


def rank_rows(state):
    keys = ("job", "attempt", "rank", "host", "worker", "pid", "epoch", "loss", "accuracy")
    cols = {k: [] for k in (*keys, "samples_per_s", "state", "shards", "line")}
    for job, j in state.jobs.items():
        for rank, r in sorted(j["ranks"].items()):
            last = r["last"]
            values = (job, j["attempt"], rank, _host(r["worker"]), r["worker"], r["pid"])
            for k, v in zip(keys, values + tuple(last.get(k) for k in keys[6:])):
                cols[k].append(v if k not in ("epoch", "loss", "accuracy") else _num(v))
            cols["samples_per_s"].append(_num(last.get("samples_per_s")))
            cols["state"].append(j["state"])
            cols["shards"].append("; ".join(f"{k}: {v}" for k, v in r["shards"].items()))
            cols["line"].append(r["lines"][-1] if r["lines"] else "")
    return cols


def rank_curves(state, metric):
    """One line per (job, rank): ``metric`` against step (or epoch)."""
    out = {"xs": [], "ys": [], "label": [], "color": []}
    for job, j in state.jobs.items():
        for rank, r in sorted(j["ranks"].items()):
            pts = [(_x(rec, i), _num(rec.get(metric))) for i, rec in enumerate(r["series"])]
            pts = [p for p in pts if not math.isnan(p[1])]
            if pts:
                out["xs"].append([p[0] for p in pts])
                out["ys"].append([p[1] for p in pts])
                out["label"].append(f"{job[:6]} rank {rank}")
                out["color"].append(_COLORS[(len(out["label"]) - 1) % len(_COLORS)])
    return out


def error_rows(state):
    cols = {"time": [], "job": [], "state": [], "error": []}
    for job, j in state.jobs.items():
        for t, s, err in j["errors"]:
            cols["time"].append(time.strftime("%H:%M:%S", time.localtime(t)))
            cols["job"].append(job)
            cols["state"].append(s)
            cols["error"].append(err.strip().splitlines()[0] if err.strip() else "")
    return cols


def fit_rows(state):
    cols = {k: [] for k in ("fit", "estimator", "path", "iterations", "metric", "value", "ms")}
    for fit, f in state.fits.items():
        pts = f["points"]
        ms = sorted(_num(p[2]) for p in pts)
        paths = dict.fromkeys(str(p[3]) for p in pts)  # "direct, scheduler": it fell back
        row = (fit, f["estimator"], ", ".join(paths), len(pts), f["metric"], _num(pts[-1][1]))
        for k, v in zip(cols, row + (ms[len(ms) // 2] if ms else math.nan,)):
            cols[k].append(v)
    return cols


def fit_curves(state):
    out = {"xs": [], "ys": [], "label": [], "color": []}
    for fit, f in state.fits.items():
        pts = [(_num(p[0]), _num(p[1])) for p in f["points"]]
        pts = [p for p in pts if not math.isnan(p[1]) and p[1] > 0]
        if pts:
            out["xs"].append([p[0] for p in pts])
            out["ys"].append([p[1] for p in pts])
            out["label"].append(f"{f['estimator']} {fit} ({f['metric']})")
            out["color"].append(_COLORS[(len(out["label"]) - 1) % len(_COLORS)])
    return out


def throughput_rows(state, window=10.0):
    """Images per second per worker over the last ``window`` seconds of feature chunks."""
    now = time.time()
    per = {}
    for t, worker, images, seconds in state.features:
        if t >= now - window:
            n, s = per.get(worker, (0, 0.0))
            per[worker] = (n + images, s + seconds)
    workers = sorted(per)
    return {"worker": workers, "images_per_s": [per[w][0] / window for w in workers]}


def worker_rows(scheduler):
    """Every worker's status; a paused one says why (its memory against its limit)."""
    cols = {"worker": [], "status": [], "memory": [], "reason": []}
    for ws in scheduler.workers.values():
        status = getattr(ws.status, "name", str(ws.status))
        mem = ws.memory.process
        limit = ws.memory_limit
        reason = ""
        if status == "paused":
            reason = (
                f"paused for memory: {mem / 2**20:,.0f} MiB of a {limit / 2**20:,.0f} MiB limit"
            )
        cols["worker"].append(ws.address)
        cols["status"].append(status)
        cols["memory"].append(f"{mem / 2**20:,.0f} MiB")
        cols["reason"].append(reason)
    return cols


# -- the document ----------------------------------------------------------------------------
class LivePage:
    """The figures and tables of one open page, and its redraw."""

    def __init__(self, scheduler, state):
        from bokeh.models import ColumnDataSource

        self.scheduler, self.state, self.version = scheduler, state, -1
        self.sources = {
            name: ColumnDataSource(fn(state), name=name) for name, fn in self._columns().items()
        }
        self.sources["workers"] = ColumnDataSource(worker_rows(scheduler), name="workers")
        self.header = None
        self.failed = set()  # (part, exception type) already logged

    def _columns(self):
        s = self.state
        return (
            {
                "cells": cell_rows,
                "verdicts": verdict_rows,
                "ranks": rank_rows,
                "loss": lambda st: rank_curves(st, "loss"),
                "accuracy": lambda st: rank_curves(st, "accuracy"),
                "errors": error_rows,
                "fits": fit_rows,
                "fit_curves": fit_curves,
                "throughput": throughput_rows,
            }
            if s is not None
            else {}
        )

    def update(self):
        """Redraw what changed. Never raises: bokeh leaves ``curdoc()`` patched with this
        page's document when a callback raises, which broke every later bokeh use in the
        process (a report written beside an in-process scheduler)."""
        self._set("workers", lambda _: worker_rows(self.scheduler))
        if self.state is None:
            return
        self._set("throughput", throughput_rows)  # a moving window
        if self.state.version == self.version:
            return
        self.version = self.state.version
        for name, fn in self._columns().items():
            if name != "throughput":
                self._set(name, fn)
        self._set("header", _header)

    def _set(self, name, fn):
        try:
            value = fn(self.state)
            if name == "header":
                self.header.text = value
            else:
                self.sources[name].data = value
        except Exception as exc:  # one part not drawn, the rest of the page goes on
            if (name, type(exc)) not in self.failed:
                self.failed.add((name, type(exc)))
                logger.warning("the dasktrain page could not draw %s", name, exc_info=True)

    def layout(self):
        from bokeh.layouts import column, row
        from bokeh.models import Div

        self.header = Div(text=_header(self.state), sizing_mode="stretch_width")
        if self.state is None:
            return column(self.header, _table(self.sources["workers"], _WORKER_COLS, 160))
        src = self.sources
        return column(
            self.header,
            Div(text="<h3>Comparison</h3>"),
            row(_table(src["cells"], _CELL_COLS, 260), _table(src["verdicts"], _VERDICT_COLS, 260)),
            Div(text="<h3>DDP jobs</h3>"),
            _table(src["ranks"], _RANK_COLS, 160, width=1200),
            row(
                _curves(src["loss"], "loss per rank", "step (or epoch)"),
                _curves(src["accuracy"], "accuracy per rank", "step (or epoch)"),
            ),
            _table(src["errors"], _ERROR_COLS, 120, width=1200),
            Div(text="<h3>Iterative fits</h3>"),
            row(
                _curves(src["fit_curves"], "per pass / round", "iteration", log=True),
                _table(src["fits"], _FIT_COLS, 300, width=640),
            ),
            Div(text="<h3>Feature extraction and workers</h3>"),
            row(_bars(src["throughput"]), _table(src["workers"], _WORKER_COLS, 300, width=700)),
            sizing_mode="stretch_width",
        )


def _header(state):
    if state is None:
        return (
            "<h2>dasktrain</h2><p>This scheduler was started without dasktrain's preload, so "
            "nothing is collected here. Start it with <code>dask scheduler --preload "
            "dasktrain.dashboard</code> (clusters started by <code>dasktrain.connect()</code> "
            "have it).</p>"
        )
    c = state.comparison
    done = sum(1 for x in c["cells"].values() if x.get("state") == "done")
    parts = [f"<h2>dasktrain</h2><p>{len(state.jobs)} DDP job(s), {len(state.fits)} fit(s)"]
    if c["id"]:
        parts.append(f"; comparison {c['id']}: {done} of {len(c['cells'])} runs done")
    if state.last_event:
        kind, t = state.last_event
        parts.append(f"; last event: {kind} at {time.strftime('%H:%M:%S', time.localtime(t))}")
    return "".join(parts) + "</p>"


_CELL_COLS = ("workload", "setup", "size", "repeat", "state", "seconds", "status")
_VERDICT_COLS = ("workload", "outcome", "verdict")
_RANK_COLS = (
    "job",
    "attempt",
    "rank",
    "worker",
    "pid",
    "epoch",
    "loss",
    "accuracy",
    "samples_per_s",
    "state",
    "shards",
    "line",
)
_ERROR_COLS = ("time", "job", "state", "error")
_FIT_COLS = ("fit", "estimator", "path", "iterations", "metric", "value", "ms")
_WORKER_COLS = ("worker", "status", "memory", "reason")
_NUMBERS = {"size", "seconds", "epoch", "loss", "accuracy", "samples_per_s", "value", "ms"}


def _table(source, columns, height, width=600):
    from bokeh.models import (
        CustomJS,
        DataTable,
        HTMLTemplateFormatter,
        NumberFormatter,
        TableColumn,
    )

    # A paused worker (or a failed cell or job) stands out in red.
    red = HTMLTemplateFormatter(
        template='<span style="color:<%= (/paused|failed|error|timeout/.test(value)) '
        '? "#d62728" : "inherit" %>"><%- value %></span>'
    )
    number = NumberFormatter(format="0.[000]", nan_format="", null_format="")
    cols = [
        TableColumn(field=c, title=c, formatter=red)
        if c in ("state", "status", "reason")
        else TableColumn(field=c, title=c, formatter=number)
        if c in _NUMBERS
        else TableColumn(field=c, title=c)
        for c in columns
    ]
    table = DataTable(source=source, columns=cols, height=height, width=width, index_position=None)
    # A DataTable redraws when its view's indices change, not when values change in rows it
    # already shows (a run going from "running" to "done" stayed "running"): say so.
    source.js_on_change("data", CustomJS(args={"view": table.view}, code="view.change.emit()"))
    return table


def _curves(source, title, x_label, log=False):
    from bokeh.models import ColumnDataSource, CustomJS
    from bokeh.plotting import figure

    p = figure(
        title=title,
        height=260,
        width=600,
        x_axis_label=x_label,
        y_axis_type="log" if log else "linear",
        tools="pan,wheel_zoom,reset,hover",
        tooltips=[("", "@label")],
    )
    p.multi_line("xs", "ys", color="color", source=source, line_width=2)
    # The last point of every curve as a dot: a one-pass fit shows too.
    d = source.data
    ends = ColumnDataSource(
        {"x": [a[-1] for a in d["xs"]], "y": [a[-1] for a in d["ys"]], "color": d["color"]}
    )
    p.scatter("x", "y", color="color", size=6, source=ends)
    source.js_on_change(
        "data",
        CustomJS(
            args={"ends": ends},
            code="const d = cb_obj.data; ends.data = {x: d.xs.map(a => a[a.length - 1]), "
            "y: d.ys.map(a => a[a.length - 1]), color: d.color};",
        ),
    )
    return p


def _bars(source):
    from bokeh.plotting import figure

    p = figure(
        title="images/s per worker (last 10 s)",
        height=300,
        width=500,
        x_range=[],
        tools="",
        y_axis_label="images/s",
    )
    p.vbar(x="worker", top="images_per_s", width=0.8, source=source)
    p.xaxis.major_label_orientation = 0.6
    return p


def live_doc(scheduler, extra, doc):
    """The Bokeh document function registered as ``/dasktrain`` (see :mod:`..dashboard`)."""
    from distributed.dashboard.components.scheduler import env as dask_env
    from jinja2 import Environment, FileSystemLoader

    state = scheduler.plugins.get(PLUGIN_NAME)
    page = LivePage(scheduler, state)
    doc.title = f"Dask: {TITLE}"
    doc.add_root(page.layout())
    if page.sources.get("throughput") is not None:
        # Workers come and go: the bar chart's categories follow them.
        page.sources["throughput"].on_change("data", lambda attr, old, new: _follow(doc, new))
    doc.add_periodic_callback(page.update, _PERIOD_MS)
    loader = FileSystemLoader([os.path.dirname(_TEMPLATE), *dask_env.loader.searchpath])
    doc.template = Environment(loader=loader).get_template(os.path.basename(_TEMPLATE))
    doc.template_variables.update(extra)


def _follow(doc, data):
    from bokeh.models import FactorRange

    try:
        for fig in doc.select({"type": FactorRange}):
            if list(fig.factors) != list(data["worker"]):
                fig.factors = list(data["worker"])
    except Exception:  # never raise in a bokeh callback (see LivePage.update)
        logger.warning("the dasktrain page could not follow the workers", exc_info=True)
