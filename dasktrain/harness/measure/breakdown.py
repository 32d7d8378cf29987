"""Where the time of a dask run went: start-up, data transfer, scheduler/idle and compute.

Every dask run of :func:`~dasktrain.compare` runs inside a ``distributed.span`` named after it
(``"kmeans/dask-2w/600"``: the dashboard and Dask's performance report group its tasks) and
inside ``distributed.get_task_stream``, which returns every task the cluster ran meanwhile,
with the time each one computed and each dependency it fetched from another worker. The
workload marks the blocks in which the client moves data (:func:`phase`, as the built-in
workloads do around sending their inputs and fetching their results); a workload whose compute
starts late, such as a DDP job whose ranks first start processes, says when its training began
(``train_start``). :func:`split_time` turns these into wall seconds that add up to the run's
time, each instant counted once, in this order of precedence:

* **data transfer**: the client sends inputs or fetches results (:func:`phase`), or, between
  tasks, a worker fetches a dependency from another worker;
* **start-up**: from the start of the step until the training began (``train_start``), or
  until the cluster first computed;
* **compute**: at least one task computing on the cluster, or the cluster computing outside
  tasks, as the step reported it (a KMeans pass over direct connections, a workload's own
  block marked ``phase("compute")``: see ``dasktrain._dask.activity``);
* **scheduler/idle**: the rest, in which the cluster waited for the scheduler or the client
  (round trips, graph submission, result collection).

Distributed's fine performance metrics (``Span.cumulative_worker_metrics``) add how much of
the compute was on the CPU and how much waited (GIL, I/O, a busy machine); they reach the
scheduler with the workers' heartbeats, so :func:`span_metrics` reads them once, at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

from ..._dask import reporting, tracing

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES",
    "BREAKDOWN_COLUMNS",
    "phase",
    "observe",
    "Observation",
    "split_time",
    "span_metrics",
    "performance_report",
]

#: The categories of a run's time, in the order they are drawn, with their columns.
CATEGORIES = {
    "startup_s": "start-up",
    "transfer_s": "data transfer",
    "idle_s": "scheduler/idle",
    "compute_s": "compute",
}
BREAKDOWN_COLUMNS = [*CATEGORIES, "tasks", "idle_gaps"]

#: A pause of the whole cluster shorter than this is a task hand-over, not a wait.
_GAP_S = 0.002


@dataclasses.dataclass
class Observation:
    """What one run left behind: client phases, the task stream and its span."""

    phases: list = dataclasses.field(default_factory=list)
    tasks: list = dataclasses.field(default_factory=list)
    span_id: str | None = None


@contextlib.contextmanager
def phase(kind: str = "transfer") -> Iterator[None]:
    """Mark a block of a workload in the run's time breakdown.

    Inside :func:`~dasktrain.compare`, the block's wall time counts as ``data transfer``
    (``kind="transfer"``: the client sends inputs or fetches results) or as ``compute``
    (``kind="compute"``: the cluster computes outside Dask tasks, e.g. processes of your own
    that the workers started, which the task stream cannot see); elsewhere it does nothing.

    Examples
    --------
    >>> def my_step(data, engine, client):  # doctest: +SKIP
    ...     with dasktrain.harness.phase("transfer"):
    ...         X = client.scatter(data[0])
    """
    with reporting(kind):
        yield


@contextlib.contextmanager
def observe(client, name):
    """Run the block inside ``distributed.span(name)`` and the task stream of ``client``.

    Yields an :class:`Observation` filled on exit (never raises for the observation itself:
    a cluster that cannot answer leaves it empty).
    """
    import distributed

    obs = Observation()
    stream = distributed.get_task_stream(client)
    try:
        stream.__enter__()
    except Exception:  # noqa: BLE001 - the run still runs, only its breakdown is lost
        logger.debug("could not start the task stream", exc_info=True)
        stream = None
    try:
        with tracing() as obs.phases, distributed.span(name) as span_id:
            obs.span_id = span_id
            yield obs
    finally:
        if stream is not None:
            try:
                stream.__exit__(None, None, None)
                obs.tasks = list(stream.data)
            except Exception:  # noqa: BLE001
                logger.debug("could not read the task stream", exc_info=True)


@contextlib.contextmanager
def observe_local():
    """The local engine's counterpart of :func:`observe`: only the workload's phases."""
    obs = Observation()
    with tracing() as obs.phases:
        yield obs


# --------------------------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------------------------
# Precedence when intervals overlap (first wins); what none covers is scheduler/idle.
_ORDER = ("client-transfer", "startup", "compute", "worker-transfer", "before-first-task")
_COLUMN = {
    "client-transfer": "transfer_s",
    "startup": "startup_s",
    "compute": "compute_s",
    "worker-transfer": "transfer_s",
    "before-first-task": "startup_s",
}


def _intervals(tasks, action):
    return [
        (ss["start"], ss["stop"])
        for t in tasks
        for ss in t.get("startstops", ())
        if ss.get("action") == action
    ]


def _sweep(t0, t1, kinds):
    """Wall seconds of [t0, t1] per column, each instant given to the first kind covering it."""
    events = []
    for rank, kind in enumerate(_ORDER):
        for a, b in kinds.get(kind, ()):
            a, b = max(a, t0), min(b, t1)
            if b > a:
                events += [(a, rank, 1), (b, rank, -1)]
    out = dict.fromkeys(CATEGORIES, 0.0)
    active = [0] * len(_ORDER)
    now = t0
    for t, rank, delta in sorted(events):
        if t > now:
            top = next((i for i, n in enumerate(active) if n > 0), None)
            col = _COLUMN[_ORDER[top]] if top is not None else "idle_s"
            out[col] += t - now
            now = t
        active[rank] += delta
    out["idle_s"] += max(0.0, t1 - now)
    return out


def _idle_gaps(compute):
    """How often the whole cluster stopped computing between the first and the last task."""
    gaps, end = 0, None
    for a, b in sorted(compute):
        if end is not None and a - end > _GAP_S:
            gaps += 1
        end = b if end is None else max(end, b)
    return gaps


def split_time(t0, t1, obs, *, train_start=None) -> dict:
    """Wall seconds of the run [t0, t1] per category (see the module docstring).

    Parameters
    ----------
    t0, t1 : float
        UNIX times the step started and ended (the client's clock; a remote worker's clock
        may differ by its skew).
    obs : Observation
    train_start : float, optional
        UNIX time the workload's training began (after a start-up of its own).

    Returns
    -------
    dict
        ``startup_s``, ``transfer_s``, ``idle_s``, ``compute_s`` (they add up to ``t1 - t0``),
        ``tasks`` (tasks run) and ``idle_gaps`` (times the cluster stopped computing between
        its first and last task).
    """
    # Work the step reported outside tasks (direct passes) is compute like a task's.
    compute = _intervals(obs.tasks, "compute")
    compute += [(a, b) for kind, a, b in obs.phases if kind == "compute"]
    kinds = {
        "client-transfer": [(a, b) for kind, a, b in obs.phases if kind == "transfer"],
        "compute": compute,
        "worker-transfer": _intervals(obs.tasks, "transfer"),
    }
    if train_start is not None and math.isfinite(train_start):
        kinds["startup"] = [(t0, train_start)]
    else:
        first = min((a for a, _ in compute), default=t1)
        kinds["before-first-task"] = [(t0, first)]
    out = _sweep(t0, t1, kinds)
    out["tasks"] = float(len(obs.tasks))
    out["idle_gaps"] = float(_idle_gaps(compute))
    return out


def split_local(t0, t1, obs, *, train_start=None) -> dict:
    """The local engine's split: start-up until ``train_start`` (when given), then compute."""
    start = t0
    if train_start is not None and math.isfinite(train_start):
        start = min(max(train_start, t0), t1)
    return {
        "startup_s": start - t0,
        "transfer_s": 0.0,
        "idle_s": 0.0,
        "compute_s": t1 - start,
        "tasks": 0.0,
        "idle_gaps": 0.0,
    }


# --------------------------------------------------------------------------------------------
# Fine performance metrics, once at the end
# --------------------------------------------------------------------------------------------
def span_metrics(client, span_ids, *, settle=1.5) -> dict:
    """``{span id: {"compute_cpu_s", "compute_wait_s"}}`` from the scheduler's spans.

    Waits ``settle`` seconds first: the workers send these metrics with their heartbeats.
    Returns ``{}`` when the scheduler cannot answer (e.g. it forbids ``run_on_scheduler``).
    """
    ids = [s for s in span_ids if s]
    if not ids:
        return {}
    time.sleep(settle)

    def read(dask_scheduler, ids):
        # Runs on the scheduler; nested, so it travels by value (no dasktrain needed there).
        # CPU and waiting thread-seconds of the tasks of each span.
        ext = dask_scheduler.extensions.get("spans")
        out = {}
        for sid in ids:
            span = ext.spans.get(sid) if ext is not None else None
            if span is None:
                continue
            cpu = wait = 0.0
            for key, value in span.cumulative_worker_metrics.items():
                if key[0] != "execute" or key[-1] != "seconds":
                    continue
                if key[2] == "thread-cpu":
                    cpu += value
                elif key[2] in ("thread-noncpu", "executor", "other"):
                    wait += value
            out[sid] = {"compute_cpu_s": cpu, "compute_wait_s": wait}
        return out

    try:
        return client.run_on_scheduler(read, ids=ids)
    except Exception:  # noqa: BLE001 - the breakdown keeps its task-stream figures
        logger.info("could not read the span metrics from the scheduler", exc_info=True)
        return {}


@contextlib.contextmanager
def performance_report(client, folder):
    """Dask's performance report of ``client``'s cluster over the block: yields a dict whose
    ``"html"`` holds it afterwards (None when ``client`` is None or no report was written).

    The report is written to ``folder`` first; Dask's template links its favicon on
    docs.dask.org, which is dropped so that the page makes no network request offline.
    """
    box = {"html": None}
    if client is None:
        yield box
        return
    from distributed import performance_report as dask_report

    path = Path(folder) / "dask-performance-report.html"
    with client.as_current(), dask_report(filename=str(path), mode="inline"):
        yield box
    if path.exists():
        box["html"] = re.sub(r'<link[^>]*rel="shortcut icon"[^>]*>', "", path.read_text())
