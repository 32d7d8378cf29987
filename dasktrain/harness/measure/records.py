"""The record of one run, and the ``runs`` table of a comparison built from such records.

A :class:`RunRecord` is what one timed run measured (the runner fills it, a row of
``Results.runs`` holds it); :func:`runs_frame` makes the table :class:`~dasktrain.harness.Results`
derives everything from, every column present (``RUN_COLUMNS``), text cleaned of what UTF-8
cannot hold, each run marked busy or not.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ...exceptions import WorkloadError
from .machine import is_busy

__all__ = ["RunRecord", "RUN_COLUMNS", "runs_frame", "clean_record"]


@dataclasses.dataclass
class RunRecord:
    """What one run of one workload on one setup measured (a row of ``Results.runs``).

    ``status`` is ``"ok"``, ``"error"`` (the workload raised: ``error`` says what),
    ``"unavailable"`` (its part of dasktrain, an optional package or the data it needs is
    missing) or ``"timeout"``. Times are seconds (``time``: the whole step, ``train_time``: the
    training step as the workload reports it); ``start`` and ``end`` are UNIX times. The
    monitor's figures are NaN when the run was not monitored. ``metrics`` holds every metric
    the workload returned, written as ``metric.<name>`` columns.
    """

    workload: str
    engine: str
    #: The setup the run belongs to (``"local"``, ``"dask"``, or a cluster's name).
    setup: str | None = None
    size: float | None = None
    repeat: int = 0
    status: str = "ok"
    error: str | None = None
    time: float = math.nan
    train_time: float = math.nan
    quality_metric: str | None = None
    quality: float = math.nan
    devices: int = 1
    workers: int = 0
    threads: float = math.nan
    cpu_percent_mean: float = math.nan
    cpu_percent_max: float = math.nan
    #: CPU % (100 = one core) that other programs used on this machine during the run.
    others_cpu_percent_mean: float = math.nan
    peak_rss_bytes: float = math.nan
    energy_j: float = math.nan
    energy_measured: bool | None = None
    start: float = math.nan
    end: float = math.nan
    workers_lost: float = math.nan
    note: str | None = None
    #: Which timed run of the comparison this is (the ``run`` column of the samples); NaN for
    #: a failed warm-up that stands for its engine's row.
    run: float = math.nan
    monitor_overhead_pct: float = math.nan
    #: Where the time went (wall seconds adding up to ``time``; see
    #: :mod:`dasktrain.harness.measure.breakdown`), the tasks run and the cluster's idle gaps.
    startup_s: float = math.nan
    transfer_s: float = math.nan
    idle_s: float = math.nan
    compute_s: float = math.nan
    tasks: float = math.nan
    idle_gaps: float = math.nan
    #: Thread-seconds the tasks spent on the CPU and waiting (fine performance metrics).
    compute_cpu_s: float = math.nan
    compute_wait_s: float = math.nan
    #: The ``distributed.span`` a dask run ran in: its name (as the dashboard shows it) and
    #: its id on the scheduler.
    span: str | None = None
    span_id: str | None = None
    metrics: dict = dataclasses.field(default_factory=dict)

    def add_note(self, text: str) -> None:
        """Append ``text`` to ``note`` (notes are joined with ``"; "``)."""
        self.note = text if not self.note else f"{self.note}; {text}"

    def as_row(self) -> dict:
        """The flat dict of a ``runs`` row: the fields, then one ``metric.<name>`` per metric."""
        if self.setup is None:
            self.setup = self.engine
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row.update({f"metric.{k}": v for k, v in row.pop("metrics").items()})
        return clean_record(row)


#: The columns every ``Results.runs`` has (missing ones are added empty).
RUN_COLUMNS = [
    f.name
    for f in dataclasses.fields(RunRecord)
    if f.name not in ("run", "monitor_overhead_pct", "metrics")
]

_TEXT_COLUMNS = ("status", "error", "quality_metric", "note", "setup", "span", "span_id")


def _clean_text(text):
    """``text`` with what UTF-8 cannot hold (a non-UTF-8 file name decoded with surrogate
    escapes) written as backslash escapes: pandas, JSON and HTML writers reject it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clean_record(rec):
    return {k: _clean_text(v) if isinstance(v, str) else v for k, v in rec.items()}


def runs_frame(runs):
    """The ``runs`` DataFrame of :class:`Results`: every ``RUN_COLUMNS`` present, status set."""
    import pandas as pd

    if isinstance(runs, (list, tuple)):
        runs = [
            r.as_row()
            if isinstance(r, RunRecord)
            else clean_record(r)
            if isinstance(r, dict)
            else r
            for r in runs
        ]
    runs = pd.DataFrame(runs)
    if runs.empty:
        raise WorkloadError("Results needs at least one run record.")
    for col in RUN_COLUMNS:
        if col not in runs:
            runs[col] = None if col in _TEXT_COLUMNS else np.nan
    runs["status"] = runs["status"].fillna("ok")
    runs["devices"] = pd.to_numeric(runs["devices"]).fillna(1)
    # Records written before setups existed: each engine was its own setup.
    runs["setup"] = runs["setup"].where(runs["setup"].notna(), runs["engine"]).astype(str)
    runs["busy"] = is_busy(runs["others_cpu_percent_mean"])
    return runs
