"""The machine's limit for one step, measured in the same run as the engines it judges.

Two numbers make every engine's figure mean something:

* **one core**: the step's work done by a plain process with one thread (no Dask, no pool),
  the throughput one core gives; an engine on ``c`` cores is at *per-core efficiency*
  ``(its throughput) / (c x one core)``;
* **the two-process ceiling**: the same work in two such processes side by side, over one.
  2.0 means two cores that do not disturb each other; on a shared host the second vCPU may
  give less (1.2-2.1x seen here for torch convolutions, 1.9-2.0x for numpy), which is why it
  is measured beside the engines, interleaved with them, never taken from a table.

The processes are spawned once and kept (their data built and the work run once before any
timing), started with what a worker :func:`dasktrain.connect` starts gets: one thread
(``OMP_NUM_THREADS=1``, torch's own count set by the work) and dasktrain's allocator
environment (:func:`dasktrain._malloc.process_environ`), so the reference is a fault-free
core. The work is named ``"module:function"`` with keyword arguments: ``function(**kwargs)``
runs in each process and returns the zero-argument callable to time (module-level and
importable, as a spawned process needs)::

    with Calibration("benchmarks._efficiency:features_work", backbone="smallcnn", n=4096) as cal:
        t1 = cal.one()  # seconds, one process alone
        t2 = cal.two()  # seconds until both processes finished the same work each
    ceiling = 2 * t1 / t2

``alone={...}`` gives the lone process other arguments than the pair: a DDP rank's step
with the global batch alone, against two with half the batch each.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import time

__all__ = ["Calibration", "per_core", "of_ceiling"]


def _serve(conn, work, kwargs):
    module, name = work.split(":")
    fn = getattr(importlib.import_module(module), name)(**kwargs)
    fn()  # warm: data built, model loaded, the heap grown to what the work needs
    conn.send("ready")
    while conn.recv():
        t0 = time.perf_counter()
        fn()
        conn.send(time.perf_counter() - t0)


@contextlib.contextmanager
def _environ(extra):
    before = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Calibration:
    """Two plain single-thread processes running ``work``: alone (:meth:`one`) and together
    (:meth:`two`). A context manager; the processes end on exit."""

    def __init__(self, work, *, alone=None, **kwargs):
        self.work, self.kwargs = work, kwargs
        # the lone process's arguments (None: a third process is not needed, the pair's first
        # process runs alone)
        self.alone = None if alone is None else {**kwargs, **alone}
        self._procs, self._pipes = [], []

    def __enter__(self):
        from dasktrain import _malloc

        ctx = mp.get_context("spawn")
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **_malloc.process_environ()}
        kwargs = [self.kwargs, self.kwargs] + ([self.alone] if self.alone is not None else [])
        with _environ(env):
            for kw in kwargs:
                a, b = ctx.Pipe()
                p = ctx.Process(target=_serve, args=(b, self.work, kw), daemon=True)
                p.start()
                self._procs.append(p)
                self._pipes.append(a)
        for a in self._pipes:
            if a.recv() != "ready":  # pragma: no cover - the child died and said why on stderr
                raise RuntimeError(f"calibration process for {self.work} did not start")
        return self

    def __exit__(self, *exc):
        for a in self._pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                a.send(0)
        for p in self._procs:
            p.join(10)
            if p.is_alive():
                p.kill()

    def one(self):
        """Seconds one process takes for the work (the ``alone`` work), alone on the machine."""
        lone = self._pipes[-1]
        lone.send(1)
        return lone.recv()

    def two(self):
        """Seconds until two processes side by side have each done the work once."""
        pair = self._pipes[:2]
        for a in pair:
            a.send(1)
        return max(a.recv() for a in pair)


def per_core(t_one, t_engine, cores):
    """Per-core efficiency: the engine's throughput over ``cores`` x one core's."""
    return t_one / (cores * t_engine)


def of_ceiling(t_one, t_two, t_engine):
    """The engine's throughput as a fraction of two plain processes' (the 2-core ceiling)."""
    return (t_one / t_engine) / (2 * t_one / t_two)
