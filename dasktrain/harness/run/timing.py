"""One timed run of one workload on one engine, and the :class:`RunRecord` it leaves.

A run is timed around the whole workload call, with the local engine limited to as many cores
as the cluster has worker threads, the resource monitor sampling, and (when asked) a time
limit. Whatever happens, the run ends as a record: ``ok``, ``error``, ``unavailable`` (a
missing optional package or data the workload cannot use) or ``timeout``; nothing a workload
does or returns may break the comparison.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import numbers
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..._dask import WorkerWatch, busy_with_cancelled, cancel_keys, future_keys, watching
from ...exceptions import OptionalDependencyError, Unavailable, WorkloadError
from ..measure.breakdown import observe, observe_local, split_local, split_time
from ..measure.monitor import ResourceMonitor
from ..measure.records import RunRecord
from ..settings import using
from .setups import free_stuck_workers

if TYPE_CHECKING:  # pandas comes with the monitor's samples
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["run_once", "limited", "span_name"]

#: The monitor's figures a run record keeps.
_MONITOR_FIELDS = (
    "cpu_percent_mean",
    "cpu_percent_max",
    "others_cpu_percent_mean",
    "peak_rss_bytes",
    "energy_j",
    "energy_measured",
)


def span_name(workload, setup, size, label) -> str:
    """The ``distributed.span`` of one run: ``"<workload>/<setup>/<size>/<label>"``, e.g.
    ``"kmeans/dask-2w/600/run-2"`` or ``".../warm-up"`` (size ``all``: the whole data)."""
    return "/".join([workload, setup, f"{size:g}" if size else "all", label])


@contextlib.contextmanager
def limited(engine, n_threads) -> Iterator[None]:
    """Limit the local engine to ``n_threads`` cores (BLAS/OpenMP pools and torch)."""
    if engine != "local":
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only when a workload already imported it
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        if torch is not None and old is not None:
            torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# The time limit
# --------------------------------------------------------------------------------------------
class _RunTimeout(Exception):
    """A run did not finish within its time limit (reported in its row, never raised out).

    ``busy``: ``{worker: [key]}`` of its cancelled tasks that still hold a worker thread.
    """

    def __init__(self, message, busy=None):
        super().__init__(message)
        self.busy = busy or {}


def _timeout_message(timeout, cancelled, still_running):
    msg = f"did not finish within the time limit of {timeout:g} s"
    if cancelled:
        msg += f"; its {cancelled} task(s) on the cluster were cancelled"
    if still_running:
        msg += (
            "; the run could not be stopped (a Python thread cannot be killed) and was left "
            "running in the background, so later timings of this comparison may be disturbed"
        )
    return msg


def _call(fn, args, timeout, client):
    """``(fn(*args), seconds, (start, end))``; with ``timeout``, raise :class:`_RunTimeout`
    when it is over. ``start`` and ``end`` are UNIX times around the call.

    With a time limit the workload runs in a daemon thread (in a copy of this context, so it
    sees the run's RunContext and current client) while this thread waits. On timeout the
    tasks the run submitted to the cluster are cancelled, which ends a dask run blocked on
    them. A thread cannot be killed in Python: a run still busy in this process (a local run)
    is left running in the background, and the row says so.
    """
    if timeout is None:
        w0, t0 = time.time(), time.perf_counter()
        value = fn(*args)
        elapsed = time.perf_counter() - t0
        return value, elapsed, (w0, w0 + elapsed)
    box = {}
    before = future_keys(client) if client is not None else set()

    def target():
        box["w0"], t0 = time.time(), time.perf_counter()
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["exc"] = exc
        box["elapsed"] = time.perf_counter() - t0

    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(target,),
        daemon=True,
        name="dasktrain-compare-run",
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        cancelled = 0
        if client is not None:
            new = future_keys(client) - before
            cancelled = cancel_keys(client, new, reason="dasktrain.compare: the run timed out")
        thread.join(min(5.0, timeout))  # a dask run blocked on its cancelled tasks ends now
        # A cancelled task that was running still runs, on the worker's thread.
        busy = busy_with_cancelled(client) if cancelled else {}
        raise _RunTimeout(_timeout_message(timeout, cancelled, thread.is_alive()), busy)
    if "exc" in box:
        raise box["exc"]
    return box["value"], box["elapsed"], (box["w0"], box["w0"] + box["elapsed"])


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------
def _record_metrics(rec, metrics, spec):
    """Put a run's metrics into its record; nothing a workload returns may break the record.

    ``train_time`` and ``train_start`` are the workload's word on its training step, not
    metrics: they go to the record's ``train_time`` and the time breakdown.
    """
    metrics.pop("train_start", None)
    tt = metrics.pop("train_time", None)
    if isinstance(tt, numbers.Real):
        rec.train_time = float(tt)
    elif tt is not None:
        rec.add_note(f"train_time={str(tt)[:60]!r} is not a number of seconds; ignored")
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
    # The quality metric is the first *numeric* metric unless the workload names one.
    name = None if spec.metric is False else (spec.metric or next(iter(numeric), None))
    rec.quality_metric = name
    rec.quality = numeric.get(name, math.nan)
    if name is not None and name in metrics and name not in numeric:
        rec.add_note(f"metric {name!r}={str(metrics[name])[:60]!r} is not a number")
    for k, v in metrics.items():
        if k in numeric:
            rec.metrics[k] = numeric[k]
        elif isinstance(v, str):
            rec.metrics[k] = v[:200]


def _record_lost_workers(rec, watch):
    lost = watch.lost()
    rec.workers_lost = len(lost)
    if lost:
        names = ", ".join(f"{a!r}" + (" (retired)" if planned else "") for a, planned in lost)
        rec.add_note(
            f"worker(s) {names} left the cluster during this run: its time includes the recovery"
        )


def _record_monitor(rec, mon, machine=None):
    # Each engine is charged for its own processes only, not for the others' idle ones.
    s = mon.summary(exclude_roles=_NOT_MINE[rec.engine])
    for k in _MONITOR_FIELDS:
        # The machine watch's figure is kept: read over at least a second, reaped children
        # included (the monitor's per-process percentages miss short-lived processes).
        if not (k == "others_cpu_percent_mean" and machine is not None):
            setattr(rec, k, s[k])
    rec.monitor_overhead_pct = s["overhead_percent_of_core"]


_DASK_ROLES = ("worker", "nanny", "scheduler", "rank")
#: The processes of the driver's tree that are not an engine's (left out of its figures).
_NOT_MINE = {"local": (*_DASK_ROLES, "spark"), "dask": ("spark",), "spark": _DASK_ROLES}


def _guarded(fn, client, what):
    """``fn`` behind the paused-worker guard of ``client`` (a dask run: a workload's waits are
    its own, so the futures it makes are watched; see :mod:`dasktrain._dask.waits`)."""
    if client is None:
        return fn

    def call(*args):
        with watching(client, what):
            return fn(*args)

    return call


def _workload_fn(spec, engine):
    """The function ``spec`` runs on ``engine``: on Spark, a built-in's Spark twin, and a JVM
    that died reads "Spark died" (:func:`~dasktrain.harness.workloads.spark.spark_fn`)."""
    if engine != "spark":
        return spec.fn
    from ..workloads.spark import spark_fn

    return spark_fn(spec)


def _timed_call(spec, inputs, rec, client, mon, timeout):
    """Call the workload, timing it into ``rec`` and splitting its time; return its metrics
    (raises what it raises). ``client`` is the dask client or the Spark session."""
    dask_client = client if rec.engine == "dask" else None
    if mon is not None:
        mon.start()
    observed = observe(dask_client, rec.span) if dask_client is not None else observe_local()
    try:
        with observed as obs:
            args = (inputs, rec.engine, client)
            what = f"workload {spec.name!r} on setup {rec.setup!r}"
            fn = _guarded(_workload_fn(spec, rec.engine), dask_client, what)
            metrics, rec.time, window = _call(fn, args, timeout, dask_client)
    finally:
        if mon is not None:
            mon.stop()
    if not isinstance(metrics, dict):
        raise WorkloadError(
            f"workload {spec.name!r} returned {type(metrics).__name__}; it must return a "
            "dict of metrics (optionally with 'train_time')."
        )
    train_start = metrics.get("train_start")
    train_start = float(train_start) if isinstance(train_start, numbers.Real) else None
    split = split_time if dask_client is not None else split_local
    for key, value in split(*window, obs, train_start=train_start).items():
        setattr(rec, key, value)
    rec.span_id = obs.span_id
    return dict(metrics)


def run_once(
    spec,
    inputs,
    setup,
    ctx,
    *,
    interval=None,
    monitor=True,
    timeout=None,
    size=None,
    known=None,
    label="run-1",
    machine=None,
) -> tuple[RunRecord, pd.DataFrame | None]:
    """Run workload ``spec`` once on ``setup``; return ``(RunRecord, samples or None)``.

    The workload gets the setup's client on the dask engine (its ``SparkSession`` on Spark,
    None on the local engine), and the dask client is the current client meanwhile, so code
    that resolves its client late (``distributed.get_client()``) finds it. A dask run runs
    inside the ``distributed.span`` ``"<workload>/<setup>/<size>/<label>"`` (``label``:
    ``"warm-up"`` or ``"run-<i>"``; size ``all`` when the whole data ran) and its time is split
    into start-up, data transfer, scheduler/idle and compute
    (:mod:`~dasktrain.harness.measure.breakdown`). ``known`` is the ``{pid: name}`` of every
    cluster's workers: the monitor names them alike in every run and leaves the other
    clusters' workers out of this run's figures. ``machine`` (a
    :class:`~dasktrain.harness.measure.machine.MachineWatch`) gives the run what other programs used
    of the machine meanwhile (``others_cpu_percent_mean``), over at least a second.
    """
    engine = setup.engine
    rec = RunRecord(spec.name, engine, setup=setup.name)
    dask_client = setup.client if engine == "dask" else None
    if dask_client is not None:
        rec.span = span_name(spec.name, setup.name, size, label)
    mon = None
    if monitor:
        known = dict(known or {})
        own = {p for p in setup.worker_pids.values() if p > 0}
        mon = ResourceMonitor(
            interval=interval, client=dask_client, workers=known, idle_pids=set(known) - own
        )
    watch = WorkerWatch(dask_client) if dask_client is not None else None
    current = dask_client.as_current() if dask_client is not None else contextlib.nullcontext()
    metrics = {}
    rec.start = time.time()
    try:
        if setup.unavailable:
            raise Unavailable(setup.unavailable)
        with using(ctx), limited(engine, ctx.n_threads), current:
            metrics = _timed_call(spec, inputs, rec, setup.client, mon, timeout)
    except (Unavailable, OptionalDependencyError) as exc:
        rec.status, rec.error = "unavailable", str(exc)
    except _RunTimeout as exc:
        rec.status, rec.error = "timeout", str(exc)
        if exc.busy:  # the cluster must stay usable for the later runs, or say it is not
            rec.error += "; " + free_stuck_workers(setup, exc.busy)
    except Exception as exc:
        logger.info("workload %s on %s failed:\n%s", spec.name, engine, traceback.format_exc())
        rec.status, rec.error = "error", f"{type(exc).__name__}: {exc}"
    rec.end = time.time()
    if rec.status != "ok":
        rec.time, metrics = math.nan, {}
        for key in ("startup_s", "transfer_s", "idle_s", "compute_s"):
            setattr(rec, key, math.nan)
    _record_metrics(rec, metrics, spec)
    if watch is not None:
        _record_lost_workers(rec, watch)
    if machine is not None and rec.status != "unavailable":
        rec.others_cpu_percent_mean = machine.around(rec.start, rec.end)
    if mon is None or rec.status == "unavailable":
        return rec, None
    _record_monitor(rec, mon, machine)
    return rec, mon.samples
