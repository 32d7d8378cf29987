"""Results as text for a terminal: the answer, the verdicts, then a table that fits a screen.

``print(results)`` must read well in a terminal: the overall answer and the machine's state
come first (:mod:`~dasktrain.harness.results.answer`), then the verdicts, then one line per
workload x setup (at the largest size) with the columns a person compares.
(:class:`~dasktrain.harness.results.printable.ResultsTable`, the DataFrame of
``Results.table``, prints every row and column, wrapped to the terminal's width.)
"""

from __future__ import annotations

import math

__all__ = ["results_text", "SHORT_COLUMNS"]


#: ``(column, header, format)`` of the terminal table; a column missing from the table is left
#: out.
SHORT_COLUMNS = [
    ("workload", "workload", "{}"),
    ("setup", "setup", "{}"),
    ("size", "size", "{:g}"),
    ("repeats", "n", "{:g}"),
    ("time_median", "time s", "{:.3g}"),
    ("range", "min-max s", "{}"),
    ("speedup", "speedup", "{:.2f}x"),
    ("startup_s", "start-up", "{:.2g}"),
    ("transfer_s", "transfer", "{:.2g}"),
    ("idle_s", "sched/idle", "{:.2g}"),
    ("compute_s", "compute", "{:.2g}"),
    ("quality_text", "quality", "{}"),
    ("busy_text", "busy", "{}"),
    ("cpu_percent_mean", "CPU %", "{:.0f}"),
    ("peak_rss_mb", "peak MiB", "{:.0f}"),
    ("core_seconds", "core-s", "{:.3g}"),
    ("cost_usd", "USD", "{:.3g}"),
]


def _cell(value, fmt):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _short_frame(results):
    t = results.table.copy()
    t["peak_rss_mb"] = t["peak_rss_bytes"] / 2**20
    t["range"] = [
        f"{lo:.3g}-{hi:.3g}" if lo == lo and hi == hi and lo != hi else "-"
        for lo, hi in zip(t.time_min, t.time_max)
    ]
    t["quality_text"] = [
        f"{m} {q:.3f}" if isinstance(m, str) and q == q else "-"
        for m, q in zip(t.quality_metric, t.quality)
    ]
    # Busy runs are marked ("2/3": two of its three runs beside other programs); a quiet
    # comparison has no such column.
    busy = t["busy_runs"].fillna(0)
    t["busy_text"] = [f"{b:g}/{n:g}" if b else "" for b, n in zip(busy, t["repeats"])]
    if not busy.any():
        t = t.drop(columns="busy_text")
    if t["size"].isna().all():
        t = t.drop(columns="size")
    if results.prices is None:
        t = t.drop(columns="cost_usd")
    if t[["startup_s", "transfer_s", "idle_s"]].isna().all().all():
        t = t.drop(columns=["startup_s", "transfer_s", "idle_s", "compute_s"])
    return t


def _table_lines(results):
    t = _short_frame(results)
    cols = [(c, h, f) for c, h, f in SHORT_COLUMNS if c in t]
    cells = [[h for _, h, _ in cols]]
    cells += [[_cell(r[c], f) for c, _, f in cols] for _, r in t.iterrows()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = []
    for row in cells:
        parts = [
            v.ljust(w) if i < 2 or cols[i][0] == "quality_text" else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def _notes(results):
    t = results.table
    lines = []
    for _, r in t[t.error.notna()].iterrows():
        lines.append(f"{r.workload} [{r.setup}] {r.status}: {r.error}")
    for _, r in t[t.workers_lost.fillna(0) > 0].iterrows():
        lines.append(
            f"{r.workload} [{r.setup}] lost {r.workers_lost:g} worker(s) during its runs: "
            "those times include the recovery (see runs.note)"
        )
    if t["energy_j"].isna().all():
        lines.append("energy: not measured on this machine (no readable RAPL/NVML counter)")
    return lines


def results_text(results, *, verdicts=True) -> str:
    """The answer and the machine's state, the verdicts, the table at the largest size (every
    size: ``results.by_size``), then the errors and notes."""
    from ..results.answer import answer_lines

    lines = []
    if verdicts:
        lines += [*answer_lines(results), "", "Verdicts"]
        lines += [f"  {v}" for v in results.verdicts.verdict]
        lines.append("")
    sizes = results.table["size"].dropna()
    at = f" at {sizes.max():g} samples (every size: results.by_size)" if len(sizes) else ""
    lines.append(
        f"Median of the n timed runs{at}; speedup against {results.baseline}; start-up / "
        "transfer / sched-idle / compute: where the median dask run's seconds went"
        + ("; busy: runs beside other programs" if results.table.busy_runs.any() else "")
    )
    lines += _table_lines(results)
    return "\n".join(lines + _notes(results))
