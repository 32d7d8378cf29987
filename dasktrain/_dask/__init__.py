"""The Dask plumbing every layer shares, one name per idea.

Note for developers
-------------------
Every step of dasktrain that runs on a cluster asks the same few questions; they are answered
here and nowhere else, so that no module writes its own version:

=====================================  =====================================================
idea                                   name
=====================================  =====================================================
which client?                          :func:`maybe_client`, :func:`get_client`,
                                       :func:`using_client` (:mod:`.client`)
what is there?                         :func:`scheduler_workers`, :func:`live_workers`,
                                       :func:`scheduler_host`, :func:`connect_timeout`
how many threads?                      :func:`total_threads` (all workers: a fair local
                                       baseline), :func:`current_worker_threads` (the one
                                       worker running this task)
who left?                              :class:`WorkerWatch`
compute it if it is a dask collection  :func:`compute_if_dask`, :func:`compute_all`
                                       (:mod:`.rows`)
arrays chunked on rows                 :func:`row_chunked`, :func:`align_rows`,
                                       :func:`row_blocks`, :func:`split_rows`
put numpy on the cluster               :func:`to_cluster` (persisted, n blocks),
                                       :func:`balanced_persist` (every worker holds rows),
                                       :func:`map_scattered` (pieces, resent when a worker
                                       dies; :mod:`.scatter`)
bring rows back                        :func:`gather_rows`
run per row block                      :class:`BlockRunner` (persisted, many passes),
                                       :func:`map_row_blocks` (one pass),
                                       :func:`blockwise_apply` (lazy) (:mod:`.blocks`)
readable task names                    :func:`task_keys` (``kmeans-lloyd-<uuid>-<i>``,
                                       :mod:`.keys`)
passes without the scheduler           :class:`~.direct.DirectGroup` (one long-running task
                                       per worker; ``BlockRunner(direct=name)``) (:mod:`.direct`)
wait, never forever on paused workers  :func:`wait_for`, :func:`gather`, :func:`result`,
                                       :func:`scatter_data` (our own waits), :func:`watching` (a
                                       guard around a call we do not own: xgboost.dask,
                                       dask-ml, a workload), :class:`StallWatch` (a wait
                                       loop of its own) (:mod:`.waits`, :mod:`.paused`)
start again after a failure            :class:`~.restarts.Restarts` (the attempt, what
                                       failed, what each restart resumed from: the DDP
                                       job, the XGBoost fit, scatter's pieces)
the futures a call made                :func:`future_keys`, :func:`cancel_keys`,
                                       :func:`busy_with_cancelled` (still holding a thread)
what a step did outside tasks          :func:`reporting`, :func:`report` (a step says what
                                       it did outside tasks), :func:`tracing` (a measurer
                                       collects it) (:mod:`.activity`)
what a step shows while it runs        :func:`~.events.emit` (a Dask event for the
                                       ``/dasktrain`` dashboard page),
                                       :func:`~.events.recording` (the events kept for
                                       a report) (:mod:`.events`)
=====================================  =====================================================

The rules this package keeps for everyone: every wait on the cluster goes through
:mod:`.waits` (a worker paused for memory must end in an error, never a hang); only the
sample axis is chunked; a model never
enters a graph more than once (dask-ml #842); an array never reaches ``client.map`` /
``client.submit`` as a keyword (distributed turns it into a graph node keyed by the
argument's name); every task key says what the task does.
"""

from .activity import report, reporting, tracing
from .blocks import SCATTER_BYTES, BlockRunner, blockwise_apply, map_row_blocks
from .client import (
    WorkerWatch,
    connect_timeout,
    current_worker_threads,
    get_client,
    live_workers,
    maybe_client,
    scheduler_host,
    scheduler_workers,
    total_threads,
    using_client,
)
from .keys import task_keys
from .paused import StallWatch
from .rows import (
    align_rows,
    balanced_persist,
    block_futures,
    compute_all,
    compute_if_dask,
    gather_rows,
    row_blocks,
    row_chunked,
    row_keys,
    split_rows,
    to_cluster,
)
from .scatter import map_scattered
from .waits import (
    busy_with_cancelled,
    cancel_keys,
    future_keys,
    gather,
    result,
    scatter_data,
    wait_for,
    watching,
)

__all__ = [
    "maybe_client",
    "get_client",
    "using_client",
    "connect_timeout",
    "scheduler_workers",
    "live_workers",
    "total_threads",
    "current_worker_threads",
    "scheduler_host",
    "WorkerWatch",
    "compute_if_dask",
    "compute_all",
    "row_chunked",
    "align_rows",
    "row_blocks",
    "row_keys",
    "block_futures",
    "split_rows",
    "to_cluster",
    "balanced_persist",
    "gather_rows",
    "map_scattered",
    "wait_for",
    "gather",
    "result",
    "scatter_data",
    "watching",
    "StallWatch",
    "future_keys",
    "cancel_keys",
    "busy_with_cancelled",
    "BlockRunner",
    "map_row_blocks",
    "blockwise_apply",
    "task_keys",
    "SCATTER_BYTES",
    "tracing",
    "reporting",
    "report",
]
