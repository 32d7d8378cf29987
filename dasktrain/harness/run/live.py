"""What a comparison tells the ``/dasktrain`` dashboard page while it runs.

The grid of runs when it starts, each run as it starts and ends, each workload's verdict as
soon as it is measured (from the runs so far), and the end: ``compare``, ``cell`` and
``verdict`` events (``dasktrain._dask.events``) to the scheduler of every cluster in the
comparison. Telling never stops a comparison.
"""

from __future__ import annotations

import logging

from ..._dask.events import emit

__all__ = ["LiveGrid", "kept_events"]

logger = logging.getLogger(__name__)


def _size(size):
    """A size as the events carry it (msgpack: a number or None)."""
    return None if size is None else float(size)


class LiveGrid:
    """The comparison ``comparison`` on the dask setups among ``setups``."""

    def __init__(self, comparison, setups):
        self.id = comparison
        self.clients = [s.client for s in setups if s.engine == "dask" and s.client is not None]

    def tell(self, kind, **fields):
        emit(kind, self.clients, comparison=self.id, **fields)

    def start(self, specs, setups, plan):
        """Every run the comparison will make, ``[workload, setup, size, repeat]``."""
        cells = []
        for i, size in enumerate(plan.size_list):
            reps = ([0] if plan.warmup and i == 0 else []) + list(range(1, plan.repeat + 1))
            for spec in specs:
                cells += [[spec.name, s.name, _size(size), r] for r in reps for s in setups]
        self.tell("compare", state="start", cells=cells)

    def cell(self, spec, setup, size, label, **fields):
        """One run starts (``state="running"``) or ends (``"done"``, its seconds, status)."""
        repeat = 0 if label == "warm-up" else int(label.rsplit("-", 1)[-1])
        self.tell(
            "cell", workload=spec.name, setup=setup.name, size=_size(size), repeat=repeat, **fields
        )

    def verdict(self, spec, records, setup, cost):
        """The workload's verdict from its runs so far."""
        from ..results.outcome import Outcome

        try:
            rows = [r for r in records if r.get("workload") == spec.name]
            v = Outcome(rows, setup=setup, settings=cost).verdicts
        except Exception:  # a verdict for the page must never stop the comparison
            logger.debug("no live verdict for %s", spec.name, exc_info=True)
            return
        for r in v.itertuples():
            self.tell("verdict", workload=r.workload, outcome=r.outcome, verdict=r.verdict)

    def end(self):
        self.tell("compare", state="end")


#: The events a run keeps for the report (its curves): fit passes, DDP states and metrics.
KEPT = ("fit", "ddp", "ddp-metrics")


def kept_events(seen, run, workload, setup):
    """The events of one timed run that the report draws again, labelled with the run."""
    return [
        {**e, "run": run, "workload": workload, "setup": setup} for e in seen if e["kind"] in KEPT
    ]
