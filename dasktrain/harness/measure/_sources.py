"""What :class:`~dasktrain.harness.measure.monitor.ResourceMonitor` reads, one reader per source.

* :class:`ProcessTree`: the driver's process tree with psutil (a local cluster's workers are
  children of the driver), each process named and given a role;
* :class:`DaskWorkers`: the workers outside that tree, through their own
  :class:`distributed.system_monitor.SystemMonitor` histories (psutil here cannot see another
  host's processes);
* :class:`~._energy.EnergyMeter` (its own module): CPU package energy from RAPL, GPU energy
  and utilisation from NVML, only ever measured, never estimated.

Every reader returns :class:`Sample` records; the monitor only schedules them and keeps what
they return.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import NamedTuple

logger = logging.getLogger(__name__)


class Sample(NamedTuple):
    """One reading of one process, worker, GPU or the whole machine at one time.

    ``source`` is ``"psutil"`` (this machine's process tree and the ``"system"`` row),
    ``"dask"`` (a worker's own SystemMonitor) or ``"nvml"`` (a GPU). ``time`` is UNIX seconds,
    ``elapsed`` seconds since the monitor started; ``cpu_percent`` is 100 per busy core;
    memory is in bytes; what a source does not read is NaN.
    """

    time: float
    elapsed: float
    source: str
    process: str
    pid: int
    role: str
    cpu_percent: float = math.nan
    rss: float = math.nan
    uss: float = math.nan
    gpu_utilization: float = math.nan
    gpu_memory_used: float = math.nan
    host: str | None = None


def infer_role(cmdline, *, pid=None, root_pid=None, worker_pids=(), parent_role=None) -> str:
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
        One of ``"driver"``, ``"worker"``, ``"nanny"``, ``"scheduler"``, ``"spark"`` (the
        JVM of a ``local[N]`` Spark session and its Python workers), ``"other"``.
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
    if parent_role == "spark" or "org.apache.spark" in line or "pyspark" in line:
        return "spark"
    if parent_role == "worker":
        # Processes a worker starts (DDP ranks, torch data loaders) do that worker's work.
        return "worker"
    if "spawn_main" in line or "--multiprocessing-fork" in line:
        # LocalCluster's nanny lives in the driver and spawns each worker with multiprocessing.
        if parent_role in ("driver", "nanny"):
            return "worker"
    return "other"


# --------------------------------------------------------------------------------------------
# The driver's process tree
# --------------------------------------------------------------------------------------------
def _rank_name(proc, worker):
    """``"ddp rank 1 (pid 7342) of <worker>"``; ``"process 7342 of <worker>"`` when the
    process is no DDP rank (its environment has no rank, or cannot be read)."""
    import psutil

    from ...ddp import ENV_BACKEND, RANK

    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        env = {}
    if ENV_BACKEND in env and RANK in env:
        return f"ddp rank {env[RANK]} (pid {proc.pid}) of {worker}"
    return f"process {proc.pid} of {worker}"


class ProcessTree:
    """The driver's process tree as psutil sees it, sampled one instant at a time.

    Parameters
    ----------
    worker_pids : dict
        ``{pid: worker address}`` of the workers in the tree (exact names and roles).
    uss_every : int
        Read USS at every n-th sample (0: never); it costs about three times the rest.
    idle_pids : collection of int
        Workers of other clusters, idle during this run: role ``"idle"`` (they and the
        processes they start), so that no run is charged for a cluster beside it.

    A process a worker starts is a DDP rank (role ``"rank"``), named after its rank when its
    environment says it (``"ddp rank 0 (pid 7342) of tcp://127.0.0.1:40112"``).
    """

    def __init__(self, worker_pids, uss_every, idle_pids=()) -> None:
        import psutil

        self.root = psutil.Process()
        self.hostname = socket.gethostname()
        self.worker_pids = dict(worker_pids)
        self.idle_pids = set(idle_pids)
        self.uss_every = uss_every
        #: pids of processes started by a worker (DDP ranks): not workers themselves.
        self.worker_children: set[int] = set()
        self._procs: dict = {}
        self._roles: dict = {}
        self._names: dict = {}
        self._fresh: set = set()
        self._n = 0

    def _processes(self):
        import psutil

        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            children = []
        current = {}
        for p in [self.root, *children]:
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
                cmd, ppid = proc.cmdline(), proc.ppid()
            except psutil.Error:
                cmd, ppid = [], None
            if ppid in self._procs and ppid not in self._roles and ppid != proc.pid:
                self._role(self._procs[ppid])  # parents first: a worker's children inherit
            parent_role = self._roles.get(ppid, "driver" if ppid == self.root.pid else None)
            if proc.pid in self.idle_pids or parent_role == "idle":
                self._roles[proc.pid] = "idle"
                return "idle"
            if parent_role == "worker":
                parent = self._names.get(ppid, f"worker-{ppid}")
                self._names[proc.pid] = _rank_name(proc, parent)
                self.worker_children.add(proc.pid)
                self._roles[proc.pid] = "rank"
                return "rank"
            self._roles[proc.pid] = infer_role(
                cmd,
                pid=proc.pid,
                root_pid=self.root.pid,
                worker_pids=self.worker_pids,
                parent_role=parent_role,
            )
        return self._roles[proc.pid]

    def _name(self, pid, role):
        if pid not in self._names:
            self._names[pid] = self.worker_pids.get(pid) or (
                "driver" if role == "driver" else f"{role}-{pid}"
            )
        return self._names[pid]

    def _read(self, proc, want_uss):
        """``(cpu %, rss, uss)`` of one process (NaN where not read); raises psutil.Error."""
        import psutil

        with proc.oneshot():
            cpu = proc.cpu_percent(None)
            if proc.pid in self._fresh:
                self._fresh.discard(proc.pid)
                cpu = math.nan
            rss = proc.memory_info().rss
            uss = math.nan
            if want_uss:
                try:
                    uss = proc.memory_full_info().uss
                except (psutil.AccessDenied, AttributeError):
                    self.uss_every = 0  # not allowed here: stop trying
        return cpu, rss, uss

    def sample(self, now, elapsed) -> list[Sample]:
        """One :class:`Sample` per live process of the tree, then the whole machine's."""
        import psutil

        want_uss = bool(self.uss_every) and self._n % self.uss_every == 0
        self._n += 1
        out = []
        for pid, proc in self._processes().items():
            try:
                cpu, rss, uss = self._read(proc, want_uss)
            except psutil.Error:
                continue
            role = self._role(proc)
            name = self._name(pid, role)
            out.append(
                Sample(now, elapsed, "psutil", name, pid, role, cpu, rss, uss, host=self.hostname)
            )
        system_cpu, used = psutil.cpu_percent(None), psutil.virtual_memory().used
        out.append(
            Sample(
                now, elapsed, "psutil", "system", -1, "system", system_cpu, used, host=self.hostname
            )
        )
        return out


# --------------------------------------------------------------------------------------------
# Workers outside the tree
# --------------------------------------------------------------------------------------------
class DaskWorkers:
    """The cluster's workers: which are in this process tree, and the history of the others.

    Parameters
    ----------
    client : distributed.Client
    tree_pids : set of int
        The pids in this machine's process tree.
    collect : {"auto", True, False}
        Whose ``SystemMonitor`` history to collect: the workers outside the tree (``"auto"``),
        every worker (True) or none (False).
    """

    def __init__(self, client, tree_pids, collect="auto") -> None:
        self.client = client
        #: ``{pid: address}`` of the workers in this tree; ``outside``: the other addresses.
        self.pids, self.outside, self.hosts = {}, [], {}
        self._collect, self._counts = [], {}
        try:
            # A lambda travels by value: the workers need not import this module.
            info = client.run(lambda: (os.getpid(), socket.gethostname()))
        except Exception as exc:  # a broken cluster must not break the measured run
            logger.warning("could not list the Dask workers for monitoring: %s", exc)
            return
        here = socket.gethostname()
        for addr, (pid, host) in info.items():
            self.hosts[addr] = host
            if host == here and pid in tree_pids:
                self.pids[pid] = addr
            else:
                self.outside.append(addr)
        self._collect = {"auto": list(self.outside), True: list(info), False: []}[collect]
        if self._collect:
            self._counts = client.run(
                lambda dask_worker: dask_worker.monitor.count, workers=self._collect
            )

    def _last_sample(self):
        # Each worker samples every ``distributed.admin.system-monitor.interval`` on its own
        # clock, so a run shorter than that may hold no sample of some worker: take one at the
        # very end, as the psutil side does, so that every collected worker is in every run.
        self.client.run(lambda dask_worker: dask_worker.monitor.update(), workers=self._collect)

    def _history(self):
        self._last_sample()
        hist = {}
        for addr in self._collect:
            start = self._counts.get(addr, 0)
            hist.update(
                self.client.run(
                    lambda dask_worker, start=start: dask_worker.monitor.range_query(start=start),
                    workers=[addr],
                )
            )
        return hist

    def samples(self, start_time) -> list[Sample]:
        """The :class:`Sample` records the collected workers took since the monitor started."""
        if not self._collect:
            return []
        try:
            hist = self._history()
        except Exception as exc:
            logger.warning("could not collect the Dask workers' SystemMonitor history: %s", exc)
            return []
        out = []
        for addr, q in hist.items():
            times = q.get("time", [])
            nans = [math.nan] * len(times)
            gpu_util = q.get("gpu_utilization") or nans
            gpu_mem = q.get("gpu_memory_used") or nans
            for i, t in enumerate(times):
                if t is not None:
                    out.append(
                        Sample(
                            t,
                            t - start_time,
                            "dask",
                            addr,
                            -1,
                            "worker",
                            q["cpu"][i],
                            q["memory"][i],
                            math.nan,
                            gpu_util[i],
                            gpu_mem[i],
                            self.hosts.get(addr),
                        )
                    )
        return out
