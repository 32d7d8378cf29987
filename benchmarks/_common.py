"""Shared helpers for the asv suite and the benchmark scripts.

Sizes are small by default so `asv run --quick` finishes on 2 cores; set
``DASKTRAIN_BENCH_LARGE=1`` to run the sizes the issues quote.
"""

from __future__ import annotations

import os
import statistics
import time

LARGE = os.environ.get("DASKTRAIN_BENCH_LARGE", "") not in ("", "0", "false", "no")


def size(small, large):
    """Pick the small size, or the large one when DASKTRAIN_BENCH_LARGE is set."""
    return large if LARGE else small


def start_cluster(n_workers=2, threads_per_worker=1, memory_limit="auto"):
    """A real local cluster as :func:`dasktrain.connect` starts it (processes, loopback, its
    allocator settings and memory plugin): ``(cluster, client)``."""
    import dasktrain

    client = dasktrain.connect(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address="127.0.0.1:0",
        gpu=False,
    )
    client.wait_for_workers(n_workers)
    return client._dasktrain_cluster, client


def stop_cluster(cluster, client):
    """Close a client and its cluster; leaves no worker processes behind."""
    client.close()  # a client of dasktrain.connect() closes its cluster
    if cluster is not None and cluster.status.name != "closed":
        cluster.close()


def median_time(fn, repeat=5, warmup=1):
    """Median, min and max wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def interleaved(fns, repeat=5, warmup=1):
    """Time several callables interleaved (A B A B ...) so machine drift hits all of them.

    Returns ``{name: [seconds, ...]}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out
