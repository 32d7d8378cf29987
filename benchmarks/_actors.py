"""Issue 28, item 5: a KMeans pass through distributed's Actors against ``DirectGroup``.

``DirectGroup`` (``dasktrain/_dask/direct.py``) is a home-made channel: one long-running task
per worker keeps its row blocks and answers each pass over a socket of its own (a listener on
the client, an HMAC handshake, accept threads). Distributed's Actors offer the same shape with
Dask's own means: a stateful object on a worker, called from the client without the
scheduler, over distributed's comm (TLS included). If an Actor pass costs within 1.5x of a
direct pass, the channel goes; if not, the numbers go into its docstring.

Both hold the same scattered blocks (8 blocks of ``n x 20`` float64, two workers of one
thread); a pass is one call per worker that runs the kernel on each of its blocks and returns
the per-block results, combined on the client in block order. Contenders are interleaved (A B
A B ...), after a warm-up; medians of ``--passes`` passes per size::

    nice -n -10 .venv/bin/python benchmarks/_actors.py --n 200000 2000000
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import start_cluster, stop_cluster  # noqa: E402


class BlockHolder:
    """The Actor: a worker's row blocks, and one method that runs a pass over them."""

    def __init__(self, indices, offsets, *blocks):
        self.indices, self.offsets, self.blocks = indices, offsets, blocks

    def run(self, func, kwargs):
        return [
            func(b, None, block_index=i, row_offset=o, **kwargs)
            for i, o, b in zip(self.indices, self.offsets, self.blocks)
        ]


def _noop(X, w, *, block_index, row_offset, C):
    return None


def _actors(client, futures, offsets):
    """One ``BlockHolder`` per worker, on the worker that holds its blocks (no transfer)."""
    who = client.who_has(futures)
    mine = {}
    for i, f in enumerate(futures):
        mine.setdefault(who[f.key][0], []).append(i)
    actors = []
    for worker, idx in mine.items():
        blocks = [futures[i] for i in idx]
        offs = [int(offsets[i]) for i in idx]
        fut = client.submit(BlockHolder, idx, offs, *blocks, actor=True, workers=[worker])
        actors.append((idx, fut.result()))
    return actors


def _actor_pass(actors, n_blocks, func, kwargs):
    calls = [(idx, a.run(func, kwargs)) for idx, a in actors]
    out = [None] * n_blocks
    for idx, call in calls:
        for i, r in zip(idx, call.result()):
            out[i] = r
    return out


def _time(fn, passes):
    ts = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def measure(client, n, d=20, k=8, blocks=8, passes=50, rounds=5):
    """Median ms per pass, empty and Lloyd, direct and Actor, interleaved by rounds."""
    import dask.array as da

    from benchmarks.parity import kmeans_data
    from dasktrain._dask import BlockRunner
    from dasktrain.models._kmeans_blocks import assign_block

    X = kmeans_data(n, d, "two-blobs")
    pieces = np.array_split(X, blocks)
    offsets = np.cumsum([0] + [len(p) for p in pieces])
    futures = client.scatter(pieces)
    Xd = da.concatenate(
        [da.from_delayed(f, p.shape, dtype=p.dtype) for f, p in zip(futures, pieces)]
    )
    C = X[np.random.default_rng(0).choice(n, k, replace=False)].astype(np.float64)
    kernels = {"empty": (_noop, {"C": C}), "lloyd": (assign_block, {"C": C})}
    times = {(p, kn): [] for p in ("direct", "actor") for kn in kernels}
    with BlockRunner([Xd, None], client, direct="bench-actors") as runner:
        actors = _actors(client, futures, offsets)
        for func, kw in kernels.values():  # warm-up: starts the group, imports the kernels
            runner.map(func, **kw)
            _actor_pass(actors, blocks, func, kw)
        assert runner.path == "direct", runner.path
        for _ in range(rounds):
            for kn, (func, kw) in kernels.items():
                direct = functools.partial(runner.map, func, **kw)
                actor = functools.partial(_actor_pass, actors, blocks, func, kw)
                times["direct", kn] += _time(direct, passes // rounds)
                times["actor", kn] += _time(actor, passes // rounds)
        same = np.allclose(
            runner.map(assign_block, C=C)[0][0],
            _actor_pass(actors, blocks, assign_block, {"C": C})[0][0],
        )
    return {key: 1e3 * statistics.median(v) for key, v in times.items()}, same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--passes", type=int, default=50)
    args = parser.parse_args(argv)
    print("load average {:.2f} {:.2f} {:.2f} (start)".format(*os.getloadavg()), flush=True)
    cluster, client = start_cluster(2, 1)
    try:
        for n in args.n:
            med, same = measure(client, n, passes=args.passes)
            print(f"{n:,} rows x 20, 8 blocks, k=8, 2 workers x 1 thread (median ms per pass):")
            for kind in ("empty", "lloyd"):
                d, a = med["direct", kind], med["actor", kind]
                print(f"  {kind:6s} direct {d:8.2f}  actor {a:8.2f}  actor/direct {a / d:5.2f}x")
            print(f"  same per-block sums: {same}", flush=True)
            client.restart()
    finally:
        stop_cluster(cluster, client)
    print("load average {:.2f} {:.2f} {:.2f} (end)".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
