"""The answer of a comparison, per workload: where distributing pays, why, on which setup.

Every sentence is computed from the measurements (the summary table, the times per size and
the time breakdown), never written by hand:

* **who wins**, at every measured size or from which size on (the crossover);
* **why a cluster loses**: its overhead per run against the baseline and what the breakdown
  says it is made of (start-up, data transfer, scheduler/idle with its round trips);
* **from which size it would pay**, extrapolated from a straight-line fit of time against size
  per setup (``t = fixed + per_sample x n``: the fixed part is the overhead, the slope the cost
  of one more sample) when the cluster's slope is the smaller, or "no crossover in sight" when
  it is not;
* quality when the setups differ, and strong scaling when clusters of several sizes ran.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["fit_line", "crossovers", "verdicts", "EXTRAPOLATE_LIMIT"]

#: An extrapolated crossover beyond this many times the largest measured size is not given.
EXTRAPOLATE_LIMIT = 1000


def fit_line(sizes, times) -> tuple[float, float] | None:
    """``(fixed, per_sample)`` of the least-squares line ``t = fixed + per_sample * n``; None
    with fewer than two sizes."""
    x = np.asarray(sizes, dtype=float)
    y = np.asarray(times, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def _extrapolate(base_fit, other_fit, hi):
    """``(size, note)``: where the other setup's line crosses below the baseline's."""
    if base_fit is None or other_fit is None:
        return math.nan, None
    (a_b, b_b), (a_o, b_o) = base_fit, other_fit
    if b_b <= 0:
        return math.nan, "has no trend to extrapolate (the baseline's time does not grow)"
    if b_o >= b_b:
        return math.nan, "shows no crossover in sight (its time grows with size as fast)"
    n = (a_o - a_b) / (b_b - b_o)
    if n <= hi:
        return math.nan, None
    if n > EXTRAPOLATE_LIMIT * hi:
        limit = EXTRAPOLATE_LIMIT * hi
        return math.nan, f"would not pay below ~{limit:,.0f} samples (extrapolated)"
    return n, f"would pay from ~{_round(n):,} samples (extrapolated)"


def _round(n):
    """Two significant figures: an extrapolation is no more precise than that."""
    if not math.isfinite(n) or n <= 0:
        return n
    digits = max(0, int(math.floor(math.log10(n))) - 1)
    return int(round(n, -digits))


def crossovers(results) -> pd.DataFrame | None:
    """Per workload and non-baseline setup: the measured crossover size, the extrapolated one
    and both fitted lines (``fixed_s``, ``per_sample_s``; ``base_*`` for the baseline).

    None when fewer than two sizes ran.
    """
    import pandas as pd

    sc = results.scaling
    if sc is None:
        return None
    cr = results.crossover
    rows = []
    for (w, s), g in sc.groupby(["workload", "setup"], sort=False):
        if s == results.baseline:
            continue
        base = sc[(sc.workload == w) & (sc.setup == results.baseline)]
        bf = fit_line(base["size"], base.time_median)
        of = fit_line(g["size"], g.time_median)
        hi = float(g["size"].max())
        n, note = _extrapolate(bf, of, hi)
        measured = cr[(cr.workload == w) & (cr.setup == s)]
        rows.append(
            {
                "workload": w,
                "setup": s,
                "measured": float(measured.crossover_size.iloc[0]) if len(measured) else math.nan,
                "measured_note": measured.note.iloc[0] if len(measured) else None,
                "extrapolated": n,
                "extrapolated_note": note,
                "fixed_s": of[0] if of else math.nan,
                "per_sample_s": of[1] if of else math.nan,
                "base_fixed_s": bf[0] if bf else math.nan,
                "base_per_sample_s": bf[1] if bf else math.nan,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The sentences
# --------------------------------------------------------------------------------------------
def _secs(t):
    return f"{t:.2g} s" if t < 10 else f"{t:.0f} s"


def _why(row, base_time):
    """What the cluster's extra time per run is made of, from its breakdown."""
    extra = row.time_median - base_time
    parts = {
        "start-up": row.get("startup_s", math.nan),
        "data transfer": row.get("transfer_s", math.nan),
        "scheduler/idle": row.get("idle_s", math.nan),
        # Computing itself took longer than the baseline's whole step (fewer cores per task,
        # a slower path): part of the overhead, not hidden behind the others.
        "slower compute": row.get("compute_s", math.nan) - base_time,
    }
    parts = {k: v for k, v in parts.items() if v == v and v > 0}
    text = f"{row.setup} overhead {_secs(extra)} per run"
    if not parts:
        return text
    top = max(parts, key=parts.get)
    detail = f"{top} {_secs(parts[top])}"
    if top == "scheduler/idle" and row.get("idle_gaps", 0) == row.get("idle_gaps", 0):
        gaps = int(row.get("idle_gaps", 0) or 0)
        if gaps:
            detail += f" over {gaps} round trips of {row.get('tasks', 0):.0f} tasks"
    if top == "start-up" and row.engine == "dask":
        detail += " before its first task or training step"
    rest = [f"{k} {_secs(v)}" for k, v in parts.items() if k != top and v >= 0.05 * extra]
    return f"{text}: mostly {detail}" + (f"; {', '.join(rest)}" if rest else "")


def _wins(sc, w, setup, baseline):
    """``[(size, setup time, baseline time)]`` at the sizes both measured."""
    a = sc[(sc.workload == w) & (sc.setup == setup)].set_index("size").time_median
    b = sc[(sc.workload == w) & (sc.setup == baseline)].set_index("size").time_median
    return [(s, a[s], b[s]) for s in sorted(set(a.index) & set(b.index)) if a[s] == a[s]]


def _who_wins(results, w, best, base_row):
    """The first half of a verdict: who is faster, where; and the crossover."""
    sc = results.scaling
    bl = results.baseline
    if sc is None:
        x = base_row.time_median / best.time_median
        size = best["size"]
        where = (
            f"at {size:g} samples" if isinstance(size, numbers.Real) and size == size else "here"
        )
        winner = best.setup if x > 1 else bl
        return f"{winner} is faster {where} ({max(x, 1 / x):.1f}x)", x > 1, None
    pts = _wins(sc, w, best.setup, bl)
    if not pts:
        return f"{best.setup} and {bl} share no measured size", False, None
    wins = [t < tb for _, t, tb in pts]
    lo, hi = pts[0][0], pts[-1][0]
    ratio = pts[-1][2] / pts[-1][1]
    if all(wins):
        return f"{best.setup} is faster at every measured size ({ratio:.1f}x at {hi:g})", True, None
    if not any(wins):
        span = f"{lo:g}-{hi:g} samples" if lo != hi else f"{hi:g} samples"
        return f"{bl} is faster at every measured size ({span})", False, "extrapolate"
    if wins[-1]:
        first = next(i for i in range(len(wins)) if all(wins[i:]))
        return (
            f"{best.setup} pays from ~{pts[first][0]:g} samples ({ratio:.1f}x at {hi:g}; "
            f"slower at {pts[first - 1][0]:g})",
            True,
            None,
        )
    last = max(i for i, won in enumerate(wins) if won)
    return (
        f"{best.setup} is faster only up to {pts[last][0]:g} samples; {bl} at {hi:g} "
        f"({1 / ratio:.1f}x)",
        False,
        None,
    )


def _quality(rows, base_row):
    q = rows[rows.quality.notna()]
    if len(q) < 2 or q.quality.max() - q.quality.min() < 0.02:
        if len(q) and base_row.quality == base_row.quality:
            return f"{base_row.quality_metric} {base_row.quality:.3f} on every setup"
        return None
    each = ", ".join(f"{r.quality:.3f} {r.setup}" for r in q.itertuples())
    return f"{q.quality_metric.iloc[0]} {each}"


def _scaling(strong, w):
    if strong is None:
        return None
    g = strong[strong.workload == w].sort_values("workers")
    if len(g) < 2:
        return None
    lo, hi = g.iloc[0], g.iloc[-1]
    return (
        f"{lo.workers:g} -> {hi.workers:g} workers: {hi.speedup:.2f}x "
        f"(efficiency {hi.efficiency:.2f})"
    )


def _other_engines(ok, best, base_row):
    """The speed of the setups of a third engine (Spark beside local and dask), which the
    sentence's head does not name when they are not the fastest."""
    other = ok[~ok.engine.isin([best.engine, base_row.engine])]
    each = [f"{r.setup} {base_row.time_median / r.time_median:.2g}x" for r in other.itertuples()]
    return f"speed against {base_row.setup}: {', '.join(each)}" if each else None


def _not_measured(w, rows):
    bad = rows[rows.status != "ok"]
    why = ""
    if len(bad):
        r = bad.iloc[0]
        why = f" ({r.setup}: {r.status}" + (f": {str(r.error)[:90]}" if r.error else "") + ")"
    return f"{w}: not measured{why}"


def _verdict(results, w, rows, cross, strong):
    """One workload's sentence."""
    ok = rows[rows.time_median.notna()]
    base = ok[ok.setup == results.baseline]
    others = ok[ok.setup != results.baseline]
    if base.empty or others.empty:
        if ok.empty:
            return _not_measured(w, rows)
        missing = sorted(set(rows.setup) - set(ok.setup))
        head = f"{w}: only {', '.join(ok.setup)} measured"
        return head + (f" ({_not_measured(w, rows[rows.setup.isin(missing)])[len(w) + 2 :]})")
    b = base.iloc[0]
    best = others.loc[others.time_median.idxmin()]
    head, wins, extra = _who_wins(results, w, best, b)
    parts = [head]
    if not wins:
        parts.append(_why(best, b.time_median))
    if extra == "extrapolate" and cross is not None:
        c = cross[(cross.workload == w) & (cross.setup == best.setup)]
        if len(c) and c.extrapolated_note.iloc[0]:
            parts.append(f"{best.setup} {c.extrapolated_note.iloc[0]}")
    if results.scaling is None:
        parts.append("one size measured: pass sizes= for the crossover")
    parts += [p for p in (_quality(ok, b), _scaling(strong, w), _other_engines(ok, best, b)) if p]
    failed = rows[rows.status != "ok"]
    if len(failed):
        parts.append(f"not measured on {', '.join(failed.setup)}")
    return f"{w}: " + "; ".join(parts)


def verdicts(results) -> pd.DataFrame:
    """One sentence per workload (columns ``workload``, ``verdict``), in the table's order."""
    import pandas as pd

    t = results.table
    cross = crossovers(results)
    strong = results.strong_scaling
    out = [
        {"workload": w, "verdict": _verdict(results, w, t[t.workload == w], cross, strong)}
        for w in dict.fromkeys(t.workload)
    ]
    return pd.DataFrame(out, columns=["workload", "verdict"])
