"""KMeans, local vs Dask: one call to :func:`dasktrain.compare`, a table and a report.

::

    python examples/kmeans_comparison.py                       # built-in data, 3 repeats
    python examples/kmeans_comparison.py --repeat 5 --out report/kmeans5/
    python examples/kmeans_comparison.py path/to/folder --scheduler tcp://10.0.0.5:8786

``compare`` runs a warm-up per engine (not counted), then the repeats interleaved
(local, dask, local, dask, ...), and reports medians with min/max, speedup, improvement %
= (t_local / t_dask - 1) x 100 and the clustering quality (silhouette, Davies-Bouldin) of each
engine, so a faster run that clusters worse is visible.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile

import dasktrain
from dasktrain.datasets import make_xray_like


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="image folder (default: built-in synthetic data)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="local cluster workers (1 thread each)")
    p.add_argument("--size", type=int, default=32, help="images are resized to SIZE x SIZE")
    p.add_argument("--n-per-class", type=int, default=200, help="built-in data: images per class")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per engine")
    p.add_argument("--out", default="report/kmeans", help="directory for the report")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = args.folder
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dasktrain-kmeans-"))
            make_xray_like(folder, n_per_class=args.n_per_class, size=args.size, seed=args.seed)
        images = dasktrain.read_images(folder, size=(args.size, args.size), color="gray")
        print(images)

        client = stack.enter_context(
            dasktrain.connect(args.scheduler, n_workers=args.workers, threads_per_worker=1)
        )
        print(f"dashboard: {client.dashboard_link}")
        results = dasktrain.compare(
            ["kmeans"], data=images, engines=("local", "dask"), repeat=args.repeat, client=client
        )
    print(results.to_string())  # results.table, formatted
    results.save(args.out)
    print(f"\nreport written to {args.out}/report.html")
    return results


if __name__ == "__main__":
    main()
