"""ResourceMonitor: sample CPU, memory, GPU and energy of a run, for both engines.

The driver's whole process tree is sampled with psutil from a background thread. A local Dask
cluster's worker processes are children of the driver, so the same sampler measures the local
engine and the dask engine alike. Workers outside that tree (on other hosts: psutil here cannot
see them) are measured by Dask: each worker's own
:class:`distributed.system_monitor.SystemMonitor` history is collected with ``Client.run``, and
their samples say so (``source="dask"``, ``host`` the worker's host name). A worker's
``SystemMonitor`` measures the worker process itself, not the processes it starts (DDP ranks).

Energy is only ever *measured*: CPU package energy from Intel RAPL where
``/sys/class/powercap/intel-rapl:*/energy_uj`` is readable, GPU energy from NVML where a GPU
and nvidia-ml-py are present. Otherwise it is NaN and ``energy_measured`` is False; it is never
estimated from CPU utilisation.

As in :class:`distributed.diagnostics.MemorySampler`, sampling and summarising are apart: the
readers (:mod:`dasktrain.harness.measure._sources`, :mod:`dasktrain.harness.measure._energy`)
return typed :class:`Sample` records, the monitor schedules them, and :func:`summarize` turns
the samples into figures.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ... import _config
from ..._validation import check_positive_number
from ...exceptions import ValidationError
from ._energy import RAPL_GLOB, EnergyMeter, read_rapl
from ._sources import DaskWorkers, ProcessTree, Sample, infer_role

if TYPE_CHECKING:  # pandas is imported when the samples are first asked for
    import pandas as pd
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = [
    "ResourceMonitor",
    "Sample",
    "SAMPLE_COLUMNS",
    "RAPL_GLOB",
    "infer_role",
    "read_rapl",
    "summarize",
]

SAMPLE_COLUMNS = list(Sample._fields)


class ResourceMonitor:
    """Sample CPU %, memory, GPU and energy of the driver's process tree while a block runs.

    Parameters
    ----------
    interval : float, optional
        Seconds between samples; ``dasktrain.monitor.interval`` (0.5 s) by default.
    client : distributed.Client, optional
        When given, worker processes are named exactly (their pids come from the scheduler),
        and the workers' own ``SystemMonitor`` histories are collected at exit. For a remote
        cluster these are the only CPU and memory readings of the workers.
    uss : bool or int
        Also read USS (unique set size) per process: ``True`` at every sample, an int ``n``
        at every n-th sample, ``False`` never. It reads ``/proc/<pid>/smaps_rollup``, about
        three times the cost of the rest of a sample, so the default (every 10th sample) keeps
        the monitor under 1 % of one core at 0.5 s (see ``benchmarks/bench_monitor.py``).
    worker_monitors : {"auto", True, False}
        Collect the workers' ``SystemMonitor`` histories. ``"auto"`` does so when some worker
        is not in this process tree (a remote cluster).
    workers : dict, optional
        ``{pid: name}`` of worker processes known beforehand (the workers of every cluster of
        a comparison), so that they keep one name in every run's samples.
    idle_pids : collection of int
        Worker processes of other clusters: sampled with role ``"idle"`` and left out of the
        summary (see ``dasktrain.harness.measure._sources.ProcessTree``).

    Attributes
    ----------
    samples : pandas.DataFrame
        Tidy samples: one row per time x process (``source="psutil"``), per worker of a remote
        cluster (``source="dask"``), per GPU (``source="nvml"``) and system-wide CPU
        (``role="system"``). Times are UNIX seconds; ``elapsed`` is seconds since start;
        ``host`` is the host name of the machine the row was measured on.
    remote_workers : list of str
        Addresses of the workers outside this process tree, measured by Dask only (set by
        ``start`` when a client is given).
    energy : dict
        ``cpu_energy_j``, ``gpu_energy_j`` (NaN where not measured) and ``energy_measured``.

    Examples
    --------
    >>> with ResourceMonitor(interval=0.5) as mon:  # doctest: +SKIP
    ...     train()
    >>> mon.summary()["peak_rss_bytes"]  # doctest: +SKIP
    """

    def __init__(
        self,
        interval: float | None = None,
        client: Client | None = None,
        *,
        uss: bool | int = 10,
        worker_monitors: bool | str = "auto",
        workers: Mapping[int, str] | None = None,
        idle_pids: Iterable[int] = (),
    ) -> None:
        self.interval = interval
        self.client = client
        self.uss = uss
        self.worker_monitors = worker_monitors
        self.workers = dict(workers or {})
        self.idle_pids = set(idle_pids)
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.overhead_cpu_s = 0.0
        self.energy = {"cpu_energy_j": math.nan, "gpu_energy_j": math.nan, "energy_measured": False}
        self.energy_note = ""
        self.remote_workers: list = []
        self._interval = interval
        self._rows: list = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._tree: ProcessTree | None = None
        self._workers: DaskWorkers | None = None
        self._meter: EnergyMeter | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> ResourceMonitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _check(self):
        """``(interval, uss_every)`` from the arguments; raise ValidationError when bad."""
        interval = _config.get("monitor.interval") if self.interval is None else self.interval
        interval = check_positive_number(interval, "interval", unit="seconds")
        uss = self.uss
        if not isinstance(uss, bool) and (not isinstance(uss, int) or uss < 0):
            raise ValidationError(f"uss={uss!r} must be True, False or a positive integer.")
        return float(interval), 0 if uss is False else 1 if uss is True else int(uss)

    def start(self) -> ResourceMonitor:
        """Start sampling in a background thread (also done by ``with``)."""
        import psutil

        self._interval, uss_every = self._check()
        self._workers = None
        if self.client is not None:
            tree_pids = {p.pid for p in psutil.Process().children(recursive=True)}
            self._workers = DaskWorkers(self.client, tree_pids, self.worker_monitors)
            self.remote_workers = list(self._workers.outside)
        worker_pids = dict(self.workers)
        if self._workers is not None:
            worker_pids.update(self._workers.pids)
        for pid in self.idle_pids:
            worker_pids.pop(pid, None)
        self._tree = ProcessTree(worker_pids, uss_every, self.idle_pids)
        self._meter = EnergyMeter()
        psutil.cpu_percent(None)  # prime the system-wide counter
        self._rows = []
        self.start_time = time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dasktrain-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> ResourceMonitor:
        """Stop sampling, take a last sample and collect energy and worker histories."""
        if self._thread is None:
            return self
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.end_time = time.time()
        assert self._meter is not None  # start() made it with the thread
        energy, self.energy_note = self._meter.stop()
        self.energy.update(energy)
        if self._workers is not None:
            self._rows.extend(self._workers.samples(self.start_time))
        return self

    # -- sampling --------------------------------------------------------------------------
    def _loop(self):
        t_cpu0 = time.thread_time()
        try:
            self._sample()
            while not self._stop.wait(self._interval):
                self._sample()
            self._sample()  # one at the very end, so the samples span the whole run
        except Exception:  # pragma: no cover - never let the sampler kill a measured run
            logger.exception("resource monitor stopped sampling")
        finally:
            self.overhead_cpu_s = time.thread_time() - t_cpu0

    def _sample(self):
        now = time.time()
        elapsed = now - self.start_time
        self._rows.extend(self._tree.sample(now, elapsed))
        self._rows.extend(self._meter.gpu_samples(now, elapsed, self._tree.hostname))

    # -- results ---------------------------------------------------------------------------
    @property
    def samples(self) -> pd.DataFrame:
        """Tidy :class:`pandas.DataFrame` of all samples (see the class docstring)."""
        import pandas as pd

        return pd.DataFrame(list(self._rows), columns=SAMPLE_COLUMNS)

    @property
    def duration(self) -> float:
        """Seconds between start and stop (or now, while running)."""
        if self.start_time is None:
            return 0.0
        return (self.end_time or time.time()) - self.start_time

    def summary(self, *, exclude_roles: Iterable[str] = ()) -> dict[str, Any]:
        """Summary of the run as a flat dict.

        ``exclude_roles`` leaves processes of those roles (e.g. ``("worker", "nanny",
        "scheduler")``) out of the CPU and memory figures: a local-engine run does not use the
        idle processes of a cluster that happens to be running beside it. The samples keep
        every process.

        Keys: ``duration_s``, ``n_samples`` (sampling instants), ``interval_s``,
        ``cpu_percent_mean`` / ``cpu_percent_max`` (the whole tree, or the remote workers
        summed; 100 = one core), ``system_cpu_percent_mean``, ``others_cpu_percent_mean``
        (what processes outside the tree used of this machine; 100 = one core),
        ``peak_rss_bytes`` /
        ``peak_uss_bytes`` (peak of the tree's sum over time), ``n_processes``, ``n_workers``,
        ``n_remote_workers`` (workers measured by Dask only), ``gpu_utilization_mean``,
        ``cpu_energy_j``, ``gpu_energy_j``, ``energy_j``,
        ``energy_measured``, ``energy_note``, ``overhead_cpu_s`` and
        ``overhead_percent_of_core`` (the sampler's own CPU time over the duration).
        """
        dur = self.duration
        out: dict[str, Any] = {"duration_s": dur, "interval_s": self._interval}
        out.update(
            summarize(
                self.samples,
                remote=self.remote_workers,
                worker_children=self._tree.worker_children if self._tree else (),
                exclude_roles=exclude_roles,
            )
        )
        out.update(self.energy)
        out["energy_note"] = self.energy_note
        out["overhead_cpu_s"] = float(self.overhead_cpu_s)
        out["overhead_percent_of_core"] = (
            float(100 * self.overhead_cpu_s / dur) if dur > 0 else math.nan
        )
        return out


# --------------------------------------------------------------------------------------------
# Presentation: samples -> figures
# --------------------------------------------------------------------------------------------
def _float(value):
    return float(value) if value == value else math.nan  # NaN stays NaN, numpy -> float


def _per_instant(tree, remote):
    """CPU % and RSS summed over processes, per sampling instant.

    Remote workers' own monitors tick at their own times: they are summed per rounded second,
    with the tree's mean CPU added (the driver's own share).
    """
    if len(remote):
        r = remote.assign(t=remote.time.round(0)).groupby("t")
        tree_cpu = tree.groupby("time").cpu_percent.sum(min_count=1).mean() if len(tree) else 0.0
        return r.cpu_percent.sum(min_count=1) + tree_cpu, r.rss.sum()
    g = tree.groupby("time")
    return g.cpu_percent.sum(min_count=1), g.rss.sum()


def _others_cpu(df):
    """Mean CPU % (100 = one core) that processes outside the tree used on this machine.

    The whole machine's CPU (the ``system`` rows, % of all cores) less the tree's, every
    process of it counted, per sampling instant; the first instant is left out (a process's
    first reading is 0 by psutil's design). Other users' jobs on a shared machine show here.
    """
    local = df[df.source == "psutil"]
    system = local[local.role == "system"].set_index("time").cpu_percent
    if len(system) < 2:
        return math.nan
    tree = local[local.role != "system"].groupby("time").cpu_percent.sum()
    # psutil's system-wide percentage is over every CPU of the machine, so the machine's count
    # (not _compat.cpu_count, which is this process's affinity) turns it into "100 = one core".
    cores = os.cpu_count() or 1
    others = (system * cores - tree.reindex(system.index).fillna(0)).clip(lower=0)
    return _float(others.iloc[1:].mean())


def summarize(samples, *, remote=(), worker_children=(), exclude_roles=()) -> dict:
    """CPU, memory and GPU figures of a monitor's samples (see :meth:`ResourceMonitor.summary`).

    Parameters
    ----------
    samples : pandas.DataFrame
        Columns ``SAMPLE_COLUMNS``.
    remote : collection of str
        Addresses of the workers outside the process tree (only their ``dask`` rows count:
        the others are already measured by psutil).
    worker_children : collection of int
        pids started by workers (DDP ranks): part of the tree, not workers themselves.
    exclude_roles : collection of str
        Roles left out of the CPU and memory figures.

    Returns
    -------
    dict
    """
    df, nan = samples, math.nan
    # Workers of another cluster ("idle") never count: they sit beside the measured run.
    keep = ~df.role.isin(("system", "idle", *exclude_roles))
    tree = df[(df.source == "psutil") & keep]
    outside = df[(df.source == "dask") & df.process.isin(list(remote)) & keep]
    system, gpu = df[df.role == "system"], df[df.source == "nvml"]
    cpu, rss = _per_instant(tree, outside)
    uss = tree.groupby("time").uss.sum(min_count=1) if len(tree) else None
    tree_workers = tree[(tree.role == "worker") & ~tree.pid.isin(list(worker_children))]
    return {
        "n_samples": int(df.loc[df.source == "psutil", "time"].nunique()) if len(df) else 0,
        "cpu_percent_mean": _float(cpu.mean()) if len(cpu) else nan,
        "cpu_percent_max": _float(cpu.max()) if len(cpu) else nan,
        "system_cpu_percent_mean": _float(system.cpu_percent.mean()) if len(system) else nan,
        "others_cpu_percent_mean": _others_cpu(df) if len(df) else nan,
        "peak_rss_bytes": _float(rss.max()) if len(rss) else nan,
        "peak_uss_bytes": _float(uss.max()) if uss is not None and uss.notna().any() else nan,
        "n_processes": int(tree.pid.nunique()),
        "n_workers": int(tree_workers.pid.nunique() + outside.process.nunique()),
        "n_remote_workers": len(remote),
        "gpu_utilization_mean": _float(gpu.gpu_utilization.mean()) if len(gpu) else nan,
    }
