"""Results: the run records of a comparison, the summary table, scaling, crossover and cost.

A :class:`RunRecord` is what one timed run measured; :class:`Results` holds the records of a
whole comparison and derives everything else from them (medians, speedup, parallel efficiency,
energy-delay product, cost per run). Nothing here measures or draws: the runner fills the
records, :mod:`dasktrain.harness.report` draws them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..exceptions import WorkloadError
from .output import check_output_dir, read_runs, write_atomic, write_text
from .records import RUN_COLUMNS, RunRecord, runs_frame
from .settings import CostSettings
from .tables import (
    BREAKDOWN_MEDIANS,
    crossover_table,
    scaling_table,
    sizes_table,
    summary_table,
)

if TYPE_CHECKING:  # pandas is imported when a table is first built
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["Results", "RunRecord", "RUN_COLUMNS"]


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
def _setting(name, doc):
    """A read-only attribute of :class:`Results` that reads its :class:`CostSettings`."""
    return property(lambda self: getattr(self.settings, name), doc=doc)


class Results:
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
        :mod:`dasktrain.harness.verdicts`). None: as the comparison was run (``setup``), else
        False.
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

    def __init__(
        self,
        runs,
        *,
        baseline="local",
        prices=None,
        machines=None,
        spot_discount=0.0,
        time_basis="time",
        samples=None,
        setup=None,
        performance_report=None,
        allow_busy=None,
        events=None,
        settings=None,
    ) -> None:
        import pandas as pd

        self.runs = runs_frame(runs)
        own = dict(baseline=baseline, prices=prices, machines=machines)
        own.update(spot_discount=spot_discount, time_basis=time_basis)
        if settings is None:
            settings = CostSettings(**own)
        elif own != {k: getattr(CostSettings(), k) for k in own}:
            raise WorkloadError(
                "pass settings= or baseline=, prices=, machines=, spot_discount= and "
                "time_basis=, not both."
            )
        #: The checked :class:`~dasktrain.harness.settings.CostSettings` every table reads.
        self.settings = settings.for_setups(self.runs["setup"].unique())
        self.samples = samples if samples is not None else pd.DataFrame()
        self.setup = dict(setup or {})
        self.performance_report = performance_report
        self.events = list(events or [])  # what the dashboard page showed, per run
        if allow_busy is None:
            allow_busy = (self.setup.get("machine") or {}).get("allow_busy", False)
        self.allow_busy = bool(allow_busy)
        self._table: pd.DataFrame | None = None
        #: Derived tables, built once on first use (each reads runs and the settings only).
        self._cache: dict = {}

    # -- the settings, as read by the tables and the report --------------------------------
    baseline = _setting("baseline", "The setup the speedups are measured against.")
    prices = _setting("prices", "The price table (USD per hour per machine), or None.")
    machines = _setting("machines", "Setup -> machine in ``prices`` (or ``(name, count)``).")
    spot_discount = _setting("spot_discount", "The fraction taken off every price.")
    time_basis = _setting("time_basis", "What speedup and cost use: 'time' or 'train_time'.")

    # -- tables ----------------------------------------------------------------------------
    @property
    def table(self) -> pd.DataFrame:
        """One row per workload x setup at the largest size (see the class docstring).

        It prints whole (every row and column, wrapped to the terminal's width).
        """
        if self._table is None:
            from .text import ResultsTable

            self._table = ResultsTable(summary_table(self.runs, self.settings))
        return self._table

    @property
    def by_size(self) -> pd.DataFrame:
        """The columns of :attr:`table` at every size: one row per workload x setup x size."""
        return self._once("by_size", lambda: sizes_table(self.runs, self.settings))

    def _once(self, name, build):
        """``build()`` as a printable table, computed on first use (a copy each time, so a
        caller's changes never reach the cache)."""
        if name not in self._cache:
            self._cache[name] = _printable(build())
        df = self._cache[name]
        return df.copy() if df is not None else None

    @property
    def scaling(self) -> pd.DataFrame | None:
        """Median time per workload x setup x size, or None with a single size."""
        return self._once("scaling", lambda: scaling_table(self.runs, self.settings))

    @property
    def crossover(self) -> pd.DataFrame | None:
        """Where each non-baseline setup starts to win, per workload (None with one size).

        The crossover is the smallest size from which the setup is faster at that size and at
        every larger size that ran; when it is slower at the largest size it "does not win in
        range". :attr:`crossovers` adds the extrapolated one.
        """
        return self._once("crossover", lambda: crossover_table(self.scaling, self.baseline))

    @property
    def crossovers(self) -> pd.DataFrame | None:
        """The measured crossover, the extrapolated one and the fitted lines ``t = fixed +
        per_sample x n`` per workload and setup (see
        :func:`~dasktrain.harness.verdicts.crossovers`)."""
        from .verdicts import crossovers

        return self._once("crossovers", lambda: crossovers(self))

    @property
    def verdicts(self) -> pd.DataFrame:
        """One sentence per workload: who is faster, where, why, and from which size
        distributing pays (see :mod:`dasktrain.harness.verdicts`)."""
        from .verdicts import verdicts

        return self._once("verdicts", lambda: verdicts(self))

    @property
    def breakdown(self) -> pd.DataFrame:
        """Where the time went, per workload x setup at the largest size (medians, seconds):
        ``startup_s``, ``transfer_s``, ``idle_s``, ``compute_s``, with ``tasks`` and
        ``idle_gaps``; thread-seconds ``compute_cpu_s`` / ``compute_wait_s`` from distributed's
        fine performance metrics (see :mod:`dasktrain.harness.breakdown`)."""
        cols = ["workload", "setup", "engine", "time_median", *BREAKDOWN_MEDIANS]
        return self.table[cols]

    @property
    def strong_scaling(self) -> pd.DataFrame | None:
        """Speedup and parallel efficiency against the number of workers, per workload, when
        clusters of several sizes ran (see :func:`~dasktrain.harness.analysis.strong_scaling`)."""
        from .analysis import strong_scaling

        return self._once("strong_scaling", lambda: strong_scaling(self.table))

    @property
    def by_setup(self) -> pd.DataFrame:
        """Median seconds per workload (rows) and setup (columns), the baseline first."""
        from .analysis import setups_table

        return _printable(setups_table(self.table, self.baseline))

    @property
    def machine(self) -> dict:
        """This machine's quiet before the first run and during the runs (see
        :func:`~dasktrain.harness.answer.machine_state`)."""
        from .answer import machine_state

        return machine_state(self)

    @property
    def cost(self) -> dict:
        """What the whole comparison cost (see :func:`~dasktrain.harness.analysis.cost_summary`)."""
        from .analysis import cost_summary

        return cost_summary(self)

    # -- output ----------------------------------------------------------------------------
    def to_string(self, columns=None, *, verdicts=True) -> str:
        """The verdicts, then the table at the largest size in the width of a terminal, then
        one line per error and lost worker. ``columns`` prints those columns of
        :attr:`table` instead of the short table."""
        from .text import results_text

        if columns is None:
            return results_text(self, verdicts=verdicts)
        t = self.table.copy()
        t["peak_rss_mb"] = t["peak_rss_bytes"] / 2**20
        columns = [c for c in columns if c in t]
        return t[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-")

    def __repr__(self) -> str:
        return f"<Results {len(self.table)} rows, baseline={self.baseline!r}>\n{self.to_string()}"

    def to_dict(self) -> dict:
        """JSON-ready dict: setup, the answer's first lines, verdicts, table (every size, as
        :attr:`by_size`), runs, scaling, crossover, strong scaling, machine and cost."""
        from .answer import answer_lines

        def records(df):
            if df is None:
                return None
            return json.loads(df.to_json(orient="records", default_handler=str))

        return {
            "dasktrain_version": __version__,
            "baseline": self.baseline,
            "time_basis": self.time_basis,
            "prices": self.prices,
            "machines": {
                k: list(v) if isinstance(v, tuple) else v for k, v in (self.machines or {}).items()
            },
            "spot_discount": self.spot_discount,
            "setup": self.setup,
            "answer": answer_lines(self),
            "verdicts": list(self.verdicts.verdict),
            "table": records(self.by_size),
            "runs": records(self.runs),
            "scaling": records(self.scaling),
            "crossover": records(self.crossover),
            "crossovers": records(self.crossovers),
            "strong_scaling": records(self.strong_scaling),
            "machine": self.machine,
            "cost": self.cost,
        }

    def save(self, directory) -> Path:
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
        from .report import write_report

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
    def from_runs(cls, path, *, comparison=None, **kwargs) -> Results:
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


def _printable(df):
    """``df`` as a :class:`~.text.ResultsTable` (prints whole); None stays None."""
    if df is None:
        return None
    from .text import ResultsTable

    return ResultsTable(df)
