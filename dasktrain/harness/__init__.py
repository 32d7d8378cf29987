"""The comparison harness: workloads x setups x sizes x repeats -> Results and a report.

:func:`compare` (also ``dasktrain.compare``) answers the question the library is for: is this
job worth distributing, from what size, on which setup, and why not when it is not? It runs
each workload on the local engine and on one or more Dask clusters, at one or more data sizes,
with repeats; samples the resources of every run and splits each dask run's time into start-up,
data transfer, scheduler/idle and compute; and returns :class:`Results`, whose verdicts, tables
and offline HTML report are computed from those measurements.

**Note for developers.** The harness only *uses* the library (``dasktrain.images``,
``features``, ``models``, ``ddp``, ``metrics``, ``_dask``), never the other way round. Inside,
its modules live in rooms that follow its data: a comparison is planned and run, each run is
measured, the measurements become results, the results a report. The rooms stand in layers, and
a room imports only rooms of the layers below its own (``tests/test_architecture.py`` checks
it; a result reaches the rooms below as an argument, never as an import):

1. ``run``
   :func:`compare`: every option checked before anything is measured (``plan``), the setups
   opened and closed, the machine quiet, then the comparison itself (inputs per size,
   warm-up, interleaved repeats), each timed run, the live grid and the progress.
2. ``report``, ``workloads``
   :class:`Results`: the outcome as a terminal prints it and as files (the offline HTML
   page, its figures and curves, the output folder written atomically). The built-in
   workloads (:class:`Workload`), their DDP and Spark twins, and the inputs the workloads of
   one size share, prepared outside every timing.
3. ``results``
   The outcome: the tables (medians, ranges, speedup, efficiency, cost at every size), strong
   scaling and the setups side by side, the verdicts (only what was measured) and the
   answer's first lines. It never imports the report: a report is made from results.
4. ``measure``
   :class:`ResourceMonitor` and its readers, each dask run's time split into start-up,
   transfer, scheduler/idle and compute (:func:`phase`), this machine's quiet (a busy one
   waited for, busy runs marked), and :class:`RunRecord`, what one run measured.
5. ``settings``
   The typed settings, every default written once: ``WorkloadOptions`` (``options=``),
   ``CostSettings`` (baseline, prices, time basis) and the run's context a workload reads
   (:class:`RunContext` / :func:`current`).

Each room's ``__init__`` lists its modules, in layers of their own.

The command line (``dasktrain demo``, ``dasktrain compare``) lives in ``dasktrain.cli``; it
takes the harness's vocabulary from here (``ENGINES``, ``DEFAULT_ENGINES``, ``BUILTIN``,
``DEFAULT_WORKLOADS``, ``image_root``) and the typed records it reads (``ProgressEvent``,
``SetupDescription``, ``Cost``), never from the rooms.
"""

from __future__ import annotations

from .measure.breakdown import phase
from .measure.monitor import ResourceMonitor
from .measure.records import RunRecord
from .report.output import check_output_dir
from .report.shown import Results
from .run.plan import check_timeout
from .run.runner import compare
from .settings import RunContext, current
from .workloads.builtin import Workload

# The command line's vocabulary, for the package, not the user (``X as X``, outside __all__).
from .run.plan import DEFAULT_ENGINES as DEFAULT_ENGINES  # isort: skip
from .run.plan import ENGINES as ENGINES  # isort: skip
from .workloads.builtin import BUILTIN as BUILTIN  # isort: skip
from .workloads.builtin import DEFAULT_WORKLOADS as DEFAULT_WORKLOADS  # isort: skip
from .workloads.inputs import image_root as image_root  # isort: skip
from .results.analysis import Cost as Cost  # isort: skip
from .run.progress import ProgressEvent as ProgressEvent  # isort: skip
from .run.progress import SetupDescription as SetupDescription  # isort: skip

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
