"""Does the nanny's ``MALLOC_TRIM_THRESHOLD_=65536`` slow feature extraction in Dask workers?

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``). Setting any trim threshold also freezes glibc's
mmap threshold at 128 kB, so every larger temporary (a CNN's activations, a few MB each) is a
fresh mmap, page faults and a munmap. This probe runs the same extraction on two clusters of
2 workers x 1 thread that differ only in that variable, interleaved, and reports the times and
the workers' resident memory afterwards (what the trim threshold is there to keep low)::

    nice -n -10 python benchmarks/parity.py trim --n 4096 --backbone smallcnn
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from benchmarks._common import interleaved, stop_cluster

_VAR = "MALLOC_TRIM_THRESHOLD_"


def _cluster(trim):
    """2 workers x 1 thread; ``trim=False`` starts them without ``MALLOC_TRIM_THRESHOLD_``."""
    import dask
    from distributed import Client, LocalCluster

    env = {} if trim else {f"distributed.nanny.pre-spawn-environ.{_VAR}": None}
    if not trim:
        # A nanny started earlier in this process leaked the variable into os.environ, which
        # the next workers would inherit.
        os.environ.pop(_VAR, None)
    with dask.config.set(env):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="2GB",
        )
    return cluster, Client(cluster, set_as_default=False)


def _worker_env_and_rss(client):
    def probe():
        import psutil

        return os.environ.get(_VAR), psutil.Process().memory_info().rss

    return client.run(probe)


def main(argv=None):
    import dask.array as da

    from dasktrain.features import CNNFeatures

    p = argparse.ArgumentParser(prog="parity.py trim")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--side", type=int, default=128)
    p.add_argument("--backbone", default="smallcnn")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    print("load average {:.2f} {:.2f} {:.2f} (start)".format(*os.getloadavg()), flush=True)
    rng = np.random.default_rng(0)
    X = rng.random((a.n, a.side, a.side, 3), dtype=np.float32)
    # Start the cluster without the variable first: the other one sets it in os.environ.
    clusters = {"unset": _cluster(False), "nanny default": _cluster(True)}
    try:
        ext = CNNFeatures(a.backbone, engine="dask")
        fns, on = {}, {}
        for name, (_, cl) in clusters.items():
            on[name] = cl.persist(da.from_array(X, chunks=(256,) + X.shape[1:]))
            cl.gather(cl.futures_of(on[name]))

            def run(cl=cl, Xd=on[name]):
                return cl.compute(ext.transform(Xd, client=cl)).result()

            fns[name] = run
        same = float(np.abs(fns["unset"]() - fns["nanny default"]()).max())
        times = interleaved(fns, repeat=a.repeat, warmup=1)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{a.backbone} on {a.n} persisted images {a.side}x{a.side}, 2 workers x 1 thread")
        for name, (_, cl) in clusters.items():
            env = _worker_env_and_rss(cl)
            rss = ", ".join(f"{r / 2**20:.0f}" for _, r in env.values())
            print(
                f"  {name:14s} median {med[name]:7.3f} s (min {min(times[name]):.3f}, max "
                f"{max(times[name]):.3f})  {_VAR}={sorted({e for e, _ in env.values()})} "
                f" worker RSS MiB after: {rss}"
            )
        print(f"  nanny default / unset = {med['nanny default'] / med['unset']:.2f}x")
        print(f"  max |features difference| = {same:.2e}")
    finally:
        for cluster, client in clusters.values():
            stop_cluster(cluster, client)
    print("load average {:.2f} {:.2f} {:.2f} (end)".format(*os.getloadavg()))
