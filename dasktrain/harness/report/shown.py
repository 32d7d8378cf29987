"""Results: a comparison's outcome as it is printed, saved and read back.

:class:`Results` is the :class:`~dasktrain.harness.results.outcome.Outcome` of a comparison
(its runs and every table, verdict and answer derived from them) with what shows it: the text
a terminal prints (:mod:`.text`), the files of :meth:`Results.save` with the HTML page
(:mod:`.page`), written safely (:mod:`.output`), and :meth:`Results.from_runs`, which reads
back what an interrupted comparison kept. The outcome imports none of this: a report is made
from results, never the other way round.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..results.outcome import Outcome
from .output import check_output_dir, read_runs, write_atomic, write_text
from .page import write_report
from .text import results_text

logger = logging.getLogger(__name__)

__all__ = ["Results"]


class Results(Outcome):
    """The outcome of :func:`~dasktrain.compare`: run records, the summary table, scaling and
    report.

    Parameters
    ----------
    runs : list of dict or RunRecord, or pandas.DataFrame
        One record per timed run with at least ``workload``, ``engine``, ``status`` and
        ``time`` (seconds of the whole step); optional ``setup`` (the engine's name when
        missing), ``train_time``, ``quality``, ``quality_metric``, ``devices``, ``energy_j``,
        ``size``, ``error`` and the time breakdown (see ``RUN_COLUMNS``). Records with
        ``status`` other than ``"ok"`` are reported, not timed.
    baseline : str
        Setup the speedups are measured against.
    prices : dict, optional
        USD per hour per machine: ``{"m5.xlarge": 0.192}`` or
        ``{"m5.xlarge": {"usd_per_hour": 0.192, "spot_discount": 0.7}}``.
    machines : dict, optional
        Setup -> machine name in ``prices``, or ``(name, count)`` for several machines. By
        default each setup is looked up under its own name.
    spot_discount : float
        Fraction taken off every price (0.7 = 70% off), unless a machine sets its own.
    time_basis : {"time", "train_time"}
        Which time the speedup, efficiency, EDP and cost use: the whole step (default) or
        the training step alone.
    samples : pandas.DataFrame, optional
        Monitor samples of all runs (with a ``run`` column).
    setup : dict, optional
        Engine, workers, threads, devices, versions.
    performance_report : str, optional
        HTML of Dask's performance report over the dask runs.
    allow_busy : bool, optional
        Give verdicts on workloads with *busy* runs (other programs used more than half a core
        of this machine meanwhile); by default they get "no verdict" (see
        :mod:`dasktrain.harness.results.verdicts`). None: as the comparison was run
        (``setup``), else False.
    events : list of dict, optional
        The live events of the timed runs (``dasktrain._dask.events``, each with its
        ``run``): what the dashboard page showed, drawn again in the report.
    settings : CostSettings, optional
        ``baseline``, ``prices``, ``machines``, ``spot_discount`` and ``time_basis`` as one
        checked record (what :func:`~dasktrain.compare` passes); then leave those five
        arguments unset.

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per timed run; ``busy`` is True for a run during which other programs used more
        than half a core (``others_cpu_percent_mean`` > 50).
    table : pandas.DataFrame
        One row per workload x setup (at the largest size): ``repeats``, ``time_median``,
        ``time_min``, ``time_max``, ``train_time_*``, ``speedup`` (t_baseline / t),
        ``improvement_pct`` ((t_baseline / t - 1) x 100), ``devices``, ``efficiency`` (speedup
        divided by the device ratio against the baseline), ``quality`` (median, with
        ``quality_min`` / ``quality_max``), ``busy_runs``, ``energy_j``, ``edp`` (energy x
        time, J s, NaN where energy is not measured), ``cost_usd`` (per run), ``core_seconds``
        (cores held x seconds), the time breakdown of the median run and ``status``/``error``.
    by_size : pandas.DataFrame
        The columns of ``table`` at every size: one row per workload x setup x size (what
        ``results.csv`` holds).
    scaling : pandas.DataFrame or None
        Median times per workload x setup x size when several sizes ran.
    crossover : pandas.DataFrame or None
        Per workload and non-baseline setup: the size from which that setup wins, or a note
        that it does not in the range.
    verdicts, crossovers, breakdown, strong_scaling, by_setup, cost, machine
        The answers built on these (see each property).
    settings : CostSettings
        The checked settings the tables read (``baseline``, ``prices``... are views of it).
    """

    # -- text ------------------------------------------------------------------------------
    def to_string(self, columns: Sequence[str] | None = None, *, verdicts: bool = True) -> str:
        """The verdicts, then the table at the largest size in the width of a terminal, then
        one line per error and lost worker. ``columns`` prints those columns of
        :attr:`table` instead of the short table."""
        if columns is None:
            return results_text(self, verdicts=verdicts)
        t = self.table.copy()
        t["peak_rss_mb"] = t["peak_rss_bytes"] / 2**20
        columns = [c for c in columns if c in t]
        text: str = t[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-")
        return text

    def __repr__(self) -> str:
        return f"<Results {len(self.table)} rows, baseline={self.baseline!r}>\n{self.to_string()}"

    # -- files -----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``report.html``, ``results.csv``, ``results.json``, ``runs.csv``,
        ``samples.csv`` and, when the dask engine ran, ``dask-performance-report.html`` and
        ``events.jsonl`` (the live events of the runs: DDP metrics per rank, fit passes).

        Each file is written beside its name and renamed over it, so a file is never half
        written and a symbolic link is never written through (a folder holding a link under
        one of these names is refused, see :func:`~dasktrain.harness.check_output_dir`).
        ``runs.jsonl``, written run by run by :func:`~dasktrain.compare`, is left as it is.

        Returns
        -------
        pathlib.Path
            The directory.

        Raises
        ------
        ValidationError
            See :func:`~dasktrain.harness.check_output_dir`.
        """
        d = check_output_dir(directory, name="directory")
        write_text(d / "results.csv", self.by_size.to_csv(index=False))
        write_text(d / "runs.csv", self.runs.to_csv(index=False))
        write_text(d / "samples.csv", self.samples.to_csv(index=False))
        write_text(d / "results.json", json.dumps(self.to_dict(), indent=2, default=str))
        if self.performance_report:
            write_text(d / "dask-performance-report.html", self.performance_report)
        if self.events:
            lines = (json.dumps(e, default=str) + "\n" for e in self.events)
            write_text(d / "events.jsonl", "".join(lines))
        write_atomic(d / "report.html", lambda tmp: write_report(self, tmp))
        logger.info("report written to %s", d / "report.html")
        return d

    @classmethod
    def from_runs(
        cls, path: str | os.PathLike[str], *, comparison: str | None = None, **kwargs: Any
    ) -> Results:
        """Results from the ``runs.jsonl`` that :func:`~dasktrain.compare` appends to run by
        run.

        What an interrupted comparison measured is kept there.

        Parameters
        ----------
        path : str or Path
            ``runs.jsonl``, or the output folder holding it.
        comparison : str, optional
            Which comparison (``Results.setup["comparison"]``); the last one in the file by
            default.
        **kwargs
            As for :class:`Results` (baseline, prices, time_basis...).

        Returns
        -------
        Results

        Raises
        ------
        ValidationError
            No such file, or no rows of that comparison.
        """
        runs, setup = read_runs(path, comparison)
        kwargs.setdefault("setup", setup)
        return cls(runs, **kwargs)
