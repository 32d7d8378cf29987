"""``dasktrain compare PATH``: the comparison on a user's folder and (optionally) clusters.

Also home of what ``dasktrain demo`` shares with it: the options and the presets (default and
``--small``); what both print is in :mod:`._output`. Every argument is checked
before a cluster starts; library warnings and messages go to ``OUT/dasktrain.log``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..exceptions import ValidationError
from ._output import LOG_NAME, Printer, finish

__all__ = [
    "add_parser",
    "run",
    "add_comparison_arguments",
    "run_comparison",
    "parse_clusters",
    "HelpFormatter",
]

#: The default demo: every workload at three sizes on the local engine and on local clusters
#: of 1 and 2 workers, three timed runs each after a warm-up: under 5 minutes on 2 cores.
DEFAULT = {"n_per_class": 400, "image_size": 64, "repeat": 3, "warmup": True}
#: ``--small``: seconds, for the test suite and a quick look (one size, one cluster, one run:
#: its verdicts say that no spread was measured).
SMALL = {"n_per_class": 12, "image_size": 32, "repeat": 1, "warmup": False}
SMALL_OPTIONS = {"epochs": 1, "n_estimators": 10, "mlp_max_iter": 50, "cv": 2, "batch_size": 32}
DEFAULT_OPTIONS: dict = {}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each option's default (unless its help already says it) and the
    examples as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if d is None or d is False or d == argparse.SUPPRESS or "default" in text:
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else d
        return f"{text} (default: {shown})"


def preset_for(args) -> dict:
    """The sizes of this run: :data:`SMALL` with ``--small``, else :data:`DEFAULT`."""
    return dict(SMALL if args.small else DEFAULT)


def _options(args, preset):
    opts = dict(SMALL_OPTIONS) if args.small else dict(DEFAULT_OPTIONS)
    opts["image_size"] = args.image_size or preset["image_size"]
    opts["backbone"] = args.backbone
    if args.epochs is not None:
        opts["epochs"] = args.epochs
    return opts


# --------------------------------------------------------------------------------------------
# Checking the arguments (before anything starts)
# --------------------------------------------------------------------------------------------
def parse_clusters(specs) -> dict | None:
    """``--clusters`` items -> the ``clusters=`` of :func:`dasktrain.compare`.

    ``N`` is a local cluster of N single-threaded workers (named ``dask-Nw``), ``gpu`` a local
    GPU cluster (``dask-gpu``), ``NAME=N``, ``NAME=gpu`` or ``NAME=ADDRESS`` the same under a
    name of one's own (``cluster-a=tcp://10.0.0.5:8786``).
    """
    if not specs:
        return None
    out: dict[str, int | str | dict] = {}
    for item in specs:
        name, _, value = item.rpartition("=") if "=" in item else ("", "", item)
        spec: int | str | dict
        if value.isdigit():
            spec = int(value)
            name = name or f"dask-{spec}w"
        elif value == "gpu":
            spec, name = {"gpu": True}, name or "dask-gpu"
        elif "://" in value or ":" in value:
            spec, name = value, name or value
        else:
            raise ValidationError(
                f"--clusters item {item!r} is not N, gpu, NAME=N, NAME=gpu or NAME=ADDRESS "
                "(e.g. --clusters 1 2, or --clusters a=tcp://10.0.0.5:8786 b=4)."
            )
        if name in out:
            raise ValidationError(f"--clusters names {name!r} twice.")
        out[name] = spec
    return out


def _load_prices(value):
    if value is None:
        return None
    p = Path(value)
    text = p.read_text() if p.exists() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"--prices {value!r} is neither a JSON file nor JSON text ({exc}); use e.g. "
            '\'{"local": 0.192, "dask": 0.384}\' (USD per hour per setup).'
        ) from exc


def _clusters(args):
    """The clusters the arguments ask for (None: one local cluster, the default)."""
    given = [x for x in ("scheduler", "workers") if getattr(args, x, None) is not None]
    if args.clusters and given:
        raise ValidationError(f"--clusters replaces --{given[0]}; pass one of them.")
    if args.scheduler is not None:
        return {"dask": args.scheduler}
    if args.workers is not None:
        if args.workers < 1:
            raise ValidationError(f"--workers={args.workers} must be >= 1.")
        return {"dask": args.workers}
    return parse_clusters(args.clusters)


def check_arguments(args, preset) -> dict:
    """Every option checked before a cluster starts; the keyword arguments of compare()."""
    from ..harness import check_output_dir, check_timeout

    # Before a cluster starts and anything runs: a bad --out used to fail after the whole run.
    check_output_dir(args.out, name="--out")
    check_timeout(args.timeout)
    if args.repeat is not None and args.repeat < 1:
        raise ValidationError(f"--repeat={args.repeat} must be >= 1.")
    if args.quiet_wait is not None and not args.quiet_wait >= 0:
        raise ValidationError(f"--quiet-wait={args.quiet_wait:g} must be >= 0 seconds.")
    if args.sizes is not None and min(args.sizes) < 1:
        raise ValidationError(f"--sizes={args.sizes} must all be >= 1.")
    clusters = _clusters(args)
    return {
        "workloads": list(args.workloads),
        "engines": tuple(args.engines),
        "repeat": args.repeat if args.repeat is not None else preset["repeat"],
        "clusters": clusters if "dask" in args.engines else None,
        "spark": args.spark_master if "spark" in args.engines else None,
        "prices": _load_prices(args.prices),
        "spot_discount": args.spot_discount,
        "sizes": args.sizes,
        "warmup": preset["warmup"] and not args.no_warmup,
        "options": _options(args, preset),
        "n_per_class": preset["n_per_class"],
        "out": args.out,
        "timeout": args.timeout,
        # None: the dasktrain.compare.* settings decide.
        "allow_busy": True if args.allow_busy else None,
        "quiet_wait": args.quiet_wait,
    }


def run_comparison(args, data, preset) -> int:
    """Run the comparison the arguments describe on ``data``; print it, save the report.

    Returns
    -------
    int
        The exit code: 1 when a workload errored, 3 when the machine stayed busy before the
        first run (nothing measured; ``--allow-busy`` measures anyway), else 0.
    """
    from ..exceptions import BusyMachineError
    from ..harness import compare

    kw = check_arguments(args, preset)
    log = Path(args.out) / LOG_NAME
    printer = Printer()
    t0 = time.perf_counter()
    try:
        results = compare(data=data, progress=printer, log=log, **kw)
    except BusyMachineError as exc:
        print(f"dasktrain {args.command}: no answer: {exc}", file=sys.stderr)
        return 3
    finally:
        printer.close()
    print(f"\nfinished in {time.perf_counter() - t0:.1f} s", flush=True)
    lines = sum(1 for _ in open(log, "rb")) if log.exists() else 0
    return finish(results, args.out, lines)


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------
def _add_machine_arguments(p) -> None:
    """The options for a busy machine (see :mod:`dasktrain.harness.measure.machine`)."""
    machine = p.add_argument_group("a busy machine (other programs using over half a core)")
    machine.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for a busy machine to calm down before the first run, then "
        "refuse it (default: 60; the dasktrain.compare.quiet-wait setting)",
    )
    machine.add_argument(
        "--allow-busy",
        action="store_true",
        help="measure on a busy machine anyway, and give verdicts from busy runs (the "
        "warning heads the answer)",
    )


def _add_where_arguments(p, demo) -> None:
    """The options that say where the dask engine runs."""
    where = p.add_argument_group("where the dask engine runs")
    where.add_argument(
        "--clusters",
        nargs="+",
        metavar="SPEC",
        default=None,
        help="several setups side by side: N (a local cluster of N workers), gpu, NAME=N, "
        "NAME=gpu or NAME=ADDRESS"
        + (
            " (default: 1 2, plus gpu when a GPU is visible; one local cluster with --small)"
            if demo
            else " (default: one local cluster of one worker per CPU)"
        ),
    )
    where.add_argument("--scheduler", metavar="ADDR", help="one running cluster's scheduler")
    where.add_argument(
        "--workers", type=int, default=None, help="one new local cluster of this many workers"
    )


def add_comparison_arguments(p, *, demo=False) -> None:
    """The options ``dasktrain demo`` and ``dasktrain compare`` share.

    The workload names and the engines are the harness's (imported here, when the parser is
    built: naming the harness imports no pandas, scikit-learn or torch).
    """
    from ..harness import BUILTIN, DEFAULT_ENGINES, DEFAULT_WORKLOADS, ENGINES

    p.add_argument("--out", default="report/", help="output folder of the report")
    _add_where_arguments(p, demo)
    what = p.add_argument_group("what runs")
    what.add_argument(
        "--workloads",
        nargs="+",
        default=list(DEFAULT_WORKLOADS),
        metavar="NAME",
        help=f"workloads to run: {', '.join(BUILTIN)} or all",
    )
    what.add_argument(
        "--engines",
        nargs="+",
        default=list(DEFAULT_ENGINES),
        choices=list(ENGINES),
        help="engines to run; spark needs pyspark (dasktrain[spark]) and Java, else its rows "
        "say why",
    )
    what.add_argument(
        "--spark-master",
        metavar="URL",
        default=None,
        help="Spark master for the spark engine (default: local[N], N = the cluster's threads)",
    )
    what.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed runs per workload, setup and size (default: 3; 1 with --small)",
    )
    what.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="data sizes (samples) to run at, for the crossover"
        + (
            " (default: 1/4, 1/2 and all of the training images; one size with --small)"
            if demo
            else " (default: one size, all the data)"
        ),
    )
    what.add_argument(
        "--image-size", type=int, default=None, help="image side in pixels (default: 64; 32 small)"
    )
    what.add_argument("--backbone", default="smallcnn", help="CNN trunk of the features step")
    what.add_argument(
        "--epochs", type=int, default=None, help="epochs of ddp_cnn (default: 12; 1 small)"
    )
    what.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    what.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time limit of each run; a run over it is reported as 'timeout' (default: none)",
    )
    what.add_argument("--small", action="store_true", help="tiny sizes, one run: seconds")
    _add_machine_arguments(p)
    cost = p.add_argument_group("cost")
    cost.add_argument("--prices", metavar="JSON", help="USD/hour per setup: a JSON file or text")
    cost.add_argument("--spot-discount", type=float, default=0.0, help="fraction off the prices")


_EXAMPLES = """examples:
  dasktrain compare chest_xray/ --sizes 500 1000 2000
  dasktrain compare chest_xray/ --clusters 1 2 4 --workloads kmeans xgboost ddp_cnn
  dasktrain compare chest_xray/ --clusters laptop=2 lab=tcp://10.0.0.5:8786 \\
      --prices '{"local": 0.1, "laptop": 0.1, "lab": 1.6}'
"""


def run(args) -> int:
    """Handler of ``dasktrain compare PATH``; returns the exit code."""
    from ..exceptions import WorkloadError
    from ..harness import image_root

    try:
        root = image_root(args.path)
    except WorkloadError:
        root = None  # compare() says what is wrong, with the other checks
    if root is not None and root != Path(args.path):
        # `dasktrain images PATH` counts every sub-folder: say which one is compared.
        print(f"images: {root} (the other folders of {args.path}, e.g. test/, are not read)")
    return run_comparison(args, args.path, preset_for(args))


def add_parser(subparsers) -> None:
    """Add ``dasktrain compare PATH`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "compare",
        help="compare local and dask on your image folder (and clusters)",
        description="Run the workloads on the local engine and on Dask, at one or more data "
        "sizes, and write the verdicts, the table and an HTML report.",
        epilog=_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "path",
        help="image folder with one sub-folder per class; PATH/train only when there is one "
        "(where dasktrain images PATH counts every sub-folder)",
    )
    add_comparison_arguments(p)
    p.set_defaults(func=run)
