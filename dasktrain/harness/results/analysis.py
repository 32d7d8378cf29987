"""Setups side by side: strong scaling over the clusters, the setups table, the whole cost.

:class:`~dasktrain.harness.Results` calls these on its summary table (the largest size):

* :func:`strong_scaling`: per workload, the dask setups by number of workers, with the speedup
  against the one with the fewest workers and the parallel efficiency (speedup divided by the
  ratio of workers). It assumes the clusters have workers alike (the same machines), as the
  local clusters of ``clusters=[1, 2]`` do.
* :func:`setups_table`: the time of every workload on every setup, one column per setup (the
  "CPU vs cluster A vs cluster B" table of the studies this library serves).
* :func:`cost_summary`: what the whole comparison cost: its wall time, the core-seconds and
  USD (with a price table) of its timed runs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypedDict

from .tables import faster, time_range

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["strong_scaling", "setups_table", "cost_summary"]


def strong_scaling(table) -> pd.DataFrame | None:
    """Speedup and efficiency against the number of workers; None with fewer than two
    cluster sizes.

    Columns: ``workload``, ``setup``, ``workers``, ``time_median``, ``speedup`` (time of the
    smallest cluster / time), ``ideal`` (workers / workers of the smallest cluster),
    ``efficiency`` (speedup / ideal) and ``clear`` (1: every run faster than every run of the
    smallest cluster, -1: every run slower, 0: their min-max ranges overlap; see
    ``dasktrain.harness.results.tables.faster``).
    """
    import pandas as pd

    d = table[(table.engine == "dask") & table.time_median.notna()]
    if d.empty or d.workers.nunique() < 2:
        return None
    rows = []
    for w, g in d.groupby("workload", sort=False):
        g = g.sort_values(["workers", "time_median"])
        ref = g.iloc[0]
        for r in g.itertuples():
            speedup = ref.time_median / r.time_median if r.time_median > 0 else math.nan
            ideal = r.workers / ref.workers if ref.workers else math.nan
            rows.append(
                {
                    "workload": w,
                    "setup": r.setup,
                    "workers": r.workers,
                    "time_median": r.time_median,
                    "speedup": speedup,
                    "ideal": ideal,
                    "efficiency": speedup / ideal if ideal else math.nan,
                    "clear": faster(*time_range(r._asdict()), *time_range(ref)),
                }
            )
    out = pd.DataFrame(rows)
    # A workload measured on one cluster size only has no scaling to show.
    keep = out.groupby("workload").workers.transform("nunique") >= 2
    out = out[keep].reset_index(drop=True)
    return out if len(out) else None


def setups_table(table, baseline) -> pd.DataFrame:
    """Median whole-step seconds per workload (rows) and setup (columns), the baseline first."""
    t = table.pivot_table(index="workload", columns="setup", values="time_median", sort=False)
    order = [baseline] + [s for s in dict.fromkeys(table.setup) if s != baseline]
    t = t.reindex(columns=[s for s in order if s in t.columns])
    t = t.reindex(list(dict.fromkeys(table.workload)))
    t.columns.name = None
    return t


class Cost(TypedDict):
    """What a comparison cost (:attr:`Results.cost <dasktrain.harness.Results.cost>`)."""

    wall_s: float | None  # start to finish; None when unknown
    runs: int  # timed runs that finished
    run_s: float  # their seconds
    core_seconds: dict[str, float]  # per setup, and "total"
    usd: dict[str, float] | None  # per setup, and "total"; None without a price table


def cost_summary(results) -> Cost:
    """What the comparison cost: wall time, timed seconds, core-seconds, USD when priced.

    Returns
    -------
    Cost
        ``wall_s`` (start to finish, None when unknown), ``runs`` (timed runs), ``run_s`` (their
        seconds), ``core_seconds`` (cores held x seconds, per setup and in total) and
        ``usd`` (per setup and total; None without a price table).
    """
    import pandas as pd

    runs = results.runs[results.runs.status == "ok"]
    times = pd.to_numeric(runs.time, errors="coerce")
    cores = pd.to_numeric(runs.threads, errors="coerce")
    per_setup = (times * cores).groupby(runs.setup).sum()
    usd = None
    if results.prices is not None:
        usd = {}
        for setup, secs in times.groupby(runs.setup).sum().items():
            rate, _ = results.settings.price(setup)
            usd[setup] = rate * secs / 3600
        usd["total"] = sum(usd.values())
    return Cost(
        wall_s=_wall(results.setup),
        runs=int(len(runs)),
        run_s=float(times.sum()),
        core_seconds={
            **{k: float(v) for k, v in per_setup.items()},
            "total": float(per_setup.sum()),
        },
        usd=usd,
    )


def _wall(setup):
    import time

    try:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        start = time.mktime(time.strptime(setup["started"], fmt))
        return time.mktime(time.strptime(setup["finished"], fmt)) - start
    except (KeyError, TypeError, ValueError):
        return None
