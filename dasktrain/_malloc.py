"""glibc's allocator, set for work with large temporaries: one home for every process's setting.

Why
---
glibc serves every allocation above its mmap threshold with a fresh ``mmap`` and unmaps it on
``free``. The threshold is 128 kB as soon as any ``MALLOC_*`` setting is made (Dask's nanny
sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker) and at most 32 MB otherwise, so a CNN's
activations (a few MB to hundreds of MB per batch) are faulted in page by page on every batch:
smallcnn on 128x128 chunks ran 650-1,200 img/s on one thread with 0.6-1.9 million minor page
faults per 4,096 images, and 1,700-2,300 img/s with none once both thresholds were raised
(``benchmarks/parity.py efficiency`` measures it). In a thread other than the main one
(every Dask task runs in one) raising the thresholds is not enough: a thread's own arena
grows in heaps of at most 64 MB, so larger buffers are still mapped. ``MALLOC_ARENA_MAX=1``
puts every thread on the main heap, and only works from a process's start.

So there are two tools here:

* :func:`process_environ`: the environment for a process dasktrain starts (the workers of
  :func:`dasktrain.connect`, DDP ranks): one arena, both thresholds at
  ``dasktrain.malloc.threshold`` (1 GiB). Freed memory then stays in the process until
  :func:`release` (``malloc_trim(0)``) hands it back, which a worker does whenever its memory
  passes a mark or it goes idle (:class:`dasktrain._dask.memory.ReleaseMemory`), so Dask's
  memory limits, spilling and pausing see what is really in use;
* :func:`large_buffers`: the local engine's work in the caller's process, with the thresholds
  raised while it runs and, afterwards, set to the values glibc's own dynamic threshold grows
  to (32 MB / 64 MB) and the freed memory handed back. A process started with ``MALLOC_*`` or
  ``GLIBC_TUNABLES=glibc.malloc.*`` of its own is left as it is, and
  ``dasktrain.malloc.local: False`` turns it off.

On other C libraries (macOS, musl) nothing is changed and nothing is reported as changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import threading
from collections.abc import Mapping

from . import _config

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_NAMES",
    "process_environ",
    "threshold",
    "own_settings",
    "large_buffers",
    "release",
    "free_bytes",
    "put_back",
    "remember_own",
]

#: the variables :func:`process_environ` sets (glibc reads them once, at process start)
ENV_NAMES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# What glibc's dynamic thresholds grow to on a 64-bit machine (DEFAULT_MMAP_THRESHOLD_MAX and
# twice that): the local engine leaves the caller's process with these afterwards.
_GROWN_MMAP = 32 * 2**20
_GROWN_TRIM = 2 * _GROWN_MMAP
# Variables by which a process chose its own thresholds or arenas (not the debugging ones).
_OWN = ENV_NAMES + ("MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "MALLOC_ARENA_TEST")


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc's handle, or None on another C library (then nothing here changes anything)."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not version or not version.startswith("glibc"):
        return None
    try:
        lib = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    return lib


def threshold():
    """``dasktrain.malloc.threshold`` in bytes: allocations below it stay in the heap."""
    from dask.utils import parse_bytes

    value = parse_bytes(_config.get("malloc.threshold"))
    # mallopt takes a C int; below 1 MiB it would be no better than Dask's own setting.
    return int(min(max(value, 2**20), 2**31 - 1))


def process_environ() -> dict[str, str]:
    """The ``MALLOC_*`` variables for a new process dasktrain starts ({} where not glibc).

    One arena, so a task thread's buffers live on the main heap; both thresholds at
    :func:`threshold`. Pair it with :func:`release` under memory pressure: freed memory is no
    longer given back by ``free``.
    """
    if _libc() is None:
        return {}
    value = str(threshold())
    return {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_MMAP_THRESHOLD_": value,
        "MALLOC_TRIM_THRESHOLD_": value,
    }


#: this process's own allocator variables, as they were when dasktrain last started a
#: cluster (put back after every spawn: see :func:`put_back`)
_ORIGINAL = {k: os.environ.get(k) for k in ENV_NAMES}


def remember_own(values: Mapping[str, str | None]) -> None:
    """Note this process's own ``values`` of :data:`ENV_NAMES` as a cluster starts."""
    _ORIGINAL.update({k: v for k, v in values.items() if k in ENV_NAMES})


def put_back(written: Mapping[str, str]) -> None:
    """Undo what a nanny wrote into ``os.environ``: ``written`` are its pre-spawn variables.

    distributed's nanny copies its pre-spawn variables (``MALLOC_*``) into ``os.environ`` of
    the process that runs it before it spawns a worker: at a cluster's start and again at every
    restart, its own after a crash included. Later clusters, process pools and subprocesses
    of this process would inherit them (a plain ``LocalCluster`` would start workers with
    :func:`process_environ`'s thresholds and no :class:`~dasktrain._dask.memory.ReleaseMemory`,
    since distributed prefers ``os.environ`` to its configuration). A variable still holding
    the value the nanny wrote gets back the one this process had when dasktrain last started a
    cluster (:func:`remember_own`); anything else was changed since by someone else and is
    left alone.
    """
    for k in ENV_NAMES:
        if k in written and os.environ.get(k) == written[k]:
            original = _ORIGINAL[k]
            if original is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = original


@functools.lru_cache(maxsize=1)
def own_settings():
    """The allocator settings this process was started with (``{}``: glibc's defaults).

    Read from ``/proc/self/environ``, the environment at exec: ``os.environ`` may have been
    changed since (a Dask nanny copies ``MALLOC_TRIM_THRESHOLD_`` into it before it spawns a
    worker) without changing this process's allocator.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        raw = b""
    env = dict(
        item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item
    )
    own = {k: env[k] for k in _OWN if k in env}
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        own["GLIBC_TUNABLES"] = env["GLIBC_TUNABLES"]
    if any(lib in env.get("LD_PRELOAD", "") for lib in ("jemalloc", "tcmalloc", "mimalloc")):
        own["LD_PRELOAD"] = env["LD_PRELOAD"]  # another allocator altogether
    return own


def release():
    """Hand the process's freed heap memory back to the OS (``malloc_trim(0)``).

    Returns True when glibc released something, False when there was nothing to release or
    this is not glibc.
    """
    lib = _libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def free_bytes():
    """Bytes freed but kept in the heap (``mallinfo2().fordblks``); None where unknown.

    This is what :func:`release` could hand back (less what sits in partly used pages).
    """
    lib = _libc()
    fn = getattr(lib, "mallinfo2", None) if lib is not None else None
    if fn is None:  # glibc < 2.33
        return None
    fn.restype = _MallInfo2
    return int(fn().fordblks)


_lock = threading.Lock()
_depth = 0
_said = False


def _local_enabled():
    if not _config.get("malloc.local"):
        return None
    lib = _libc()
    if lib is None:
        return None
    if own_settings():
        logger.debug("malloc: this process chose its own allocator settings %s", own_settings())
        return None
    return lib


@contextlib.contextmanager
def large_buffers():
    """Run the local engine's work with large temporaries kept in the heap (glibc only).

    Inside, allocations below :func:`threshold` are served from the heap and freed memory is
    kept for the next batch (no page faults per batch). Leaving the outermost block sets the
    thresholds to what glibc's dynamic threshold grows to by itself (32 MB mmap, 64 MB trim)
    and hands the freed memory back (:func:`release`). Nested and concurrent blocks share one
    count. Nothing is changed when ``dasktrain.malloc.local`` is False, the process was
    started with allocator settings of its own (:func:`own_settings`), or the C library is not
    glibc. In a thread other than the main one, buffers above 64 MB still come from ``mmap``
    (a thread's arena grows in heaps of at most 64 MB).
    """
    global _depth, _said
    lib = _local_enabled()
    if lib is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            value = threshold()
            lib.mallopt(_M_MMAP_THRESHOLD, value)
            lib.mallopt(_M_TRIM_THRESHOLD, value)
            if not _said:
                _said = True
                logger.info(
                    "malloc: buffers up to %d MiB stay in this process's heap while the local "
                    "engine runs (no page faults per batch); afterwards glibc's thresholds are "
                    "32/64 MiB and freed memory is handed back. dasktrain.malloc.local: False "
                    "turns this off.",
                    value >> 20,
                )
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_MMAP_THRESHOLD, _GROWN_MMAP)
                lib.mallopt(_M_TRIM_THRESHOLD, _GROWN_TRIM)
                lib.malloc_trim(0)
