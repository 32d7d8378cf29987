"""``dasktrain info``: versions, CPUs, GPUs and (optionally) the cluster."""

from __future__ import annotations

import os
import platform
import sys

__all__ = ["add_parser", "run"]

# Distributions reported by `dasktrain info`, read from package metadata: nothing is imported,
# so a missing (or heavy) torch / tensorflow costs nothing here.
_PACKAGES = (
    "dasktrain",
    "numpy",
    "pandas",
    "dask",
    "distributed",
    "dask-ml",
    "scikit-learn",
    "scikit-image",
    "xgboost",
    "pillow",
    "psutil",
    "bokeh",
    "torch",
    ("tensorflow", "tensorflow", "tensorflow-cpu", "tensorflow-gpu"),
    "dask-cuda",
    "nvidia-ml-py",
    "asv",
)


def _version(*dists):
    """Version of the first installed distribution among ``dists`` (None when none is)."""
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _print_cluster(address):
    from .._dask import scheduler_workers
    from ..cluster import connect, dashboard_link

    client = connect(address)
    try:
        workers = scheduler_workers(client)
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        mem = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
        print(f"scheduler    {client.scheduler.address}")
        print(f"workers      {len(workers)} ({threads} threads, {mem / 2**30:.1f} GiB limit)")
        print(f"dashboard    {client.dashboard_link}")
        page = dashboard_link(client, warn=False)
        print(
            f"live page    {page or 'none: start the scheduler with --preload dasktrain.dashboard'}"
        )
    finally:
        client.close()  # a client on a remote scheduler: the cluster keeps running


def run(args) -> int:
    """Handler of ``dasktrain info``; returns 0."""
    import psutil

    from .._compat import cpu_count, gpu_count

    print(f"python       {platform.python_version()} ({sys.executable})")
    print(f"platform     {platform.platform()}")
    for entry in _PACKAGES:
        # An entry is a distribution name, or (label, dist, dist...) for packages published
        # under several names (tensorflow-cpu installs the `tensorflow` module).
        label, *dists = (entry, entry) if isinstance(entry, str) else entry
        v = _version(*dists)
        if v is not None or label in ("torch", "tensorflow", "xgboost"):
            print(f"{label:<12} {v or 'not installed'}")
    print(f"cpus         {cpu_count()} usable ({os.cpu_count()} on the machine)")
    print(f"memory       {psutil.virtual_memory().total / 2**30:.1f} GiB")
    print(f"gpus         {gpu_count()}")
    if args.scheduler:
        _print_cluster(args.scheduler)
    return 0


def add_parser(subparsers) -> None:
    """Add ``dasktrain info`` to an argparse subparsers object."""
    p = subparsers.add_parser("info", help="versions, CPUs, GPUs and (optionally) the cluster")
    p.add_argument("--scheduler", metavar="ADDR", help="also describe the cluster at ADDR")
    p.set_defaults(func=run)
