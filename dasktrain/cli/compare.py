"""``dasktrain compare PATH``: the comparison on a user's folder and (optionally) cluster.

Also home of what ``dasktrain demo`` shares with it: the options, the presets (default and
``--small``), the progress lines and the final table. Each run is printed as it finishes, then
the table, and the report is written to ``--out``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ..exceptions import ValidationError

__all__ = ["add_parser", "run", "add_comparison_arguments", "run_comparison", "DEFAULT_WORKLOADS"]

DEFAULT_WORKLOADS = (
    "read",
    "features",
    "kmeans",
    "xgboost",
    "logreg",
    "naive_bayes",
    "mlp_cv",
    "ddp_cnn",
)

#: Sizes of the default demo: about 1-2 minutes on an idle 2-core machine, 3 repeats.
DEFAULT = {"n_per_class": 400, "image_size": 128, "repeat": 3, "warmup": True}
#: ``--small``: seconds, for the test suite and a quick look.
SMALL = {"n_per_class": 12, "image_size": 32, "repeat": 1, "warmup": False}
SMALL_OPTIONS = {"epochs": 1, "n_estimators": 10, "mlp_max_iter": 50, "cv": 2, "batch_size": 32}
#: The demo's DDP job trains 3 epochs: more would dominate the run time on 2 CPU cores.
DEFAULT_OPTIONS = {"epochs": 3}


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


def _printer(out=None):
    """The ``progress`` callback of :func:`dasktrain.compare`: one line per finished run."""
    out = out or sys.stdout
    t0 = time.perf_counter()

    def progress(ev):
        rec = ev["record"]
        what = "warm-up" if ev["event"] == "warmup" else f"run {ev['repeat']}"
        t = rec.get("time", math.nan)
        secs = "" if t is None or (isinstance(t, float) and math.isnan(t)) else f"{t:8.3f} s"
        status = rec["status"]
        if status != "ok":
            status += f": {str(rec.get('error'))[:100]}"
        print(
            f"[{ev['index']:>3}/{ev['total']}] {time.perf_counter() - t0:6.1f}s  "
            f"{ev['workload']:<12} {ev['engine']:<6} {what:<8} {secs:>10}  {status}",
            file=out,
            flush=True,
        )

    return progress


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
            '\'{"local": 0.192, "dask": 0.384}\' (USD per hour per engine).'
        ) from exc


def _finish(results, out, stream=None):
    """Print the table and crossover, save the report; the exit code (1: a workload errored)."""
    stream = stream or sys.stdout
    print("", file=stream)
    print(results.to_string(), file=stream)
    cr = results.crossover
    if cr is not None:
        for _, r in cr.iterrows():
            print(f"crossover {r.workload}: {r.note}", file=stream)
    d = results.save(out)
    print(f"\nreport: {d / 'report.html'}", file=stream)
    print(
        f"tables: {d / 'results.csv'}, {d / 'results.json'}, {d / 'samples.csv'}, "
        f"{d / 'runs.jsonl'} (one line per run, written as it finished)",
        file=stream,
    )
    if results.performance_report:
        print(f"dask performance report: {d / 'dask-performance-report.html'}", file=stream)
    return 1 if (results.table.status == "error").any() else 0


def _connect(args):
    """The cluster of the dask engine, its dashboard and size printed (None without it)."""
    from ..cluster import connect

    if "dask" not in args.engines:
        return None
    client = connect(args.scheduler, n_workers=args.workers)
    print(f"dask dashboard: {client.dashboard_link}", flush=True)
    n = client.nthreads()
    print(
        f"cluster: {len(n)} workers, {sum(n.values())} threads "
        "(the local engine gets the same number of cores)",
        flush=True,
    )
    return client


def run_comparison(args, data, preset) -> int:
    """Run the comparison the arguments describe on ``data``; print it, save the report.

    Returns
    -------
    int
        The exit code: 1 when a workload errored, else 0.
    """
    from ..harness import check_output_dir, check_timeout, compare

    # Before a cluster starts and anything runs: a bad --out used to fail after the whole run.
    check_output_dir(args.out, name="--out")
    check_timeout(args.timeout)
    client = _connect(args)
    try:
        t0 = time.perf_counter()
        results = compare(
            list(args.workloads),
            data,
            engines=tuple(args.engines),
            repeat=args.repeat if args.repeat is not None else preset["repeat"],
            client=client,
            prices=_load_prices(args.prices),
            spot_discount=args.spot_discount,
            sizes=args.sizes,
            warmup=preset["warmup"] and not args.no_warmup,
            options=_options(args, preset),
            progress=_printer(),
            n_per_class=preset["n_per_class"],
            out=args.out,
            timeout=args.timeout,
        )
        print(f"\nfinished in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        if client is not None:
            client.close()  # closes the local cluster connect() started; never a remote one
    return _finish(results, args.out)


def add_comparison_arguments(p) -> None:
    """The options ``dasktrain demo`` and ``dasktrain compare`` share."""
    p.add_argument("--out", default="report/", help="output folder (default: report/)")
    p.add_argument(
        "--scheduler", metavar="ADDR", help="Dask scheduler address (default: a new local cluster)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="local cluster workers (default: one per CPU)"
    )
    p.add_argument(
        "--workloads",
        nargs="+",
        default=list(DEFAULT_WORKLOADS),
        metavar="NAME",
        help=f"workloads to run (default: {' '.join(DEFAULT_WORKLOADS)})",
    )
    p.add_argument("--engines", nargs="+", default=["local", "dask"], choices=["local", "dask"])
    p.add_argument("--repeat", type=int, default=None, help="timed repeats per workload and engine")
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="also run at these data sizes (samples) and report the crossover",
    )
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels")
    p.add_argument("--backbone", default="smallcnn", help="CNN trunk of the features step")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the ddp_cnn workload")
    p.add_argument("--prices", metavar="JSON", help="USD/hour per engine: a JSON file or text")
    p.add_argument("--spot-discount", type=float, default=0.0, help="fraction off the prices")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time limit of each run; a run over it is reported as 'timeout'",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="tiny sizes, one repeat, no warm-up: finishes in seconds (tests)",
    )


def run(args) -> int:
    """Handler of ``dasktrain compare PATH``; returns the exit code."""
    return run_comparison(args, args.path, preset_for(args))


def add_parser(subparsers) -> None:
    """Add ``dasktrain compare PATH`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "compare", help="compare local and dask on your image folder (and cluster)"
    )
    p.add_argument(
        "path", help="image folder with one sub-folder per class (PATH/train used if present)"
    )
    add_comparison_arguments(p)
    p.set_defaults(func=run)
