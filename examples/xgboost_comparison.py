"""XGBoost, local vs Dask: one call to :func:`dasktrain.compare`, a table and a report.

::

    python examples/xgboost_comparison.py                      # built-in data, 3 repeats
    python examples/xgboost_comparison.py --repeat 5 --out report/xgboost5/
    python examples/xgboost_comparison.py --sizes 100 200 400  # where does Dask start to win?

The local engine is ``xgboost.XGBClassifier`` on the same number of cores the Dask workers
use; the dask engine is ``xgboost.dask`` on those workers. Both get the same data, parameters
and seed, so the accuracy column should agree and the time columns say which is faster here.
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
    p.add_argument("--n-estimators", type=int, default=50, help="XGBoost trees")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per engine")
    p.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=None,
        help="also run at these numbers of images and report the crossover",
    )
    p.add_argument("--out", default="report/xgboost", help="directory for the report")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = args.folder
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dasktrain-xgb-"))
            make_xray_like(folder, n_per_class=args.n_per_class, size=args.size, seed=args.seed)
        images = dasktrain.read_images(folder, size=(args.size, args.size), color="gray")
        print(images)

        client = stack.enter_context(
            dasktrain.connect(args.scheduler, n_workers=args.workers, threads_per_worker=1)
        )
        print(f"dashboard: {client.dashboard_link}")
        extra = {"sizes": args.sizes} if args.sizes else {}
        results = dasktrain.compare(
            ["xgboost"],
            data=images,
            engines=("local", "dask"),
            repeat=args.repeat,
            client=client,
            options={"n_estimators": args.n_estimators},
            **extra,
        )
    print(results.to_string())  # results.table, formatted
    results.save(args.out)
    if args.sizes:
        print(results.crossover.to_string(index=False))
    print(f"\nreport written to {args.out}/report.html")
    return results


if __name__ == "__main__":
    main()
