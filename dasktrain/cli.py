"""The ``dasktrain`` command (also ``python -m dasktrain``).

Subcommands are registered in :data:`_SUBCOMMANDS` as ``(name, add_parser)`` pairs. Each
``add_parser(subparsers)`` creates its parser and sets ``func`` (called with the parsed
arguments, returning an exit code). :func:`register` adds one or replaces one of the same name,
so later modules can provide ``demo`` and ``compare`` without editing the others.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys

from .exceptions import DasktrainError

__all__ = ["main", "register"]

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


# --------------------------------------------------------------------------- info


def _info(args):
    import psutil

    from ._compat import cpu_count, gpu_count

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
        from ._dask import scheduler_workers
        from .cluster import connect

        client = connect(args.scheduler)
        try:
            workers = scheduler_workers(client)
            threads = sum(w.get("nthreads", 0) for w in workers.values())
            mem = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
            print(f"scheduler    {client.scheduler.address}")
            print(f"workers      {len(workers)} ({threads} threads, {mem / 2**30:.1f} GiB limit)")
            print(f"dashboard    {client.dashboard_link}")
        finally:
            client.close()  # a client on a remote scheduler: the cluster keeps running
    return 0


def _add_info(sub):
    p = sub.add_parser("info", help="versions, CPUs, GPUs and (optionally) the cluster")
    p.add_argument("--scheduler", metavar="ADDR", help="also describe the cluster at ADDR")
    p.set_defaults(func=_info)


# --------------------------------------------------------------------------- images


def _images(args):
    from .images import scan_images

    classes = args.classes.split(",") if args.classes else None
    s = scan_images(args.path, classes=classes, decode=args.decode)
    total = sum(s["counts"].values())
    print(f"{args.path}: {total} readable image(s) in {len(s['classes'])} classes")
    width = max(len(c) for c in s["classes"])
    for c, k in s["counts"].items():
        print(f"  {c:<{width}} {k:>7}")
    print("formats: " + ", ".join(f"{k} x{v}" for k, v in s["formats"].most_common()))
    print("modes:   " + ", ".join(f"{k} x{v}" for k, v in s["modes"].most_common()))
    sizes = s["sizes"].most_common()
    shown = ", ".join(f"{w}x{h} x{v}" for (w, h), v in sizes[:10])
    print(f"sizes:   {shown}" + (f" (+{len(sizes) - 10} more)" if len(sizes) > 10 else ""))
    bad = list(s["unreadable"])
    if bad:
        print(f"unreadable: {len(bad)} file(s)")
        for p, reason in bad:
            print(f"  {p}: {reason}")
    else:
        hint = "" if args.decode else " (headers checked; --decode to decode)"
        print("unreadable: none" + hint)
    return 1 if bad else 0


def _add_images(sub):
    p = sub.add_parser(
        "images", help="summarise an image folder: counts per class, unreadable files, sizes, modes"
    )
    p.add_argument("path", help="folder with one sub-folder per class (at any depth)")
    p.add_argument("--classes", help="comma-separated class names to count, in order")
    p.add_argument(
        "--decode", action="store_true", help="decode every file too (slower, finds truncation)"
    )
    p.set_defaults(func=_images)


#: ``(name, add_parser)`` of every subcommand, in help order. Use :func:`register` to change it.
_SUBCOMMANDS = [("info", _add_info), ("images", _add_images)]


def register(name, add_parser):
    """Add a subcommand, or replace the one called ``name``.

    ``add_parser(subparsers)`` must create the parser (``subparsers.add_parser(name, ...)``) and
    set ``func`` with ``set_defaults(func=...)``; ``func(args)`` returns the exit code.
    """
    for i, (existing, _) in enumerate(_SUBCOMMANDS):
        if existing == name:
            _SUBCOMMANDS[i] = (name, add_parser)
            return
    _SUBCOMMANDS.append((name, add_parser))


def build_parser():
    """The argument parser with every registered subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dasktrain",
        description="Train image models on Dask and compare distributed against local runs.",
    )
    parser.add_argument("--version", action="version", version=f"dasktrain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _, add_parser in _SUBCOMMANDS:
        add_parser(sub)
    return parser


def main(argv=None):
    """Run the command line; return the exit code (0 ok, 1 problems found, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # distributed logs at INFO through its own handlers (set up when it is imported, also
        # in worker processes); a command line wants only its own output unless asked (-vv).
        import dask.config

        dask.config.set({"logging.distributed": "warning"})
        logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except DasktrainError as exc:
        print(f"dasktrain {args.command}: error: {exc}", file=sys.stderr)
        return 2


# demo and compare live beside the comparison machinery they drive (dasktrain/_demo.py).
from ._demo import add_compare_parser, add_demo_parser  # noqa: E402

register("demo", add_demo_parser)
register("compare", add_compare_parser)
