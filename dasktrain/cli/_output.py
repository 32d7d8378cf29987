"""What ``dasktrain compare`` and ``dasktrain demo`` print: one line (or a bar) per run while
the comparison runs, then the verdicts, the table, the cost and where the files are."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the records the CLI reads; the harness itself is imported when it runs
    from ..harness import Cost, ProgressEvent, Results, SetupDescription

__all__ = ["Printer", "finish", "LOG_NAME"]

#: The name of the log file written beside the report (library warnings and messages).
LOG_NAME = "dasktrain.log"


class Printer:
    """The ``progress`` callback of :func:`dasktrain.compare` for the command line.

    On a terminal a progress bar; elsewhere (a pipe, a log, the tests) one line per run.
    """

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.t0 = time.perf_counter()
        self.bar = None

    def __call__(self, ev: ProgressEvent) -> None:
        if self.bar is not None:
            size = ev["size"]
            where = f" {size:g}" if size == size else ""
            self.bar.set_description(f"{ev['workload']} {ev['setup']}{where}")
            self.bar.update(1)
            return
        print(self._line(ev), file=self.out, flush=True)

    def start(self, setups: dict[str, SetupDescription], total: int) -> None:
        """Before the first run: the setups and their dashboards, then the bar."""
        for name, s in setups.items():
            if s["engine"] == "dask":
                gpus = f", {s['gpus']} GPU" if s.get("gpus") else ""
                live = f" (live: {s['live_page']})" if s.get("live_page") else ""
                print(
                    f"setup {name}: {s['workers']} workers, {s['threads']} threads{gpus}; "
                    f"dashboard {s['dashboard']}{live}",
                    file=self.out,
                    flush=True,
                )
            else:
                print(f"setup {name}: this process, {s['threads']} cores", file=self.out)
        if getattr(self.out, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run", file=self.out, leave=False)

    def _line(self, ev: ProgressEvent) -> str:
        rec = ev["record"]
        what = "warm-up" if ev["event"] == "warmup" else f"run {ev['repeat']}"
        t = rec.get("time", math.nan)
        secs = "" if t is None or (isinstance(t, float) and math.isnan(t)) else f"{t:8.3f} s"
        status = rec["status"]
        if status != "ok":
            status += f": {str(rec.get('error'))[:100]}"
        size = f"{ev['size']:>6g}" if not math.isnan(ev["size"]) else " " * 6
        return (
            f"[{ev['index']:>3}/{ev['total']}] {time.perf_counter() - self.t0:6.1f}s  "
            f"{ev['workload']:<12} {ev['setup']:<8} {size} {what:<8} {secs:>10}  {status}"
        )

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _epochs_lines(results):
    runs = results.runs
    col = "metric.accuracy_per_epoch"
    if col not in runs:
        return []
    r = runs[runs[col].notna() & (runs.status == "ok")]
    if "size" in r and r["size"].notna().any():
        r = r[r["size"] == r["size"].max()]
    return [
        f"{w} [{s}] accuracy per epoch: {g[col].iloc[-1]}"
        for (w, s), g in r.groupby(["workload", "setup"], sort=False)
    ]


def finish(results: Results, out: str | Path, log_lines: int, stream: TextIO | None = None) -> int:
    """Print the verdicts, the table and where the files are; the exit code (1: an error)."""
    stream = stream or sys.stdout
    print("", file=stream)
    print(results.to_string(), file=stream)
    for line in _epochs_lines(results):
        print(line, file=stream)
    c: Cost = results.cost
    print(
        f"cost: {c['runs']} timed runs, {c['run_s']:.0f} s, {c['core_seconds']['total']:.0f} "
        "core-seconds" + (f", {c['usd']['total']:.4f} USD" if c["usd"] else ""),
        file=stream,
    )
    d = results.save(out)
    print(f"\nreport: {d / 'report.html'}", file=stream)
    print(
        f"tables: {d / 'results.csv'}, {d / 'results.json'}, {d / 'samples.csv'}, "
        f"{d / 'runs.jsonl'} (one line per run, written as it finished)",
        file=stream,
    )
    if results.performance_report:
        print(f"dask performance report: {d / 'dask-performance-report.html'}", file=stream)
    print(f"library warnings and messages: {d / LOG_NAME} ({log_lines} lines)", file=stream)
    return 1 if (results.table.status == "error").any() else 0
