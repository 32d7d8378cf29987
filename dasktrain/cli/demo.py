"""``dasktrain demo``: the comparison on the built-in X-ray-like data set.

Builds the data set in a temporary folder and runs read -> features -> kmeans, xgboost, logreg,
naive_bayes, mlp_cv and ddp_cnn on the local engine and on local clusters of 1 and 2 workers
(plus a GPU cluster when a GPU is visible), at three data sizes, so that the crossover and the
strong scaling come out of one run. It prints the verdicts and the table and writes the report.
It takes the options of ``dasktrain compare`` (:mod:`dasktrain.cli.compare`) and
``--n-per-class``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .._validation import check_positive_int
from .compare import HelpFormatter, add_comparison_arguments, preset_for, run_comparison

__all__ = ["add_parser", "run", "default_sizes", "default_clusters"]

#: Fraction of each class make_xray_like writes to test/ (the demo reads train/).
_TEST_FRACTION = 0.25


def default_sizes(n_per_class) -> list:
    """A quarter, a half and all of the training images of the built-in data set."""
    n_test = min(n_per_class - 1, max(1, int(round(n_per_class * _TEST_FRACTION))))
    train = 2 * (n_per_class - n_test)
    return sorted({max(2, train // 4), max(2, train // 2), train})


def default_clusters() -> dict:
    """Local clusters of 1 and 2 single-threaded workers, and a GPU cluster when a GPU and
    dask-cuda are there."""
    import importlib.util

    from .._compat import gpu_count

    out: dict[str, int | dict] = {"dask-1w": 1, "dask-2w": 2}
    if gpu_count() and importlib.util.find_spec("dask_cuda") is not None:
        out["dask-gpu"] = {"gpu": True}
    return out


def _check(args, sizes):
    check_positive_int(sizes["n_per_class"], "--n-per-class", minimum=2)
    check_positive_int(args.image_size or sizes["image_size"], "--image-size", minimum=16)


def run(args) -> int:
    """Handler of ``dasktrain demo``; returns the exit code (1 when a workload errored)."""
    from ..datasets import make_xray_like

    sizes = preset_for(args)
    if args.n_per_class is not None:
        sizes["n_per_class"] = args.n_per_class
    _check(args, sizes)
    if not args.small:
        if args.sizes is None:
            args.sizes = default_sizes(sizes["n_per_class"])
        if args.clusters is None and args.scheduler is None and args.workers is None:
            args.clusters = [f"{k}={v}" if isinstance(v, int) else f"{k}=gpu" for k, v in
                             default_clusters().items()]  # fmt: skip
    image_size = args.image_size or sizes["image_size"]
    with tempfile.TemporaryDirectory(prefix="dasktrain-demo-") as tmp:
        n = sizes["n_per_class"]
        root = make_xray_like(Path(tmp) / "chest_xray", n_per_class=n, size=image_size, seed=0)
        print(
            f"built-in data set: {root} ({n} images per class, {image_size}x{image_size})",
            flush=True,
        )
        return run_comparison(args, root, sizes)


_EXAMPLES = """examples:
  dasktrain demo                         # 3 sizes x local, 1 and 2 workers: about 3-5 minutes
  dasktrain demo --small                 # seconds: tiny data, one size, one cluster
  dasktrain demo --clusters 1 2 4 --repeat 3 --out report/
  dasktrain demo --workloads kmeans xgboost --sizes 200 400 800 1600 --n-per-class 1100
"""


def add_parser(subparsers) -> None:
    """Add ``dasktrain demo`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "demo",
        help="compare local and dask on built-in X-ray-like data and write a report",
        description="Build an X-ray-like image set and answer: is distributing each step "
        "worth it, from what size, on which setup, and why not when it is not?",
        epilog=_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    add_comparison_arguments(p, demo=True)
    p.add_argument(
        "--n-per-class",
        type=int,
        default=None,
        help="built-in images per class (default: 400; 12 with --small)",
    )
    p.set_defaults(func=run)
