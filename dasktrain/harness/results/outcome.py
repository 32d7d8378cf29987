"""The outcome of a comparison: its run records, the summary table, scaling, crossover and cost.

A :class:`~dasktrain.harness.RunRecord` is what one timed run measured; an :class:`Outcome`
holds the records of a whole comparison and derives everything else from them (medians,
speedup, parallel efficiency, energy-delay product, cost per run, the verdicts and the answer).
Nothing here measures, prints or draws: the runner fills the records, and
:class:`~dasktrain.harness.Results` (the report room's, an :class:`Outcome` that prints and
saves itself) shows them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ... import __version__
from ...exceptions import WorkloadError
from ..measure.records import runs_frame
from ..settings import CostSettings
from .tables import (
    BREAKDOWN_MEDIANS,
    crossover_table,
    scaling_table,
    sizes_table,
    summary_table,
)

if TYPE_CHECKING:  # pandas is imported when a table is first built
    import pandas as pd

    from .analysis import Cost

__all__ = ["Outcome"]


def _printable(df):
    """``df`` as a table that prints whole (:mod:`.printable`, imported here on first use:
    it subclasses pandas' DataFrame, and naming the harness imports no pandas)."""
    from .printable import printable

    return printable(df)


def _setting(name, doc):
    """A read-only attribute of :class:`Outcome` that reads its :class:`CostSettings`."""
    return property(lambda self: getattr(self.settings, name), doc=doc)


class Outcome:
    """What a comparison measured and everything derived from it: the base of
    :class:`~dasktrain.harness.Results`, which adds how it is printed, saved and read back.

    Nothing here measures, prints a report or writes a file: the runner fills the records, the
    report room (``dasktrain.harness.report``) shows them. The parameters and attributes are
    those of :class:`~dasktrain.harness.Results`.
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
        """One row per workload x setup at the largest size (its columns: see
        :class:`~dasktrain.harness.Results`).

        It prints whole (every row and column, wrapped to the terminal's width).
        """
        if self._table is None:
            self._table = _printable(summary_table(self.runs, self.settings))
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
        :func:`~dasktrain.harness.results.verdicts.crossovers`)."""
        from .verdicts import crossovers

        return self._once("crossovers", lambda: crossovers(self))

    @property
    def verdicts(self) -> pd.DataFrame:
        """One sentence per workload: who is faster, where, why, and from which size
        distributing pays (see :mod:`dasktrain.harness.results.verdicts`)."""
        from .verdicts import verdicts

        return self._once("verdicts", lambda: verdicts(self))

    @property
    def breakdown(self) -> pd.DataFrame:
        """Where the time went, per workload x setup at the largest size (medians, seconds):
        ``startup_s``, ``transfer_s``, ``idle_s``, ``compute_s``, with ``tasks`` and
        ``idle_gaps``; thread-seconds ``compute_cpu_s`` / ``compute_wait_s`` from distributed's
        fine performance metrics (see :mod:`dasktrain.harness.measure.breakdown`)."""
        cols = ["workload", "setup", "engine", "time_median", *BREAKDOWN_MEDIANS]
        return self.table[cols]

    @property
    def strong_scaling(self) -> pd.DataFrame | None:
        """Speedup and parallel efficiency against the number of workers, per workload, when
        clusters of several sizes ran (see
        :func:`~dasktrain.harness.results.analysis.strong_scaling`)."""
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
        :func:`~dasktrain.harness.results.answer.machine_state`)."""
        from .answer import machine_state

        return machine_state(self)

    @property
    def cost(self) -> Cost:
        """What the whole comparison cost (see
        :func:`~dasktrain.harness.results.analysis.cost_summary`)."""
        from .analysis import cost_summary

        return cost_summary(self)

    # -- the numbers as JSON ------------------------------------------------------------
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
