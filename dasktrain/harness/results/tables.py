"""The arithmetic of a comparison: run records -> summary table, scaling and crossover.

Medians and ranges over the repeats per workload x setup x size, then against the baseline setup:
speedup (t_baseline / t), improvement ((t_baseline / t - 1) x 100), parallel efficiency
(speedup / device ratio), energy-delay product and cost per run from a price table.
:class:`~dasktrain.harness.Results` calls these; they only read DataFrames.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..measure.machine import is_busy
from ..settings import TIME_BASES, CostSettings

if TYPE_CHECKING:  # pandas is imported when a table is built
    import pandas as pd

__all__ = [
    "TABLE_COLUMNS",
    "faster",
    "time_range",
    "summary_table",
    "sizes_table",
    "scaling_table",
    "crossover_table",
]

#: Where a run's wall time went (see :mod:`dasktrain.harness.measure.breakdown`): seconds that
#: add up to its time. The table gives those of its median run, so that they add up to the median.
BREAKDOWN_PARTS = ["startup_s", "transfer_s", "idle_s", "compute_s"]

#: The breakdown's columns of the table: the median run's parts, then medians over the runs.
BREAKDOWN_MEDIANS = [
    *BREAKDOWN_PARTS,
    "tasks",
    "idle_gaps",
    "compute_cpu_s",
    "compute_wait_s",
]

#: The columns of :attr:`Results.table`, in order.
TABLE_COLUMNS = [
    "workload",
    "setup",
    "engine",
    "status",
    "repeats",
    "time_median",
    "time_min",
    "time_max",
    "train_time_median",
    "train_time_min",
    "train_time_max",
    "speedup",
    "improvement_pct",
    "devices",
    "workers",
    "threads",
    "efficiency",
    "quality_metric",
    "quality",
    "quality_min",
    "quality_max",
    "cpu_percent_mean",
    "others_cpu_percent_mean",
    "busy_runs",
    "peak_rss_bytes",
    "energy_j",
    "edp",
    "machine",
    "cost_usd",
    "core_seconds",
    *BREAKDOWN_MEDIANS,
    "workers_lost",
    "size",
    "error",
]


# ---------------------------------------------------------------------------------------
# Aggregation: runs -> one row per workload x setup x size
# ---------------------------------------------------------------------------------------
def faster(lo, hi, base_lo, base_hi) -> int:
    """1 when times in ``[lo, hi]`` are clearly faster than ``[base_lo, base_hi]`` (every run
    faster than every run of the other), -1 when clearly slower, 0 when the ranges overlap:
    no clear difference. One run each is a range of one point."""
    if hi < base_lo:
        return 1
    if lo > base_hi:
        return -1
    return 0


def _median(values):
    return float(values.median()) if values.notna().any() else math.nan


def _first(values):
    values = values.dropna()
    return values.iloc[0] if len(values) else None


def _median_parts(ok):
    """The time breakdown of the median run: the middle run's parts, or the mean of the two
    middle runs' for an even count (as the median time is), so they add up to the median.

    Medians taken part by part do not: their sum can exceed the median time, and a verdict
    built on them said an overhead was made of a part larger than itself.
    """
    import pandas as pd

    t = pd.to_numeric(ok["time"], errors="coerce")
    have = ok[t.notna()].assign(_t=t[t.notna()]).sort_values("_t", kind="stable")
    n = len(have)
    if not n or not all(c in have for c in BREAKDOWN_PARTS):
        return dict.fromkeys(BREAKDOWN_PARTS, math.nan)
    middle = have.iloc[sorted({(n - 1) // 2, n // 2})]
    return {c: _median(pd.to_numeric(middle[c], errors="coerce")) for c in BREAKDOWN_PARTS}


def _aggregate_group(g):
    """The summary row of one workload x setup x size group of runs."""
    import pandas as pd

    ok, bad = g[g.status == "ok"], g[g.status != "ok"]
    row = {
        "status": ("ok" if bad.empty else "partial") if len(ok) else bad.status.iloc[0],
        "error": _first(bad.error),
        "repeats": len(ok),
    }
    for col in (*TIME_BASES, "quality"):
        v = pd.to_numeric(ok[col], errors="coerce")
        any_ = v.notna().any()
        if col != "quality":
            row[f"{col}_median"] = _median(v)
        row[f"{col}_min"] = float(v.min()) if any_ else math.nan
        row[f"{col}_max"] = float(v.max()) if any_ else math.nan
    row["devices"] = float(g.devices.max())
    for col in ("workers", "threads"):
        v = pd.to_numeric(g[col], errors="coerce") if col in g else None
        row[col] = float(v.max()) if v is not None and v.notna().any() else math.nan
    row["quality_metric"] = _first(ok.quality_metric)
    medians = ("quality", "cpu_percent_mean", "others_cpu_percent_mean", "peak_rss_bytes")
    for col in (*medians, "energy_j", *BREAKDOWN_MEDIANS[len(BREAKDOWN_PARTS) :]):
        v = pd.to_numeric(ok[col], errors="coerce") if col in ok else pd.Series(dtype=float)
        row[col] = _median(v)
    row.update(_median_parts(ok))
    row["busy_runs"] = int(is_busy(ok["others_cpu_percent_mean"]).sum())
    lost = pd.to_numeric(g.workers_lost, errors="coerce")
    row["workers_lost"] = float(lost.sum()) if lost.notna().any() else math.nan
    return row


def _aggregate(runs):
    """One row per workload x setup x size: medians, ranges, status and error."""
    import pandas as pd

    rows = []
    r = runs.assign(size=runs["size"].fillna(-1))
    for (w, name, s), g in r.groupby(["workload", "setup", "size"], sort=False, dropna=False):
        row = {"workload": w, "setup": name, "engine": g.engine.iloc[0]}
        row["size"] = None if s == -1 else s
        row.update(_aggregate_group(g))
        rows.append(row)
    return pd.DataFrame(rows)


def _crossover_row(w, e, g, base):
    """Where setup ``e`` starts to win on workload ``w`` (``g``, ``base``: its scaling rows
    and the baseline's, indexed by size). A win is a clear one (:func:`faster`)."""
    g = g.set_index("size").sort_index()
    sizes = [s for s in g.index if s in base.index and not math.isnan(g.at[s, "time_median"])]
    if not sizes:
        return {"workload": w, "setup": e, "crossover_size": math.nan, "note": "no timings"}
    wins = [_outcome(g.loc[s], base.loc[s]) == 1 for s in sizes]
    lo, hi = sizes[0], sizes[-1]
    if not wins[-1]:
        cross, note = math.nan, f"{e} does not win in range [{lo:g}, {hi:g}]"
    else:
        i = len(wins) - 1
        while i > 0 and wins[i - 1]:
            i -= 1
        cross = sizes[i]
        note = (
            f"{e} wins over the whole range [{lo:g}, {hi:g}]"
            if i == 0
            else f"{e} wins from size {cross:g}"
        )
    return {"workload": w, "setup": e, "crossover_size": cross, "note": note}


def time_range(row) -> tuple[float, float]:
    """``(time_min, time_max)`` of a table row (a Series or a dict), or the median twice
    where the row has no range."""
    lo, hi, mid = row.get("time_min"), row.get("time_max"), row["time_median"]
    return (mid, mid) if lo is None or hi is None or lo != lo or hi != hi else (lo, hi)


def _outcome(row, base):
    """:func:`faster` of two table rows."""
    return faster(*time_range(row), *time_range(base))


def _with_engine(row, g):
    row["engine"] = str(g.engine.iloc[0]) if len(g) else None
    return row


# ---------------------------------------------------------------------------------------
# Against the baseline
# ---------------------------------------------------------------------------------------
def _derive_row(row, agg, s: CostSettings):
    """Speedup, efficiency, EDP and cost of one aggregated row against the baseline."""
    basis = f"{s.time_basis}_median"
    base = agg[
        (agg.workload == row["workload"])
        & (agg.setup == s.baseline)
        & ((agg["size"] == row["size"]) | (agg["size"].isna() & (row["size"] is None)))
    ]
    t = row[basis]
    tb = float(base[basis].iloc[0]) if len(base) else math.nan
    db = float(base.devices.iloc[0]) if len(base) else math.nan
    speed = tb / t if t and t > 0 and not math.isnan(tb) else math.nan
    row["speedup"] = speed
    row["improvement_pct"] = (speed - 1) * 100 if not math.isnan(speed) else math.nan
    row["efficiency"] = speed / (row["devices"] / db) if db and not math.isnan(speed) else math.nan
    # Energy is measured over the whole step, so EDP uses the whole-step time whatever the
    # time basis (energy of the whole step x training time would mix two windows).
    energy = row["energy_j"]
    row["edp"] = energy * row["time_median"] if not math.isnan(energy) else math.nan
    row["machine"], row["cost_usd"] = None, math.nan
    if s.prices is not None:
        usd_h, row["machine"] = s.price(row["setup"])
        row["cost_usd"] = usd_h * t / 3600 if not math.isnan(t) else math.nan
    # What a run costs in cores held, priced or not: the setup's cores x the whole step.
    cores = row.get("threads", math.nan)
    row["core_seconds"] = cores * row["time_median"] if cores == cores else math.nan
    return row


def _derived(runs, settings):
    import pandas as pd

    agg = _aggregate(runs)
    return pd.DataFrame([_derive_row(r.to_dict(), agg, settings) for _, r in agg.iterrows()])


def summary_table(runs: pd.DataFrame, settings: CostSettings) -> pd.DataFrame:
    """One row per workload x setup at the largest size, columns :data:`TABLE_COLUMNS`,
    judged by ``settings`` (baseline, time basis, prices)."""
    derived = _derived(runs, settings)
    if len(derived["size"].dropna()):
        top = derived.groupby("workload")["size"].transform("max")
        derived = derived[(derived["size"] == top) | derived["size"].isna()]
    return derived[TABLE_COLUMNS].reset_index(drop=True)


def sizes_table(runs: pd.DataFrame, settings: CostSettings) -> pd.DataFrame:
    """One row per workload x setup x size, columns :data:`TABLE_COLUMNS` (what
    :func:`summary_table` gives at the largest size, at every size), smallest size first."""
    derived = _derived(runs, settings)
    order = {w: i for i, w in enumerate(dict.fromkeys(derived.workload))}
    keyed = derived.assign(_w=derived.workload.map(order), _s=derived["size"].fillna(-1))
    keyed = keyed.sort_values(["_w", "_s"], kind="stable")
    return keyed[TABLE_COLUMNS].reset_index(drop=True)


def scaling_table(runs: pd.DataFrame, settings: CostSettings) -> pd.DataFrame | None:
    """Median time (and its range) per workload x setup x size, or None with a single size."""
    if runs["size"].dropna().nunique() < 2:
        return None
    agg = _derived(runs[runs["size"].notna()], settings)
    cols = ["workload", "setup", "engine", "size", "repeats", "time_median", "time_min"]
    cols += ["time_max", "speedup", "quality", "busy_runs", "status"]
    return agg[cols].sort_values(["workload", "setup", "size"], ignore_index=True)


def crossover_table(scaling, baseline) -> pd.DataFrame | None:
    """Per workload and non-baseline setup, the size from which it wins (see
    :attr:`Results.crossover <dasktrain.harness.Results.crossover>`)."""
    import pandas as pd

    if scaling is None:
        return None
    sc, rows = scaling, []
    for (w, e), g in sc.groupby(["workload", "setup"], sort=False):
        if e != baseline:
            base = sc[(sc.workload == w) & (sc.setup == baseline)]
            row = _crossover_row(w, e, g, base.set_index("size"))
            rows.append(_with_engine(row, g))
    return pd.DataFrame(rows, columns=["workload", "setup", "engine", "crossover_size", "note"])
