"""A worker's freed memory handed back to the OS, so Dask's memory limits see what is in use.

The workers :func:`dasktrain.connect` starts keep freed buffers in their heap (no page faults
per batch, see :mod:`dasktrain._malloc`). Dask decides to spill, pause and restart a worker
from its process memory, which would then count those buffers as used: a worker paused at
80% would wait for memory that only ``malloc_trim`` can give back, and never resume.
:class:`ReleaseMemory` gives it back at the moments that matter: whenever the process passes
a mark below Dask's own thresholds, and once after the worker has been idle for a moment
(so the dashboard shows the memory in use between steps). Nothing is released when glibc
holds little freed memory, so a worker busy near its limit with memory it really uses does
not trim in a loop.
"""

from __future__ import annotations

import logging
import time

from distributed.diagnostics.plugin import WorkerPlugin

from .. import _config, _malloc

logger = logging.getLogger(__name__)

__all__ = ["ReleaseMemory"]

# Less freed memory than this is not worth a malloc_trim (it walks the whole heap).
_WORTH = 32 * 2**20


class ReleaseMemory(WorkerPlugin):
    """Worker plugin: hand freed heap memory back (``malloc_trim``) past a mark or when idle.

    :func:`dasktrain.connect` registers it on the clusters it starts. On a cluster of your
    own, start the workers with :func:`dasktrain.cluster.worker_environ`'s variables and call
    :func:`dasktrain.cluster.release_memory` (the deploying guide shows both).

    Parameters
    ----------
    mark : float, optional
        Fraction of the worker's memory limit above which freed memory is released; default
        ``dasktrain.malloc.release-at`` (0.5), and never above 0.9 of the worker's own
        target, spill or pause fraction.
    idle : str or float, optional
        Release once after the worker has run no task for this long; default
        ``dasktrain.malloc.release-idle`` (``"1s"``).

    Attributes
    ----------
    releases : int
        How many times memory was released (on the worker's copy of the plugin).
    """

    name = "dasktrain-release-memory"

    def __init__(self, *, mark: float | None = None, idle: float | str | None = None) -> None:
        self.mark = mark
        self.idle = idle

    def setup(self, worker):
        from dask.utils import parse_timedelta
        from tornado.ioloop import PeriodicCallback

        self._worker = worker
        self._mark = self._effective_mark(worker)
        idle = self.idle if self.idle is not None else _config.get("malloc.release-idle")
        self._idle = parse_timedelta(idle, default="s")
        self._busy_at = time.monotonic()
        self._idle_done = False
        self._next_at = 0.0
        self.releases = 0
        # In step with Dask's own memory monitor (distributed.worker.memory.monitor-interval).
        interval = getattr(worker.memory_manager, "memory_monitor_interval", None) or 0.1
        pc = PeriodicCallback(self._check, max(10, int(1000 * interval)))
        worker.periodic_callbacks[self.name] = pc
        pc.start()

    def teardown(self, worker):
        pc = worker.periodic_callbacks.pop(self.name, None)
        if pc is not None:
            pc.stop()

    def _effective_mark(self, worker):
        mark = self.mark if self.mark is not None else _config.get("malloc.release-at")
        mm = worker.memory_manager
        fractions = [
            getattr(mm, f"memory_{k}_fraction", False) for k in ("target", "spill", "pause")
        ]
        # Below Dask's own thresholds: released memory must not be spilled or paused for first.
        return min([float(mark)] + [0.9 * f for f in fractions if f])

    def _check(self):
        worker, now = self._worker, time.monotonic()
        if worker.state.executing_count:
            self._busy_at, self._idle_done = now, False
        limit = worker.memory_manager.memory_limit
        over = bool(limit) and worker.monitor.get_process_memory() > self._mark * limit
        idle = not self._idle_done and now - self._busy_at >= self._idle
        if not (over or idle) or now < self._next_at:
            return
        if idle:
            self._idle_done = True
        free = _malloc.free_bytes()
        if free is not None and free < _WORTH:
            self._next_at = now + 0.5  # the memory is in use: look again in a while
            return
        _malloc.release()
        self.releases += 1
        why = "over the mark" if over else "idle"
        logger.debug("released %s MiB of freed heap memory (%s)", free and free >> 20, why)
