"""The comparison harness: workloads x setups x sizes x repeats -> Results and a report.

:func:`compare` (also ``dasktrain.compare``) answers the question the library is for: is this
job worth distributing, from what size, on which setup, and why not when it is not? It runs
each workload on the local engine and on one or more Dask clusters, at one or more data sizes,
with repeats; samples the resources of every run and splits each dask run's time into start-up,
data transfer, scheduler/idle and compute; and returns :class:`Results`, whose verdicts, tables
and offline HTML report are computed from those measurements.

**Note for developers.** One module per job. The harness only *uses* the library
(``dasktrain.images``, ``features``, ``models``, ``ddp``, ``metrics``, ``_dask``), never the
other way round; inside, each module imports only those listed after it:

``runner``
    :func:`compare`: prepares the inputs of each size, warms up, runs the timed repeats
    interleaved (A B A B) and keeps each record as it finishes.
``machine``
    This machine's quiet: looked at before the first run (a busy one is waited for, then
    refused unless ``allow_busy``), watched during every run (busy runs are marked).
``plan``, ``setups``
    Every option of :func:`compare`, checked before anything is measured; the setups (the
    local engine, the clusters connected or started) opened and closed.
``timing``, ``breakdown``
    One timed run: thread limits for the local engine, the time limit, the record; an
    ``OptionalDependencyError`` or ``Unavailable`` becomes an ``unavailable`` row. Each dask
    run in its ``distributed.span`` (``<workload>/<setup>/<size>/run-<i>``, or ``/warm-up``),
    its time split from the task stream and what the step reported it did outside tasks
    (:func:`phase` marks a workload's own data transfer or compute).
``progress``, ``live``, ``quiet``
    The progress bar or callback; the grid of runs and the verdicts told to the
    ``/dasktrain`` dashboard page as they happen; library noise to a log file instead of the
    terminal.
``inputs``
    The data shared by the workloads of one size, prepared outside every timing.
``workloads``
    The built-in workloads, :class:`Workload`, :class:`RunContext` / :func:`current`.
``monitor`` (with ``_sources``, its readers)
    :class:`ResourceMonitor`: psutil process tree, Dask worker monitors, RAPL/NVML energy.
``results``, ``tables``, ``analysis``, ``verdicts``, ``answer``, ``text``
    :class:`RunRecord` and :class:`Results`; the medians, ranges, speedup, efficiency and
    cost at every size; strong scaling and the setups side by side; the verdicts (only what
    was measured); the answer's first lines (overall, and the machine's state); the text a
    terminal shows.
``report`` (with ``figures``, ``curves`` and ``run_curves``), ``output``
    Results -> HTML (bokeh, inline) in reading order; the output folder, written atomically.

The command line (``dasktrain demo``, ``dasktrain compare``) lives in ``dasktrain.cli``.
"""

from __future__ import annotations

from .breakdown import phase
from .monitor import ResourceMonitor
from .output import check_output_dir
from .plan import check_timeout
from .results import Results, RunRecord
from .runner import compare
from .workloads import RunContext, Workload, current

__all__ = [
    "compare",
    "Results",
    "RunRecord",
    "ResourceMonitor",
    "Workload",
    "RunContext",
    "current",
    "check_output_dir",
    "check_timeout",
    "phase",
]
