"""Is a wait stuck behind workers paused for memory? (distributed#5999)

A worker whose process memory passes ``distributed.worker.memory.pause`` starts no task until
its memory falls. When that memory is freed garbage, :class:`~.memory.ReleaseMemory` hands it
back and the worker resumes; when it is really in use (data the worker holds, a library's
caches) it never falls, and every wait on the worker's tasks hangs without a word: Dask has no
timeout for it. Every blocking call of dasktrain therefore waits through :mod:`.waits` (its
own waits, and a guard around calls it does not own), which asks the scheduler one question
(:class:`StallWatch`): can any task of the work still run? A task can when it is executing
(also on a paused worker: a paused worker finishes what it runs), processing on a running
worker, or queued with a running worker that may take it. When none can, and the workers it
waits for are paused, for ``dasktrain.paused-workers.grace`` (30 s) without a break,
:class:`~dasktrain.exceptions.WorkersPausedError` names the workers, their memory and limit,
and what to do; with ``dasktrain.paused-workers.restart`` the workers are restarted once
instead (their data is lost; the scheduler recomputes what it can).

Why the scheduler, through ``Client.run_on_scheduler``: it alone knows, in one round trip of a
few milliseconds, where each task of the work is and the status of every worker (the worker
tells it the moment it pauses; what a worker executes, it learns from its heartbeats).
``Client.scheduler_info()`` costs the same round trip but knows nothing of the tasks, so it
cannot tell "paused and in the way" from "paused beside a running worker that will take the
work"; asking the workers costs a round trip to each. Nothing is asked during the first step
of a wait (a fraction of a second), so short waits cost what :func:`distributed.wait` costs.
Where the scheduler refuses to run functions (``distributed.scheduler.pickle: False``),
``scheduler_info()`` is the fallback: stuck when every worker is paused.
"""

from __future__ import annotations

import logging
import time

from .. import _config, _malloc
from ..exceptions import WorkersPausedError

logger = logging.getLogger(__name__)

__all__ = ["StallWatch", "grace_seconds"]

#: At most this many tasks of a work are looked at per check (a graph's pending part).
_MAX_TASKS = 200_000
_MB = 2**20


def _seconds(value):
    from dask.utils import parse_timedelta

    return float(parse_timedelta(value, default="seconds"))


def grace_seconds():
    """``dasktrain.paused-workers.grace`` in seconds."""
    return _seconds(_config.get("paused-workers.grace", "30s"))


def _interval(grace):
    """How often a wait looks at the work: often enough to raise soon after the grace."""
    return min(1.0, max(0.05, grace / 4))


# -------------------------------------------------------------------------------- the question
def _scheduler_look():
    """The function the scheduler runs: ``(pending, {paused address: figures})``.

    Nested, so that it travels by value: the scheduler needs no dasktrain.
    """

    def figures(blockers):
        return {
            ws.address: {
                "memory": ws.memory.process,
                "data": ws.memory.managed,
                "limit": ws.memory_limit,
                "nthreads": ws.nthreads,
            }
            for ws in blockers
        }

    def blocked_by(ts, workers, any_running, running, paused):
        """None when task ``ts`` can run (or might: between two states), else the paused
        workers it waits for."""
        ws = ts.processing_on
        if ts.state == "processing" and ws is not None:
            # A paused worker finishes what it runs: only a task not started is stuck.
            if ws.status == running or ts in ws.executing or ts in ws.long_running:
                return None
            return {ws}
        if ts.state not in ("queued", "no-worker"):
            return None
        allowed = ts.worker_restrictions
        if not allowed and any_running:
            return None
        need = [workers[a] for a in allowed if a in workers] if allowed else workers.values()
        if any(w.status == running for w in need):
            return None
        return {w for w in need if w.status == paused}

    def look(dask_scheduler, keys, limit, allowed):
        from distributed.core import Status

        tasks, workers = dask_scheduler.tasks, dask_scheduler.workers
        if not keys:  # data about to be sent to one of ``allowed`` (None: any worker)
            need = [workers[a] for a in allowed if a in workers] if allowed else workers.values()
            if any(ws.status == Status.running for ws in need):
                return 1, {}
            return 1, figures({ws for ws in need if ws.status == Status.paused})
        any_running = any(ws.status == Status.running for ws in workers.values())
        seen, stack, blockers, pending = set(), list(keys), set(), 0
        while stack:
            key = stack.pop()
            ts = tasks.get(key)
            if key in seen or ts is None or ts.state in ("memory", "erred", "forgotten"):
                seen.add(key)
                continue
            seen.add(key)
            pending += 1
            if len(seen) > limit:
                return pending, {}  # too large to tell: never raise on a guess
            if ts.state == "waiting":
                stack.extend(d.key for d in ts.dependencies)
                continue
            found = blocked_by(ts, workers, any_running, Status.running, Status.paused)
            if found is None:
                return pending, {}
            blockers |= found
        return pending, figures(blockers)

    return look


def _stuck_on(client, keys, workers=None):
    """``(pending, paused)`` of the work ``keys``: its unfinished tasks, and the paused
    workers it waits for (``{}`` when some task can still run). Without keys: data about to
    be sent (a scatter) to any of ``workers`` (None: any worker)."""
    allowed = sorted(workers) if workers else None
    try:
        return client.run_on_scheduler(
            _scheduler_look(), keys=list(keys), limit=_MAX_TASKS, allowed=allowed
        )
    except Exception:  # noqa: BLE001 - a scheduler that runs no functions: the coarse view
        logger.debug("could not look at the work on the scheduler", exc_info=True)
    from .client import scheduler_workers

    found = {a: w for a, w in scheduler_workers(client).items() if not allowed or a in allowed}
    if not found or any(w.get("status") != "paused" for w in found.values()):
        return max(1, len(keys)), {}
    return max(1, len(keys)), {
        a: {
            "memory": (w.get("metrics") or {}).get("memory", 0),
            "data": (w.get("metrics") or {}).get("managed_bytes", 0),
            "limit": w.get("memory_limit", 0),
            "nthreads": w.get("nthreads", 1),
        }
        for a, w in found.items()
    }


class StallWatch:
    """The clock of one wait: raises once its work has been stuck behind paused workers.

    Parameters
    ----------
    client : distributed.Client
    what : str, optional
        What waits, for the message (``"KMeans(engine='dask').fit"``).
    """

    def __init__(self, client, what=None):
        self.client = client
        self.what = what
        self.grace = grace_seconds()
        self.restart = bool(_config.get("paused-workers.restart", False))
        self.interval = _interval(self.grace)
        self._since = None
        self._pending = None
        self._restarted = []

    def check(self, keys):
        """Look at the work ``keys`` once; raise or restart when it has been stuck too long.

        Raises
        ------
        WorkersPausedError
            When no task of the work could run for the grace period, because the workers it
            needs are paused (and restarting them is not asked for, or did not help).
        """
        keys = list(keys)
        if keys:
            self._judge(keys, *_stuck_on(self.client, keys))

    def check_sending(self, workers=None):
        """As :meth:`check`, for data about to be sent to one of ``workers`` (None: any)."""
        return self._judge([], *_stuck_on(self.client, [], workers))

    def _judge(self, keys, pending, paused):
        """True while stuck (not yet for the grace period); raise or restart after it."""
        now = time.monotonic()
        # Any task of the work finished since the last look: it moves, whatever the status.
        moved = self._pending is not None and pending < self._pending
        self._pending = pending
        if not paused or moved:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since < self.grace:
            return True
        if self.restart and not self._restarted:
            self._restart_workers(paused)
            self._since = None
            return True
        raise WorkersPausedError(self._message(keys, paused, now - self._since))

    def _restart_workers(self, paused):
        addresses = sorted(paused)
        logger.warning(
            "%s: worker(s) %s paused for memory for %.0f s; restarting them "
            "(dasktrain.paused-workers.restart; the data they held is lost and recomputed "
            "where it can be)",
            self.what or "a dask computation",
            ", ".join(addresses),
            self.grace,
        )
        try:
            # The nannies copy their allocator variables into this process's environment.
            with _malloc.environ_kept():
                self.client.restart_workers(addresses, raise_for_error=False)
        except Exception:  # noqa: BLE001 - said in the error, should they pause again
            logger.warning("could not restart %s", addresses, exc_info=True)
        self._restarted = addresses

    def _message(self, keys, paused, waited):
        what = self.what or "a dask computation"
        fresh = _ask_workers(self.client, sorted(paused))
        named = "; ".join(_describe(a, {**paused[a], **fresh.get(a, {})}) for a in sorted(paused))
        again = (
            f" They were restarted once already ({', '.join(self._restarted)}) and paused "
            "again: the work itself needs more memory than they have."
            if self._restarted
            else ""
        )
        return (
            f"{what} cannot go on: {_work(keys)} waited {waited:.0f} s "
            f"for worker(s) paused for memory, which start no task until their memory falls: "
            f"{named}.{again} The memory is in use (it was not handed back), so it will not "
            "fall by itself. Give each worker more memory (dasktrain.connect(memory_limit=...) "
            "or fewer workers per machine), fewer threads per worker (each running task holds "
            "its own memory), smaller chunks (dasktrain.images.chunk-size, or rechunk your "
            "arrays), or release what you keep on the cluster (persisted arrays, futures); or "
            "let dasktrain restart paused workers, losing their data: dask.config.set("
            "{'dasktrain.paused-workers.restart': True}). Waited "
            f"dasktrain.paused-workers.grace = {self.grace:g} s."
        )


def _ask_workers(client, addresses):
    """The workers' own figures (the scheduler's lag by a heartbeat), ``{}`` if they cannot
    answer."""

    def figures(dask_worker):  # nested: travels by value
        mm = dask_worker.memory_manager
        return {
            "memory": dask_worker.monitor.get_process_memory(),
            "limit": mm.memory_limit,
            "pause": mm.memory_pause_fraction,
        }

    try:
        return client.run(figures, workers=addresses, on_error="return")
    except Exception:  # noqa: BLE001 - the scheduler's figures are said instead
        logger.debug("could not ask %s for their memory", addresses, exc_info=True)
        return {}


def _describe(address, f):
    if not isinstance(f, dict):
        f = {}
    memory, limit = f.get("memory") or 0, f.get("limit") or 0
    text = f"{address} (memory {memory / _MB:,.0f} MiB"
    text += f" of its {limit / _MB:,.0f} MiB limit" if limit else " (no limit)"
    if f.get("pause"):
        text += f", pauses at {f['pause']:.0%}"
    if f.get("data"):
        text += f"; {f['data'] / _MB:,.0f} MiB of it data it holds"
    if f.get("nthreads"):
        text += f"; {f['nthreads']} thread(s)"
    return text + ")"


def _work(keys):
    """What waits: ``its tasks (kmeans-lloyd x 4, ...) have`` or ``its data has``."""
    return f"its tasks ({_prefixes(keys)}) have" if keys else "the data it sends has"


def _prefixes(keys):
    """``kmeans-lloyd x 4, ...``: what the waiting tasks do, from their readable keys."""
    from dask.utils import key_split

    counts = {}
    for k in keys:
        name = key_split(k)
        counts[name] = counts.get(name, 0) + 1
    shown = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
    text = ", ".join(f"{n} x {c}" for n, c in shown)
    return text + (", ..." if len(counts) > len(shown) else "")
