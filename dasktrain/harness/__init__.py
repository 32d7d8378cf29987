"""The comparison harness: workloads x setups x sizes x repeats -> Results and a report.

:func:`compare` (also ``dasktrain.compare``) answers the question the library is for: is this
job worth distributing, from what size, on which setup, and why not when it is not? It runs
each workload on the local engine and on one or more Dask clusters, at one or more data sizes,
with repeats; samples the resources of every run and splits each dask run's time into start-up,
data transfer, scheduler/idle and compute; and returns :class:`Results`, whose verdicts, tables
and offline HTML report are computed from those measurements.

**Note for developers.** One module per job. The harness only *uses* the library
(``dasktrain.images``, ``features``, ``models``, ``ddp``, ``metrics``, ``_dask``), never the
other way round. Inside, the modules stand in layers, and each imports only modules of the
layers below its own (``tests/test_architecture.py`` checks it; a result reaches the modules
below as an argument, never as an import):

1. ``runner``
   :func:`compare`: every option checked, the setups opened, the machine quiet.
2. ``comparison``
   One comparison while it runs: prepares the inputs of each size, warms up, runs the timed
   repeats interleaved (A B A B) and keeps each record as it finishes.
3. ``live``, ``timing``
   One timed run: thread limits for the local engine, the time limit, the record; an
   ``OptionalDependencyError`` or ``Unavailable`` becomes an ``unavailable`` row. The grid
   of runs and the verdicts told to the ``/dasktrain`` dashboard page as they happen, and
   the events each run keeps for the report.
4. ``plan``, ``results``
   Every option of :func:`compare`, checked before anything is measured; :class:`RunRecord`
   and :class:`Results`, which build their tables, verdicts and report on first use.
5. ``report``, ``setups``, ``spark_workloads``, ``text``
   Results -> HTML (bokeh, inline) in reading order; the setups (the local engine, the
   clusters connected or started) opened and closed; the Spark twins of the workloads; the
   text a terminal shows.
6. ``analysis``, ``answer``, ``curves``, ``machine``, ``monitor``, ``records``,
   ``run_curves``, ``spark_setup``, ``verdicts``, ``workloads``
   Strong scaling, the setups side by side and the whole cost; the answer's first lines and
   paragraph; the report's curves, and the DDP ranks' and fits' curves from inside the runs;
   this machine's quiet (a busy one waited for, then refused unless ``allow_busy``; busy runs
   marked); :class:`ResourceMonitor`; :class:`RunRecord` (what one run measured) and the
   ``runs`` table made of them; the Spark session of a comparison; the verdicts (only what
   was measured); the built-in workloads and :class:`Workload`.
7. ``_sources``, ``ddp_workloads``, ``figures``, ``inputs``, ``output``, ``progress``,
   ``quiet``, ``tables``
   The monitor's readers (psutil process tree, Dask worker monitors, RAPL/NVML energy); the
   workloads trained by a launcher (``ddp_cnn``, ``keras_cnn``, ``tf_cnn``); the report's
   figures; the data shared by the workloads of one size, prepared outside every timing; the
   output folder, written atomically; the progress bar or callback; library noise to a log
   file; the medians, ranges, speedup, efficiency and cost at every size.
8. ``breakdown``, ``settings``
   Each dask run in its ``distributed.span`` and its time split from the task stream
   (:func:`phase` marks a workload's own data transfer or compute); the typed settings,
   every default written once: ``WorkloadOptions`` (``options=``) and ``CostSettings``
   (baseline, prices, time basis), and the run's context a workload reads
   (:class:`RunContext` / :func:`current`).

The command line (``dasktrain demo``, ``dasktrain compare``) lives in ``dasktrain.cli``.
"""

from __future__ import annotations

from .breakdown import phase
from .monitor import ResourceMonitor
from .output import check_output_dir
from .plan import check_timeout
from .records import RunRecord
from .results import Results
from .runner import compare
from .settings import RunContext, current
from .workloads import Workload

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
