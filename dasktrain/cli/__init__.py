"""The ``dasktrain`` command (also ``python -m dasktrain``).

One module per subcommand, each with ``add_parser(subparsers)`` (which creates its parser and
sets ``func``) and ``run(args)`` (which returns the exit code):

* :mod:`~dasktrain.cli.info`: versions, CPUs, GPUs and (optionally) the cluster;
* :mod:`~dasktrain.cli.images`: summarise an image folder;
* :mod:`~dasktrain.cli.demo`: the comparison on the built-in data set;
* :mod:`~dasktrain.cli.compare`: the comparison on a user's folder and cluster.

The subcommand modules import what they drive when they run, so ``dasktrain --help`` and
``dasktrain info`` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..exceptions import DasktrainError
from . import compare, demo, images, info

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: The subcommand modules, in help order.
SUBCOMMANDS = (info, images, demo, compare)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    from .. import __version__
    from .compare import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="dasktrain",
        description="Train image models on Dask and compare distributed against local runs.",
        epilog="examples:\n"
        "  dasktrain demo                  # the whole comparison on built-in data\n"
        "  dasktrain images chest_xray/    # what is in an image folder\n"
        "  dasktrain compare chest_xray/ --clusters 1 2\n"
        "  dasktrain info --scheduler tcp://10.0.0.5:8786\n"
        "'dasktrain COMMAND --help' shows each command's options and their defaults.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dasktrain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def _configure_logging(verbose):
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # distributed logs at INFO through its own handlers (set up when it is imported, also
        # in worker processes); a command line wants only its own output unless asked (-vv).
        import dask.config

        dask.config.set({"logging.distributed": "warning"})
        logging.getLogger("distributed").setLevel(logging.WARNING)


def main(argv=None) -> int:
    """Run the command line; return the exit code (0 ok, 1 problems found, 2 usage error, 3
    the machine stayed busy: no answer).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except DasktrainError as exc:
        print(f"dasktrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
