"""The comparison harness: workloads x engines x repeats -> Results, resources and a report.

:func:`compare` (also ``dasktrain.compare``) answers the question the library is for: is this
job worth distributing? It runs each workload on the local and the dask engine with repeats,
samples the resources of every run, and returns :class:`Results`, which save a table and an
offline HTML report.

**Note for developers.** One module per job. The harness only *uses* the library
(``dasktrain.images``, ``features``, ``models``, ``ddp``, ``metrics``, ``_dask``), never the
other way round; inside, each module imports only those listed after it:

``runner``
    :func:`compare`: prepares the inputs of each size, warms up, runs the timed repeats
    interleaved (A B A B) and keeps each record as it finishes.
``plan``
    Every option of :func:`compare`, checked before anything is measured.
``timing``
    One timed run: thread limits for the local engine, the time limit, the record; an
    ``OptionalDependencyError`` or ``Unavailable`` becomes an ``unavailable`` row.
``inputs``
    The data shared by the workloads of one size, prepared outside every timing.
``workloads``
    The built-in workloads, :class:`Workload`, :class:`RunContext` / :func:`current`.
``monitor`` (with ``_sources``, its readers)
    :class:`ResourceMonitor`: psutil process tree, Dask worker monitors, RAPL/NVML energy.
``results``, ``tables``
    :class:`RunRecord` and :class:`Results`; the medians, speedup, efficiency and cost.
``report``, ``output``
    Results -> HTML (bokeh, inline); the output folder, written atomically.

The command line (``dasktrain demo``, ``dasktrain compare``) lives in :mod:`dasktrain.cli`.
"""

from __future__ import annotations

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
]
