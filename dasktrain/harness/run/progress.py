"""The progress of a comparison: a tqdm bar, and/or the caller's callback after every run."""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

__all__ = ["Progress", "ProgressEvent", "SetupDescription"]


class ProgressEvent(TypedDict):
    """What a ``progress`` callback of :func:`~dasktrain.compare` gets after every run."""

    event: Literal["warmup", "run"]
    workload: str
    engine: str
    setup: str  # the setup's name (the engine's for the default setups)
    size: float  # NaN when the comparison has no sizes
    repeat: int
    index: int  # runs finished, this one included
    total: int  # runs the comparison will make, warm-ups included
    record: dict[str, Any]  # RunRecord.as_row(): the run's row of Results.runs


class _SetupEvery(TypedDict):
    engine: str
    workers: int
    threads: int
    gpus: int
    devices: Any  # the GPUs' names, or None
    scheduler: str | None  # address (Dask), master (Spark); None for the local engine
    dashboard: str | None
    worker_addresses: list[str]
    started_here: bool  # the comparison started it (and closes it)


# total=False on a subclass, not NotRequired: with postponed annotations Python 3.11 counts a
# NotRequired key as required.
class SetupDescription(_SetupEvery, total=False):
    """One setup as a ``progress`` callback's ``start`` and ``Results.setup["setups"]`` see it
    (JSON-ready: ``Setup.describe()``)."""

    live_page: str | None  # Dask: the /dasktrain page
    spark_version: str | None  # Spark only
    unavailable: str | None  # Spark only: why it cannot run, or None


class Progress:
    """What :func:`~dasktrain.compare` shows while it runs.

    Parameters
    ----------
    progress : bool or callable or None
        True: a tqdm progress bar on stderr (shown on a terminal only). A callable: called with
        a :class:`ProgressEvent` (a dict) after every run (``event``: ``"warmup"`` or
        ``"run"``; ``workload``, ``engine``, ``setup``, ``size``, ``repeat``, ``index``,
        ``total``, ``record``). When it also has a ``start(setups, total)`` method, that is
        called once before the first run with ``{name: SetupDescription}`` (the CLI prints
        the dashboards so). False or None: nothing.
    total : int
        Runs the comparison will make (warm-ups included).
    file : file, optional
        Where the bar goes (stderr by default).
    """

    def __init__(self, progress, total, file=None) -> None:
        self.callback = progress if callable(progress) else None
        self.total = total
        self.index = 0
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            # disable=None: the bar shows on a terminal and stays out of logs and pipes.
            self.bar = tqdm(
                total=total, desc="compare", unit="run", disable=None, leave=False, file=file
            )

    def start(self, setups) -> None:
        """Say which setups run (their dashboards), before the first run."""
        # A method of its own, not an event: callbacks written for the per-run events (every
        # one with a "record") keep working.
        start = getattr(self.callback, "start", None)
        if callable(start):
            start({s.name: s.describe() for s in setups}, self.total)

    def emit(self, event, rec, repeat, size) -> None:
        """One run finished (``event`` ``"warmup"`` or ``"run"``)."""
        self.index += 1
        setup = rec.setup or rec.engine
        if self.bar is not None:
            self.bar.set_description(f"{rec.workload} {setup}" + (f" {size:g}" if size else ""))
            self.bar.update(1)
        if self.callback is not None:
            self.callback(
                ProgressEvent(
                    event=event,
                    workload=rec.workload,
                    engine=rec.engine,
                    setup=setup,
                    size=size if size is not None else math.nan,
                    repeat=repeat,
                    index=self.index,
                    total=self.total,
                    record=rec.as_row(),
                )
            )

    def skip(self, n=1) -> None:
        """Runs that will not happen (their setup cannot run the workload)."""
        self.total -= n
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
