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

A sentence says only what was measured:

* a setup *wins* at a size only when every one of its runs there was faster than every run
  of the other (their min-max ranges do not overlap); otherwise it says "no clear
  difference", and every head states the spread it rests on (runs and min-max seconds);
* the parts an overhead is made of are never larger than the overhead: the breakdown is that
  of the median run (its parts add up to the median), and compute faster than the baseline's
  is said to offset the rest;
* qualities are "on every setup" only when equal as printed; otherwise each is given, and
  whether they agree within their spread over the runs or within ``QUALITY_TOLERANCE`` (0.02);
* a workload with *busy* runs (other programs used more than half a core meanwhile) gets no
  verdict unless the results allow busy runs (``allow_busy``);
* a strong-scaling ratio (1 -> 2 workers) comes with its efficiency only when the larger
  cluster's runs are clear of the smaller one's; otherwise "no clear difference".
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

from .tables import faster, time_range

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["fit_line", "crossovers", "verdicts", "EXTRAPOLATE_LIMIT", "QUALITY_TOLERANCE"]

#: An extrapolated crossover beyond this many times the largest measured size is not given.
EXTRAPOLATE_LIMIT = 1000
#: Qualities (accuracy, silhouette...) this close are said to be equal, and the tolerance is
#: printed beside them.
QUALITY_TOLERANCE = 0.02


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


def _why(row, base):
    """What the cluster's extra time per run is made of, from its median run's breakdown.

    The local engine has no start-up, transfer or scheduler; the cluster's compute is set
    against the baseline's whole run: slower compute is part of the overhead, faster compute
    offsets it (and then the other parts add up to more than the overhead, which is said).
    """
    extra = row.time_median - base.time_median
    text = f"{row.setup} overhead {_secs(extra)} per run"
    parts = {
        "start-up": row.get("startup_s", math.nan),
        "data transfer": row.get("transfer_s", math.nan),
        "scheduler/idle": row.get("idle_s", math.nan),
    }
    parts = {k: v for k, v in parts.items() if v == v and v > 0}
    compute = row.get("compute_s", math.nan) - base.time_median
    if not parts or compute != compute:
        return text
    if compute > 0:
        parts["slower compute"] = compute
    named = sorted(parts, key=parts.get, reverse=True)
    top = named[0]
    detail = [f"{k} {_secs(parts[k])}" for k in named if k == top or parts[k] >= 0.05 * extra]
    detail[0] += _round_trips(row) if top == "scheduler/idle" else ""
    if top == "start-up" and row.engine == "dask":
        detail[0] += " before its first task or training step"
    if compute < 0:
        offset = f"offset by compute {_secs(-compute)} faster than {base.setup}'s whole run"
        return f"{text}: {', '.join(detail)}, {offset}"
    if parts[top] > extra / 2:
        return f"{text}: mostly {detail[0]}" + (f"; {', '.join(detail[1:])}" if detail[1:] else "")
    return f"{text}: {', '.join(detail)}"


def _round_trips(row):
    gaps, tasks = row.get("idle_gaps", 0), row.get("tasks", 0)
    gaps = int(gaps) if gaps == gaps and gaps else 0
    return f" over {gaps} round trips of {tasks:.0f} tasks" if gaps else ""


def _points(results, w, setup, best, base_row):
    """The sizes both setups measured: ``[{size, time, lo, hi, n, and base_* alike}]``."""
    sc = results.scaling
    if sc is None:
        rows = [(best["size"], best, base_row)]
    else:
        a = sc[(sc.workload == w) & (sc.setup == setup)].set_index("size")
        b = sc[(sc.workload == w) & (sc.setup == results.baseline)].set_index("size")
        both = sorted(
            s
            for s in set(a.index) & set(b.index)
            if a.at[s, "time_median"] == a.at[s, "time_median"]
        )
        rows = [(s, a.loc[s], b.loc[s]) for s in both]
    out = []
    for size, r, rb in rows:
        p = {"size": size}
        for prefix, x in (("", r), ("base_", rb)):
            lo, hi = time_range(x)
            p |= {f"{prefix}time": x["time_median"], f"{prefix}lo": lo, f"{prefix}hi": hi}
            p[f"{prefix}n"] = int(x.get("repeats", 0) or 0)
        p["outcome"] = faster(p["lo"], p["hi"], p["base_lo"], p["base_hi"])
        out.append(p)
    return out


def _where(size):
    if isinstance(size, numbers.Real) and size == size:
        return f"at {size:g} samples"
    return "here"


def _range(lo, hi):
    return f"{lo:.3g}-{hi:.3g} s" if lo != hi else f"{lo:.3g} s"


def _spread(p, setup, baseline):
    """The runs a head rests on: how many at its deciding size, and their min-max seconds."""
    n, nb = p["n"], p["base_n"]
    runs = f"{n} run{'s' if n != 1 else ''} each" if n == nb else f"{nb} and {n} runs"
    where = _where(p["size"])
    runs = runs if where == "here" else f"{where}, {runs}"  # "here": the head said where
    if max(n, nb) <= 1:
        return f"{runs}: no spread measured (repeat=3 measures one)"
    return (
        f"{runs}: {baseline} {_range(p['base_lo'], p['base_hi'])}, "
        f"{setup} {_range(p['lo'], p['hi'])}"
    )


def _listed(pts):
    return ", ".join(f"{p['size']:g}" for p in pts)


def _one_size(p, setup, bl):
    where, x = _where(p["size"]), p["base_time"] / p["time"]
    if p["outcome"] == 1:
        return f"{setup} is faster {where} ({x:.1f}x)", "pays"
    if p["outcome"] == -1:
        return f"{bl} is faster {where} ({1 / x:.1f}x)", "baseline"
    return f"no clear difference between {setup} and {bl} {where} (their times overlap)", "tie"


def _sizes(pts, setup, bl):
    """``(head, outcome)`` over several sizes: who wins where, from which size."""
    oc = [p["outcome"] for p in pts]
    last = pts[-1]
    hi, x = last["size"], last["base_time"] / last["time"]
    span = f"{pts[0]['size']:g}-{hi:g} samples" if len(pts) > 1 else f"{hi:g} samples"
    if all(o == 1 for o in oc):
        return f"{setup} is faster at every measured size ({x:.1f}x at {hi:g})", "pays"
    if all(o == -1 for o in oc):
        return f"{bl} is faster at every measured size ({span})", "baseline"
    if all(o == 0 for o in oc):
        return f"no clear difference between {setup} and {bl} at any measured size ({span})", "tie"
    if oc[-1] == 1:
        first = next(i for i in range(len(oc)) if all(o == 1 for o in oc[i:]))
        prev = pts[first - 1]
        before = "slower" if prev["outcome"] == -1 else "no clear difference"
        head = f"{setup} pays from ~{pts[first]['size']:g} samples ({x:.1f}x at {hi:g}; "
        return head + f"{before} at {prev['size']:g})", "pays"
    won = [p for p in pts if p["outcome"] == 1]
    tied = [p for p in pts if p["outcome"] == 0]
    if oc[-1] == -1:
        if won:
            return (
                f"{setup} is faster only up to {won[-1]['size']:g} samples; {bl} at {hi:g} "
                f"({1 / x:.1f}x)"
            ), "baseline"
        lost = [p for p in pts if p["outcome"] == -1]
        return (
            f"{bl} is faster at {_listed(lost)} samples ({1 / x:.1f}x at {hi:g}); no clear "
            f"difference at {_listed(tied)}"
        ), "baseline"
    lost = [p for p in pts if p["outcome"] == -1]
    head = f"no clear difference between {setup} and {bl} at {hi:g} samples"
    head += f"; {setup} faster at {_listed(won)}" if won else ""
    return head + (f"; {bl} faster at {_listed(lost)}" if lost else ""), "tie"


def _who_wins(results, w, best, base_row):
    """``(head, outcome)``: who is faster where, with the spread it rests on; ``outcome`` is
    ``"pays"`` (the cluster wins at the largest size), ``"baseline"`` or ``"tie"``."""
    bl = results.baseline
    pts = _points(results, w, best.setup, best, base_row)
    if not pts:
        return f"{best.setup} and {bl} share no measured size", "none"
    if results.scaling is None:
        head, outcome = _one_size(pts[-1], best.setup, bl)
    else:
        head, outcome = _sizes(pts, best.setup, bl)
    return f"{head}; {_spread(pts[-1], best.setup, bl)}", outcome


def _quality(rows):
    """Quality per setup; "on every setup" only when equal as printed (see the module)."""
    q = rows[rows.quality.notna()]
    if not len(q):
        return None
    metric = q.quality_metric.iloc[0]
    shown = {f"{v:.3f}" for v in q.quality}
    if len(shown) == 1:
        return f"{metric} {shown.pop()} on every setup"
    each = ", ".join(f"{r.setup} {r.quality:.3f}" for r in q.itertuples())
    lo = q.get("quality_min", q.quality).fillna(q.quality)
    hi = q.get("quality_max", q.quality).fillna(q.quality)
    if lo.max() <= hi.min():
        return f"{metric} {each}: equal within their spread over the runs"
    gap = q.quality.max() - q.quality.min()
    if gap <= QUALITY_TOLERANCE:
        return f"{metric} {each}: equal within the tolerance of {QUALITY_TOLERANCE:g}"
    return (
        f"{metric} {each}: they differ by {gap:.3f}, more than the tolerance {QUALITY_TOLERANCE:g}"
    )


def _scaling(strong, w):
    if strong is None:
        return None
    g = strong[strong.workload == w].sort_values("workers")
    if len(g) < 2:
        return None
    lo, hi = g.iloc[0], g.iloc[-1]
    text = f"{lo.workers:g} -> {hi.workers:g} workers: {hi.speedup:.2f}x"
    if hi.get("clear", 1) == 0:  # a ratio read off overlapping runs is no scaling to quote
        return f"{text}, no clear difference (their times overlap)"
    return f"{text} (efficiency {hi.efficiency:.2f})"


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


def _withheld(results, w):
    """The sentence that replaces a verdict resting on busy runs, or None."""
    if results.allow_busy:
        return None
    runs = results.runs[(results.runs.workload == w) & (results.runs.status == "ok")]
    busy = int(runs.busy.sum())
    if not busy:
        return None
    return (
        f"{w}: no verdict: other programs used more than half a core during {busy} of its "
        f"{len(runs)} runs (marked busy in the tables); rerun on a quiet machine, or pass "
        "allow_busy=True (--allow-busy) to judge them anyway"
    )


def _verdict(results, w, rows, cross, strong):
    """One workload's verdict: ``{verdict, outcome, setup, speedup}``."""
    out = {"outcome": "not measured", "setup": None, "speedup": math.nan}
    ok = rows[rows.time_median.notna()]
    base = ok[ok.setup == results.baseline]
    others = ok[ok.setup != results.baseline]
    if base.empty or others.empty:
        if ok.empty:
            return out | {"verdict": _not_measured(w, rows)}
        missing = sorted(set(rows.setup) - set(ok.setup))
        head = f"{w}: only {', '.join(ok.setup)} measured"
        tail = _not_measured(w, rows[rows.setup.isin(missing)])[len(w) + 2 :]
        return out | {"verdict": f"{head} ({tail})"}
    withheld = _withheld(results, w)
    if withheld:
        return out | {"verdict": withheld, "outcome": "withheld"}
    b = base.iloc[0]
    best = others.loc[others.time_median.idxmin()]
    head, outcome = _who_wins(results, w, best, b)
    parts, why = [head], None
    if outcome == "baseline":
        parts.append(why := _why(best, b))
        c = cross[(cross.workload == w) & (cross.setup == best.setup)] if cross is not None else ()
        if len(c) and c.extrapolated_note.iloc[0]:
            parts.append(f"{best.setup} {c.extrapolated_note.iloc[0]}")
    if results.scaling is None:
        parts.append("one size measured: pass sizes= for the crossover")
    parts += [p for p in (_quality(ok), _scaling(strong, w), _other_engines(ok, best, b)) if p]
    failed = rows[rows.status != "ok"]
    if len(failed):
        parts.append(f"not measured on {', '.join(failed.setup)}")
    speedup = b.time_median / best.time_median
    verdict = f"{w}: " + "; ".join(parts)
    c = cross[(cross.workload == w) & (cross.setup == best.setup)] if cross is not None else ()
    if outcome == "pays" and len(c) and c.measured.iloc[0] == c.measured.iloc[0]:
        why = f"from about {c.measured.iloc[0]:,.0f} samples"
    out = {"verdict": verdict, "outcome": outcome, "setup": best.setup, "speedup": speedup}
    return out | {"why": why}


def verdicts(results) -> pd.DataFrame:
    """One sentence per workload, in the table's order.

    Columns: ``workload``, ``verdict``; ``outcome`` at the largest size (``"pays"``: the
    fastest other setup is clearly faster than the baseline, ``"baseline"``: clearly slower,
    ``"tie"``: no clear difference, ``"withheld"``: busy runs, ``"not measured"``); ``setup``
    (that fastest other setup) and ``speedup`` (baseline median / its median); ``why``: where
    the baseline wins, what the other setup's extra time is made of, where distributing pays,
    the measured crossover size (``"from about N samples"``), else None.
    """
    import pandas as pd

    t = results.table
    cross = crossovers(results)
    strong = results.strong_scaling
    out = [
        {"workload": w, **_verdict(results, w, t[t.workload == w], cross, strong)}
        for w in dict.fromkeys(t.workload)
    ]
    columns = ["workload", "verdict", "outcome", "setup", "speedup", "why"]
    return pd.DataFrame(out, columns=columns)
