"""The local engine's threads: how many (``n_threads``) and the pool they run in.

Every step of the local engine that uses several cores (decoding image files, feature
extraction) runs whole pieces of its work side by side on one of these pools, one thread per
piece, as Dask's workers run chunks. The pools live as long as the process: their threads,
and the heaps glibc gave them, are reused from one call to the next.
"""

from __future__ import annotations

import numbers
import threading
from concurrent.futures import ThreadPoolExecutor

from .exceptions import ValidationError

__all__ = ["check_n_threads", "local_pool"]

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def check_n_threads(value: object) -> int:
    """``None`` -> this machine's CPU count, otherwise a positive integer."""
    if value is None:
        from ._compat import cpu_count

        return cpu_count()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValidationError(f"n_threads={value!r} must be None or an integer >= 1.")
    return int(value)


def local_pool(n_threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``n_threads`` threads (named ``dasktrain-local``)."""
    with _POOLS_LOCK:
        if n_threads not in _POOLS:
            _POOLS[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="dasktrain-local")
        return _POOLS[n_threads]
