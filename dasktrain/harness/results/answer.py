"""The first lines of an answer: what the comparison concluded overall, and the machine's state.

Printed before the verdicts (``print(results)``, ``dasktrain demo``) and at the top of the
report, so that a reader who stops after two lines knows both the answer and whether to trust
it:

* **the answer**: per outcome at the largest size measured, which workloads distributing pays
  for (with the setup and its speedup), which the baseline wins, which show no clear
  difference (their runs' ranges overlap), and which have no verdict (busy runs) or were not
  measured; computed from :attr:`Results.verdicts <dasktrain.harness.Results.verdicts>`;
* **the machine**: what other programs used of this machine before the first run and during
  the runs (:mod:`dasktrain.harness.measure.machine`), and what that means for the verdicts.
"""

from __future__ import annotations

import math

from ..measure.machine import BUSY_CPU_PERCENT

__all__ = ["answer_lines", "answer_line", "answer_paragraph", "machine_line", "machine_state"]


def machine_state(results) -> dict:
    """What other programs used of this machine, from the comparison's readings.

    Returns
    -------
    dict
        ``before`` (the look before the first run, see
        :func:`~dasktrain.harness.measure.machine.wait_for_quiet`; None when not recorded),
        ``runs`` (timed runs that succeeded), ``busy_runs`` (those during which other
        programs used more than half a core), ``others_max_cpu_percent`` (the most any run
        saw; 100 = one core), ``busy`` (before or during), ``allow_busy`` and ``measured``.
    """
    import pandas as pd

    before = dict(results.setup.get("machine") or {}) or None
    runs = results.runs[results.runs.status == "ok"]
    others = pd.to_numeric(runs.others_cpu_percent_mean, errors="coerce")
    busy_runs = int(runs.busy.sum())
    return {
        "before": before,
        "runs": int(len(runs)),
        "busy_runs": busy_runs,
        "others_max_cpu_percent": float(others.max()) if others.notna().any() else math.nan,
        "busy": bool(before and before.get("busy")) or busy_runs > 0,
        "allow_busy": results.allow_busy,
        "measured": before is not None or bool(others.notna().any()),
    }


def _cores(cpu_percent):
    return f"{cpu_percent / 100:.2f} cores"


def _quiet_line(m):
    before, most = m["before"], m["others_max_cpu_percent"]
    said = []
    if before:
        said.append(f"{_cores(before['others_cpu_percent'])} before the first run")
    if most == most:
        said.append(f"at most {_cores(most)} during a run")
    extra = []
    if before and before.get("load_average"):
        extra.append(f"load average {before['load_average'][0]:g} at the start")
    if before and before.get("cores"):
        extra.append(f"{before['cores']} cores")
    return (
        f"Machine: quiet: other programs used {' and '.join(said)} (a run is busy above "
        f"{_cores(BUSY_CPU_PERCENT)}" + "".join(f"; {e}" for e in extra) + ")."
    )


def machine_line(results) -> str:
    """One line on the machine's state, and what it means for the verdicts."""
    m = machine_state(results)
    if not m["measured"]:
        return "Machine: not watched (no reading of what other programs used meanwhile)."
    if not m["busy"]:
        return _quiet_line(m)
    said = []
    before = m["before"]
    if before and before.get("busy"):
        names = "; ".join(before.get("busiest") or [])
        said.append(
            f"other programs used {_cores(before['others_cpu_percent'])} before the first run"
            + (f" ({names})" if names else "")
            + f", after waiting {before.get('waited_s', 0):.0f} s for them to stop"
        )
    if m["busy_runs"]:
        said.append(
            f"more than {_cores(BUSY_CPU_PERCENT)} during {m['busy_runs']} of the "
            f"{m['runs']} runs (marked busy in the tables)"
        )
    head = "Machine: BUSY: " + "; ".join(said) + ". Times taken beside other programs are "
    head += "pessimistic and not alike for both engines (a local run with several threads "
    head += "loses most when a core is taken): "
    if m["allow_busy"]:
        return head + (
            "the verdicts include them because busy runs were allowed; rerun on a quiet "
            "machine for ratios to quote."
        )
    return head + (
        "the verdicts resting on busy runs are withheld; rerun on a quiet machine, or pass "
        "allow_busy=True (--allow-busy) to judge them anyway."
    )


def answer_line(results) -> str:
    """One line: the verdicts' outcomes at the largest size measured, grouped."""
    v = results.verdicts
    local = (results.table.engine[results.table.setup == results.baseline] == "local").any()
    wins = "distributing pays for" if local else f"another setup beats {results.baseline} for"
    groups = [
        ("pays", wins),
        ("baseline", f"{results.baseline} is faster for"),
        ("tie", "no clear difference for"),
        ("withheld", "no verdict (busy runs) for"),
        ("not measured", "not measured:"),
    ]
    said = []
    for outcome, text in groups:
        rows = v[v.outcome == outcome]
        if not len(rows):
            continue
        if outcome == "pays":
            names = [f"{r.workload} ({r.setup} {r.speedup:.1f}x)" for r in rows.itertuples()]
        else:
            names = list(rows.workload)
        said.append(f"{text} {', '.join(names)}")
    where = " at the largest size measured" if results.scaling is not None else ""
    return f"Answer{where}: " + "; ".join(said) + "."


def answer_lines(results) -> list:
    """``[answer, machine]``: the two lines that head the printed answer and the report."""
    return [answer_line(results), machine_line(results)]


def answer_paragraph(results) -> str:
    """The report's opening paragraph: where distributing paid (and from which size), where it
    did not and why, what had no clear answer."""
    v = results.verdicts
    said = []
    pays = v[v.outcome == "pays"]
    if len(pays):
        items = [
            f"{r.workload} ({r.setup}, {r.speedup:.1f}x" + (f", {r.why}" if r.why else "") + ")"
            for r in pays.itertuples()
        ]
        said.append("distributing paid for " + ", ".join(items))
    lost = v[v.outcome == "baseline"]
    if len(lost):
        items = [f"{r.workload}" + (f" ({r.why})" if r.why else "") for r in lost.itertuples()]
        said.append(f"it did not for {', '.join(items)}: {results.baseline} was faster")
    for outcome, text in (
        ("tie", "no clear difference for"),
        ("withheld", "no verdict (busy runs) for"),
        ("not measured", "not measured:"),
    ):
        rows = v[v.outcome == outcome]
        if len(rows):
            said.append(f"{text} {', '.join(rows.workload)}")
    where = " at the largest size measured" if results.scaling is not None else ""
    return f"On this machine{where}, " + "; ".join(said) + "."
