"""This machine's quiet, before the first run of a comparison and during every run.

On a machine of a few cores, other programs decide the answer: measured on 2 cores, the local
engine's threads collapsed when other programs used the cores and the ratios flipped; even
programs at the lowest CPU priority turned a 2-process ceiling of 1.5-1.75x into 1.0x. So
:func:`~dasktrain.compare` watches what other programs use of this machine for as long as it
runs (:class:`MachineWatch`), and

* before the first run (:func:`wait_for_quiet`) looks for a second; while others use more
  than half a core (``BUSY_CPU_PERCENT``) it waits, up to
  ``quiet_wait`` seconds, for them to stop. If they do not, it refuses to measure
  (:class:`~dasktrain.exceptions.BusyMachineError`, naming the busiest programs) unless
  ``allow_busy=True``, which measures anyway and says so at the top of the answer;
* gives every run what others used meanwhile (``others_cpu_percent_mean``, 100 = one core)
  over at least one second around it (:meth:`MachineWatch.around`): a run of 10 ms read over
  its own 10 ms would be two clock ticks of noise. A run over half a core is *busy*.

"Other programs" are the processes of this machine outside this process's tree: the workers of
the local clusters, the DDP ranks and Spark's JVM are this tree. The machines of a remote
cluster are not watched.

Both figures are cumulative CPU seconds: the machine's busy time (``psutil.cpu_times``: all
but idle and I/O wait) less the tree's, where each process of the tree counts its own time and
that of the children it reaped. A process that starts or ends within a window is so counted in
full (per-process percentages read 0 at a process's first reading and lose its last moments,
which made a run's own short-lived processes look like other programs).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from ...exceptions import BusyMachineError

logger = logging.getLogger(__name__)

__all__ = ["MachineWatch", "wait_for_quiet", "LOOK_S", "BUSY_CPU_PERCENT", "is_busy"]

#: Seconds of a look at the machine, and the shortest window a run's figure is read over.
LOOK_S = 1.0

#: CPU % (100 = one core) that other programs used of this machine during a run above which
#: the run is *busy*: marked in every table, and kept out of the verdicts unless the user
#: allows it. On 2 cores, programs using more than half a core flipped the ratios (the local
#: engine's threads lose most when a core is taken, even to programs at the lowest priority).
BUSY_CPU_PERCENT = 50


def is_busy(others_cpu_percent):
    """Whether runs were *busy* (over ``BUSY_CPU_PERCENT``): a bool, or a boolean Series
    for a Series; a run that was not measured is not busy."""
    import pandas as pd

    if isinstance(others_cpu_percent, pd.Series):
        return pd.to_numeric(others_cpu_percent, errors="coerce").fillna(0) > BUSY_CPU_PERCENT
    v = others_cpu_percent
    return v is not None and v == v and v > BUSY_CPU_PERCENT


def _machine_busy_s(psutil):
    """CPU seconds the whole machine has been busy (all cores), as ``psutil.cpu_percent``
    counts busy: everything but idle and I/O wait (guest time is inside user time on Linux)."""
    t = psutil.cpu_times()
    total = sum(t)
    if sys.platform.startswith("linux"):
        total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return total - t.idle - getattr(t, "iowait", 0.0)


def _tree_s(psutil, me):
    """``(CPU seconds of this process tree, its pids)``, reaped children included."""
    total, pids = 0.0, set()
    for p in [me, *me.children(recursive=True)]:
        try:
            c = p.cpu_times()
        except psutil.Error:  # ended meanwhile: its time is in its parent's children's now
            continue
        total += c.user + c.system + c.children_user + c.children_system
        pids.add(p.pid)
    return total, pids


class MachineWatch:
    """What other programs use of this machine, read every ``interval`` seconds in a thread.

    Parameters
    ----------
    interval : float
        Seconds between readings.

    Examples
    --------
    >>> with MachineWatch() as watch:  # doctest: +SKIP
    ...     t0 = time.time(); run(); print(watch.around(t0, time.time()))
    """

    def __init__(self, interval=1.0) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = float(interval)
        self.cores = os.cpu_count() or 1
        self._readings: list = []  # (time, machine busy s, tree s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: This process tree's pids at the last reading (what is not "other programs").
        self.tree_pids: set[int] = set()
        #: UNIX time of the first reading.
        self.started = None

    def __enter__(self) -> MachineWatch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> MachineWatch:
        """Take a first reading and keep reading in a background thread."""
        self.started = self.read()[0]
        self._thread = threading.Thread(target=self._loop, name="dasktrain-machine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                self.read()
            except Exception:  # pragma: no cover - never let the watch break a comparison
                logger.exception("the machine watch stopped reading")
                return

    def read(self) -> tuple:
        """Take a reading now: ``(time, machine busy CPU s, this tree's CPU s)``."""
        tree, pids = _tree_s(self._psutil, self._me)
        reading = (time.time(), _machine_busy_s(self._psutil), tree)
        with self._lock:
            self._readings.append(reading)
            self.tree_pids = pids
        return reading

    def _between(self, r0, r1):
        dt = r1[0] - r0[0]
        if dt <= 0:
            return float("nan")
        others = (r1[1] - r0[1]) - (r1[2] - r0[2])
        return max(0.0, 100.0 * others / dt)

    def since(self, t0) -> float:
        """CPU % (100 = one core) other programs used from the last reading at or before
        ``t0`` until now (a reading is taken now)."""
        now = self.read()
        with self._lock:
            before = [r for r in self._readings if r[0] <= t0]
            r0 = before[-1] if before else self._readings[0]
        return self._between(r0, now)

    def around(self, start, end) -> float:
        """CPU % other programs used during a run that just ended (``start``, ``end``: UNIX
        times), read over at least ``LOOK_S`` (1) seconds up to now."""
        return self.since(min(start, end - LOOK_S))


def _busiest(exclude, seconds=0.5, n=3):
    """The ``n`` processes outside ``exclude`` that used the most CPU over ``seconds``:
    ``["name (pid N) 0.98 cores", ...]`` (those above a tenth of a core)."""
    import psutil

    def snapshot():
        out = {}
        for p in psutil.process_iter(["name"]):
            if p.pid in exclude:
                continue
            try:
                c = p.cpu_times()
                out[p.pid] = (p.info["name"], c.user + c.system)
            except psutil.Error:
                continue
        return out

    a = snapshot()
    time.sleep(seconds)
    b = snapshot()
    used = {pid: (b[pid][0], (b[pid][1] - a[pid][1]) / seconds) for pid in b if pid in a}
    top = sorted(used.items(), key=lambda kv: -kv[1][1])[:n]
    return [f"{name} (pid {pid}) {cores:.2f} cores" for pid, (name, cores) in top if cores > 0.1]


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on this platform
        return None


def _busy_message(state, wait):
    names = "; ".join(state["busiest"]) or "no single program stands out"
    return (
        f"this machine is busy: other programs used {state['others_cpu_percent'] / 100:.2f} "
        f"of its {state['cores']} cores (busiest: {names}) after waiting {state['waited_s']:.0f} "
        f"s (quiet_wait={wait:g}) for them to stop. Timings taken beside them say little about "
        "distributing (the local engine's threads lose most when a core is taken, even to "
        "programs at the lowest priority), so nothing was measured. Stop them or wait, raise "
        "quiet_wait (--quiet-wait), or pass allow_busy=True (--allow-busy) to measure anyway "
        "with the warning at the top of the answer."
    )


def wait_for_quiet(watch, *, wait, allow_busy) -> dict:
    """Look at the machine before the first run; wait up to ``wait`` seconds while it is busy.

    Returns
    -------
    dict
        The machine's state before the first run: ``others_cpu_percent`` (the last look),
        ``busy``, ``waited_s``, ``busiest`` (the programs that used most when busy),
        ``load_average`` (1, 5, 15 min, at the first look), ``cores``, ``allow_busy`` and
        ``threshold_cpu_percent``.

    Raises
    ------
    BusyMachineError
        Still busy after ``wait`` seconds, and not ``allow_busy``.
    """
    t0 = time.time()
    load, said = _load_average(), False
    busiest: list = []
    start = watch.started  # the watch may have run while the clusters started
    while True:
        time.sleep(max(0.0, start + LOOK_S - time.time()))
        others = watch.since(start)
        waited = time.time() - t0
        busy = others > BUSY_CPU_PERCENT
        if busy and not busiest:
            busiest = _busiest(watch.tree_pids)
        if not busy or waited >= wait:
            break
        if not said:
            logger.warning(
                "this machine is busy: other programs use %.2f cores (%s); waiting up to %g s "
                "for them to stop before the first run",
                others / 100,
                "; ".join(busiest) or "no single program stands out",
                wait,
            )
            said = True
        start = time.time()
    state = {
        "others_cpu_percent": others,
        "busy": busy,
        "waited_s": waited,
        "busiest": busiest if busy else [],
        "load_average": load,
        "cores": watch.cores,
        "allow_busy": bool(allow_busy),
        "threshold_cpu_percent": BUSY_CPU_PERCENT,
    }
    if busy and not allow_busy:
        raise BusyMachineError(_busy_message(state, wait))
    return state
