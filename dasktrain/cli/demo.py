"""``dasktrain demo``: the comparison on the built-in X-ray-like data set.

Builds the data set in a temporary folder, starts a local cluster (printing its dashboard
link), runs read -> features -> kmeans, xgboost, logreg, naive_bayes, mlp_cv and ddp_cnn on
both engines with repeats, prints progress and the table, and writes the report. It takes the
options of ``dasktrain compare`` (:mod:`dasktrain.cli.compare`) and ``--n-per-class``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .compare import add_comparison_arguments, preset_for, run_comparison

__all__ = ["add_parser", "run"]


def run(args) -> int:
    """Handler of ``dasktrain demo``; returns the exit code (1 when a workload errored)."""
    from ..datasets import make_xray_like

    sizes = preset_for(args)
    if args.n_per_class is not None:
        sizes["n_per_class"] = args.n_per_class
    image_size = args.image_size or sizes["image_size"]
    with tempfile.TemporaryDirectory(prefix="dasktrain-demo-") as tmp:
        n = sizes["n_per_class"]
        root = make_xray_like(Path(tmp) / "chest_xray", n_per_class=n, size=image_size, seed=0)
        print(f"built-in data set: {root} ({n} images per class)", flush=True)
        return run_comparison(args, root, sizes)


def add_parser(subparsers) -> None:
    """Add ``dasktrain demo`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "demo", help="compare local and dask on built-in X-ray-like data and write a report"
    )
    add_comparison_arguments(p)
    p.add_argument("--n-per-class", type=int, default=None, help="built-in images per class")
    p.set_defaults(func=run)
