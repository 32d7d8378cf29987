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
"""

from __future__ import annotations

import glob
import logging
import math
import os
import threading
import time

from . import _config
from ._compat import has_gpu, import_optional
from .exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["ResourceMonitor", "infer_role", "read_rapl"]

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"

SAMPLE_COLUMNS = [
    "time",
    "elapsed",
    "source",
    "process",
    "pid",
    "role",
    "cpu_percent",
    "rss",
    "uss",
    "gpu_utilization",
    "gpu_memory_used",
    "host",
]


def infer_role(cmdline, *, pid=None, root_pid=None, worker_pids=(), parent_role=None):
    """Guess what a process in the driver's tree is: driver, worker, nanny, scheduler or other.

    Parameters
    ----------
    cmdline : list of str
        The process command line (``psutil.Process.cmdline()``).
    pid, root_pid : int, optional
        The process id and the driver's id.
    worker_pids : collection of int
        Worker process ids known from the scheduler (exact, preferred over guessing).
    parent_role : str, optional
        Role of the parent process: a ``multiprocessing`` child of a nanny is a worker.

    Returns
    -------
    str
        One of ``"driver"``, ``"worker"``, ``"nanny"``, ``"scheduler"``, ``"other"``.
    """
    if pid is not None and pid == root_pid:
        return "driver"
    if pid is not None and pid in worker_pids:
        return "worker"
    line = " ".join(cmdline or ())
    if "dask-scheduler" in line or "dask_scheduler" in line or "dask scheduler" in line:
        return "scheduler"
    if "dask-worker" in line or "dask_worker" in line or "dask worker" in line:
        # The CLI process runs the nanny; with --no-nanny it is the worker itself.
        return "worker" if "--no-nanny" in line else "nanny"
    if "resource_tracker" in line or "forkserver" in line:
        return "other"
    if parent_role == "worker":
        # Processes a worker starts (DDP ranks, torch data loaders) do that worker's work.
        return "worker"
    if "spawn_main" in line or "--multiprocessing-fork" in line:
        # LocalCluster's nanny lives in the driver and spawns each worker with multiprocessing.
        if parent_role in ("driver", "nanny"):
            return "worker"
    return "other"


def _rapl_domains():
    # Top-level packages only (intel-rapl:0, not the intel-rapl:0:0 sub-zones they contain).
    paths = [
        p
        for p in sorted(glob.glob(RAPL_GLOB))
        if os.path.basename(os.path.dirname(p)).count(":") == 1
    ]
    readable = []
    for p in paths:
        try:
            with open(p) as f:
                int(f.read())
        except (OSError, ValueError):
            continue
        readable.append(p)
    return readable


def read_rapl(paths=None):
    """Read the cumulative RAPL package energy counters in joules: ``{path: joules}``.

    Returns an empty dict when RAPL is absent or not readable (often root-only on Linux).
    """
    paths = _rapl_domains() if paths is None else paths
    out = {}
    for p in paths:
        try:
            with open(p) as f:
                out[p] = int(f.read()) / 1e6
        except (OSError, ValueError):
            continue
    return out


def _rapl_range(path):
    try:
        with open(os.path.join(os.path.dirname(path), "max_energy_range_uj")) as f:
            return int(f.read()) / 1e6
    except (OSError, ValueError):
        return math.nan


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

    def __init__(self, interval=None, client=None, *, uss=10, worker_monitors="auto"):
        self.interval = interval
        self.client = client
        self.uss = uss
        self.worker_monitors = worker_monitors
        self._rows = []
        self._thread = None
        self._stop = threading.Event()
        self._procs = {}
        self._roles = {}
        self.start_time = self.end_time = None
        self.overhead_cpu_s = 0.0
        self.energy = {"cpu_energy_j": math.nan, "gpu_energy_j": math.nan, "energy_measured": False}
        self.energy_note = ""
        self._worker_rows = []
        self._outside = []
        self._names = {}
        self._worker_children = set()
        self._fresh = set()
        self._worker_hosts = {}
        self.remote_workers = []

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        """Start sampling in a background thread (also done by ``with``)."""
        import psutil

        interval = _config.get("monitor.interval") if self.interval is None else self.interval
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise ValidationError(f"interval={interval!r} must be a positive number of seconds.")
        self._interval = float(interval)
        uss = self.uss
        if not isinstance(uss, bool) and (not isinstance(uss, int) or uss < 0):
            raise ValidationError(f"uss={uss!r} must be True, False or a positive integer.")
        self._uss_every = 0 if uss is False else 1 if uss is True else int(uss)
        import socket

        self._root = psutil.Process()
        self._hostname = socket.gethostname()
        self._worker_pids = {}
        self._remote_workers = []
        self._monitor_counts = {}
        if self.client is not None:
            self._probe_workers()
        self._rapl_paths = _rapl_domains()
        self._rapl_start = read_rapl(self._rapl_paths)
        self._nvml = None
        self._gpu_handles = []
        self._gpu_energy_start = {}
        if has_gpu():
            self._start_nvml()
        psutil.cpu_percent(None)  # prime the system-wide counter
        self._rows = []
        self._n_sampled = 0
        self.start_time = time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dasktrain-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop sampling, take a last sample and collect energy and worker histories."""
        if self._thread is None:
            return self
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.end_time = time.time()
        self._finish_energy()
        if self._remote_workers:
            self._collect_worker_monitors()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # pragma: no cover - GPU only
                pass
        return self

    # -- probes ----------------------------------------------------------------------------
    def _probe_workers(self):
        """Map worker addresses to pids and find workers outside this process tree."""
        import socket

        try:
            info = self.client.run(lambda: (os.getpid(), socket.gethostname()))
        except Exception as exc:  # a broken cluster must not break the measured run
            logger.warning("could not list the Dask workers for monitoring: %s", exc)
            return
        here = socket.gethostname()
        tree = {p.pid for p in self._root.children(recursive=True)}
        for addr, (pid, host) in info.items():
            self._worker_hosts[addr] = host
            if host == here and pid in tree:
                self._worker_pids[pid] = addr
            else:
                self._remote_workers.append(addr)
        self._outside = list(self._remote_workers)  # measured only by their own monitors
        self.remote_workers = list(self._outside)
        want = self.worker_monitors
        if want is True:
            self._remote_workers = list(info)
        elif want is False:
            self._remote_workers = []
        if self._remote_workers:
            self._monitor_counts = self.client.run(
                lambda dask_worker: dask_worker.monitor.count, workers=self._remote_workers
            )

    def _collect_worker_monitors(self):
        try:
            counts = self._monitor_counts
            hist = {}
            for addr in self._remote_workers:
                start = counts.get(addr, 0)
                hist.update(
                    self.client.run(
                        lambda dask_worker, start=start: dask_worker.monitor.range_query(
                            start=start
                        ),
                        workers=[addr],
                    )
                )
        except Exception as exc:
            logger.warning("could not collect the Dask workers' SystemMonitor history: %s", exc)
            return
        for addr, q in hist.items():
            times = q.get("time", [])
            for i, t in enumerate(times):
                if t is None:
                    continue
                self._rows.append(
                    {
                        "time": t,
                        "elapsed": t - self.start_time,
                        "source": "dask",
                        "process": addr,
                        "pid": -1,
                        "role": "worker",
                        "cpu_percent": q["cpu"][i],
                        "rss": q["memory"][i],
                        "uss": math.nan,
                        "gpu_utilization": (q.get("gpu_utilization") or [math.nan] * len(times))[i],
                        "gpu_memory_used": (q.get("gpu_memory_used") or [math.nan] * len(times))[i],
                        "host": self._worker_hosts.get(addr),
                    }
                )

    def _start_nvml(self):  # pragma: no cover - runs only on a GPU machine
        try:
            pynvml = import_optional("pynvml", "gpu")
            pynvml.nvmlInit()
        except Exception as exc:
            logger.info("GPU present but NVML unavailable (%s): GPU not monitored", exc)
            return
        self._nvml = pynvml
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            self._gpu_handles.append(h)
            try:
                self._gpu_energy_start[i] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3
            except Exception:
                pass  # older GPUs have no energy counter: left unmeasured, not estimated

    def _finish_energy(self):
        notes = []
        if self._rapl_start:
            end = read_rapl(list(self._rapl_start))
            total = 0.0
            for p, e0 in self._rapl_start.items():
                d = end.get(p, math.nan) - e0
                if d < 0:  # the counter wrapped around once during the run
                    d += _rapl_range(p)
                total += d
            self.energy["cpu_energy_j"] = total
        else:
            notes.append(f"CPU energy not measured (RAPL not readable at {RAPL_GLOB})")
        if self._gpu_energy_start:  # pragma: no cover - GPU only
            total = 0.0
            for i, e0 in self._gpu_energy_start.items():
                h = self._gpu_handles[i]
                total += self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3 - e0
            self.energy["gpu_energy_j"] = total
        elif has_gpu():  # pragma: no cover
            notes.append("GPU energy not measured (no NVML energy counter)")
        measured = [v for k, v in self.energy.items() if k.endswith("_j") and not math.isnan(v)]
        self.energy["energy_measured"] = bool(measured)
        self.energy["energy_j"] = sum(measured) if measured else math.nan
        self.energy_note = "; ".join(notes)

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

    def _process_list(self):
        import psutil

        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            children = []
        current = {}
        for p in [self._root, *children]:
            known = self._procs.get(p.pid)
            # Keep the Process objects: cpu_percent measures since the previous call on it.
            if known is None:
                try:
                    p.cpu_percent(None)
                except psutil.Error:
                    continue
                known = p
                # A reading right after priming divides by a near-zero interval: skip it.
                self._fresh.add(p.pid)
            current[p.pid] = known
        self._procs = current
        return current

    def _role(self, proc):
        import psutil

        if proc.pid not in self._roles:
            try:
                cmd = proc.cmdline()
                ppid = proc.ppid()
            except psutil.Error:
                cmd, ppid = [], None
            if ppid in self._procs and ppid not in self._roles and ppid != proc.pid:
                self._role(self._procs[ppid])  # parents first: a worker's children inherit
            parent_role = self._roles.get(ppid, "driver" if ppid == self._root.pid else None)
            if parent_role == "worker":
                parent = self._names.get(ppid, f"worker-{ppid}")
                self._names[proc.pid] = f"{parent}/{proc.pid}"
                self._worker_children.add(proc.pid)
            self._roles[proc.pid] = infer_role(
                cmd,
                pid=proc.pid,
                root_pid=self._root.pid,
                worker_pids=self._worker_pids,
                parent_role=parent_role,
            )
        return self._roles[proc.pid]

    def _sample(self):
        import psutil

        now = time.time()
        elapsed = now - self.start_time
        rows = []
        every = self._uss_every
        want_uss = bool(every) and self._n_sampled % every == 0
        self._n_sampled += 1
        for pid, proc in self._process_list().items():
            try:
                with proc.oneshot():
                    cpu = proc.cpu_percent(None)
                    if pid in self._fresh:
                        self._fresh.discard(pid)
                        cpu = math.nan
                    mem = proc.memory_info()
                    uss = math.nan
                    if want_uss:
                        try:
                            uss = proc.memory_full_info().uss
                        except (psutil.AccessDenied, AttributeError):
                            self._uss_every = 0  # not allowed here: stop trying
            except psutil.Error:
                continue
            role = self._role(proc)
            name = self._names.get(pid)
            if name is None:
                name = self._worker_pids.get(pid) or (
                    "driver" if role == "driver" else f"{role}-{pid}"
                )
                self._names[pid] = name
            rows.append(
                {
                    "time": now,
                    "elapsed": elapsed,
                    "source": "psutil",
                    "process": name,
                    "pid": pid,
                    "role": role,
                    "cpu_percent": cpu,
                    "rss": mem.rss,
                    "uss": uss,
                    "gpu_utilization": math.nan,
                    "gpu_memory_used": math.nan,
                    "host": self._hostname,
                }
            )
        rows.append(
            {
                "time": now,
                "elapsed": elapsed,
                "source": "psutil",
                "process": "system",
                "pid": -1,
                "role": "system",
                "cpu_percent": psutil.cpu_percent(None),
                "rss": psutil.virtual_memory().used,
                "uss": math.nan,
                "gpu_utilization": math.nan,
                "gpu_memory_used": math.nan,
                "host": self._hostname,
            }
        )
        for i, h in enumerate(self._gpu_handles):  # pragma: no cover - GPU only
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(h).used
            except Exception:
                continue
            rows.append(
                {
                    "time": now,
                    "elapsed": elapsed,
                    "source": "nvml",
                    "process": f"gpu{i}",
                    "pid": -1,
                    "role": "gpu",
                    "cpu_percent": math.nan,
                    "rss": math.nan,
                    "uss": math.nan,
                    "gpu_utilization": float(util),
                    "gpu_memory_used": float(used),
                    "host": self._hostname,
                }
            )
        self._rows.extend(rows)

    # -- results ---------------------------------------------------------------------------
    @property
    def samples(self):
        """Tidy :class:`pandas.DataFrame` of all samples (see the class docstring)."""
        import pandas as pd

        return pd.DataFrame(list(self._rows), columns=SAMPLE_COLUMNS)

    @property
    def duration(self):
        """Seconds between start and stop (or now, while running)."""
        if self.start_time is None:
            return 0.0
        return (self.end_time or time.time()) - self.start_time

    def summary(self, *, exclude_roles=()):
        """Summary of the run as a flat dict.

        ``exclude_roles`` leaves processes of those roles (e.g. ``("worker", "nanny",
        "scheduler")``) out of the CPU and memory figures: a local-engine run does not use the
        idle processes of a cluster that happens to be running beside it. The samples keep
        every process.

        Keys: ``duration_s``, ``n_samples`` (sampling instants), ``interval_s``,
        ``cpu_percent_mean`` / ``cpu_percent_max`` (the whole tree, or the remote workers
        summed; 100 = one core), ``system_cpu_percent_mean``, ``peak_rss_bytes`` /
        ``peak_uss_bytes`` (peak of the tree's sum over time), ``n_processes``, ``n_workers``,
        ``n_remote_workers`` (workers measured by Dask only), ``gpu_utilization_mean``,
        ``cpu_energy_j``, ``gpu_energy_j``, ``energy_j``,
        ``energy_measured``, ``energy_note``, ``overhead_cpu_s`` and
        ``overhead_percent_of_core`` (the sampler's own CPU time over the duration).
        """
        import numpy as np

        df = self.samples
        nan = math.nan
        out = {
            "duration_s": self.duration,
            "interval_s": getattr(self, "_interval", self.interval),
            "n_samples": int(df.loc[df.source == "psutil", "time"].nunique()) if len(df) else 0,
        }
        keep = ~df.role.isin(("system", *exclude_roles))
        tree = df[(df.source == "psutil") & keep]
        # Workers in this tree are already measured by psutil; count only the others.
        remote = df[(df.source == "dask") & df.process.isin(self._outside) & keep]
        system = df[df.role == "system"]
        if len(remote):
            # Remote workers: their own monitors tick at their own times; sum per rounded second.
            r = remote.assign(t=remote.time.round(0)).groupby("t")
            per_t_cpu = r.cpu_percent.sum(min_count=1) + (
                tree.groupby("time").cpu_percent.sum(min_count=1).mean() if len(tree) else 0.0
            )
            per_t_rss = r.rss.sum()
        else:
            g = tree.groupby("time")
            per_t_cpu, per_t_rss = g.cpu_percent.sum(min_count=1), g.rss.sum()
        per_t_uss = tree.groupby("time").uss.sum(min_count=1) if len(tree) else None
        out["cpu_percent_mean"] = float(per_t_cpu.mean()) if len(per_t_cpu) else nan
        out["cpu_percent_max"] = float(per_t_cpu.max()) if len(per_t_cpu) else nan
        out["system_cpu_percent_mean"] = float(system.cpu_percent.mean()) if len(system) else nan
        out["peak_rss_bytes"] = float(per_t_rss.max()) if len(per_t_rss) else nan
        out["peak_uss_bytes"] = (
            float(per_t_uss.max()) if per_t_uss is not None and per_t_uss.notna().any() else nan
        )
        out["n_processes"] = int(tree.pid.nunique())
        out["n_workers"] = int(
            tree.loc[
                (tree.role == "worker") & ~tree.pid.isin(self._worker_children), "pid"
            ].nunique()
            + remote.process.nunique()
        )
        out["n_remote_workers"] = len(self._outside)
        gpu = df[df.source == "nvml"]
        out["gpu_utilization_mean"] = float(gpu.gpu_utilization.mean()) if len(gpu) else nan
        out.update(self.energy)
        out["energy_note"] = self.energy_note
        out["overhead_cpu_s"] = float(self.overhead_cpu_s)
        dur = self.duration
        out["overhead_percent_of_core"] = float(100 * self.overhead_cpu_s / dur) if dur > 0 else nan
        for k, v in list(out.items()):
            if isinstance(v, np.generic):
                out[k] = v.item()
        return out
