"""Your own workload in :func:`dasktrain.compare`: any callable ``(data, engine, client) -> dict``.

Here the workload is a PCA of the raw pixels, with scikit-learn on the local engine and
dask-ml on the dask engine. ``compare`` times it on both engines (warm-up excluded, repeats
interleaved), samples CPU and memory around it, and puts the metrics the callable returns
(the explained variance here) in the table next to the times::

    python examples/custom_workload.py
    python examples/custom_workload.py --components 32 --repeat 5 --out report/custom32/
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time

import numpy as np

import dasktrain
from dasktrain.datasets import make_xray_like


def pca_workload(data, engine, client, *, n_components=16):
    """PCA of the flattened images; returns the share of variance the components explain.

    ``data`` is the ImageSet given to ``compare``; ``engine`` is ``"local"`` or ``"dask"``;
    ``client`` is the comparison's Dask client (``None`` on the local engine). The returned
    ``train_time`` lets the table report the fit apart from the data preparation.
    """
    import dask.array as da

    X = data.X
    X = X.reshape((X.shape[0], -1))
    if engine == "local":
        from sklearn.decomposition import PCA

        if isinstance(X, da.Array):
            X = X.compute()
        X = np.asarray(X, dtype=np.float64)
        t0 = time.perf_counter()
        model = PCA(n_components=n_components, svd_solver="full").fit(X)
    else:
        from dask_ml.decomposition import PCA

        if not isinstance(X, da.Array):
            # Send the pixels to the workers once, then let dask-ml work chunk by chunk.
            X = da.from_array(X, chunks=(max(1, X.shape[0] // 4), -1))
        X = client.persist(X.astype(np.float64).rechunk({1: -1}))
        t0 = time.perf_counter()
        model = PCA(n_components=n_components, svd_solver="full").fit(X)
    return {
        "train_time": time.perf_counter() - t0,
        "explained_variance": float(np.sum(model.explained_variance_ratio_)),
    }


# The quality column of the table (otherwise the first metric other than train_time).
pca_workload.metric = "explained_variance"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="image folder (default: built-in synthetic data)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="local cluster workers (1 thread each)")
    p.add_argument("--size", type=int, default=32, help="images are resized to SIZE x SIZE")
    p.add_argument("--n-per-class", type=int, default=200, help="built-in data: images per class")
    p.add_argument("--components", type=int, default=16, help="PCA components")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per engine")
    p.add_argument("--out", default="report/custom", help="directory for the report")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # A named partial keeps the workload's name in the table and fixes its parameters.
    workload = functools.update_wrapper(
        functools.partial(pca_workload, n_components=args.components), pca_workload
    )
    with contextlib.ExitStack() as stack:
        folder = args.folder
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dasktrain-custom-"))
            make_xray_like(folder, n_per_class=args.n_per_class, size=args.size, seed=args.seed)
        images = dasktrain.read_images(folder, size=(args.size, args.size), color="gray")
        print(images)

        client = stack.enter_context(
            dasktrain.connect(args.scheduler, n_workers=args.workers, threads_per_worker=1)
        )
        print(f"dashboard: {client.dashboard_link}")
        results = dasktrain.compare(
            [workload], data=images, engines=("local", "dask"), repeat=args.repeat, client=client
        )
    print(results.to_string())  # results.table, formatted
    results.save(args.out)
    print(f"\nreport written to {args.out}/report.html")
    return results


if __name__ == "__main__":
    main()
