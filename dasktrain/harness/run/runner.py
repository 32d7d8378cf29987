"""compare(): workloads x setups x sizes x repeats -> Results, measured honestly.

Each run records the whole step's wall time and the training step's wall time apart, where the
time went (start-up, data transfer, scheduler/idle, compute), the quality metric, the resource
monitor's summary and the setup. The local engine is limited to as many cores as the largest
cluster has worker threads; a warm-up run per workload and setup is excluded; repeats run
interleaved (A B C A B C) so that drift on the machine hits every setup alike. The machine is
watched from start to end: a busy one is waited for before the first run (and refused unless
``allow_busy``), and every run records what other programs used meanwhile (:mod:`.machine`).

The steps: :func:`compare` checks every option before anything runs (:mod:`.plan`), opens the
setups (:mod:`.setups`: the clusters connected or started), waits for a quiet machine and hands
a :class:`~.comparison.Comparison` the plan, which runs it and builds the :class:`Results`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..measure.machine import MachineWatch, wait_for_quiet
from ..report.shown import Results
from ..workloads.builtin import resolve_workloads
from .comparison import Comparison
from .plan import DEFAULT_ENGINES, check_data, make_plan
from .quiet import QuietOutput, quiet_clusters
from .setups import close_setups, open_setups

if TYPE_CHECKING:
    import os

    from distributed import Client
    from pyspark.sql import SparkSession

    from ..._typing import WorkloadSpec
    from ...images import ImageSet
    from .progress import ProgressEvent

__all__ = ["compare"]


def compare(
    workloads: WorkloadSpec | Sequence[WorkloadSpec],
    data: str | os.PathLike[str] | ImageSet | tuple[Any, Any] | None = None,
    *,
    engines: Sequence[str] = DEFAULT_ENGINES,
    repeat: int = 3,
    client: Client | str | None = None,
    clusters: Mapping[str, Any] | Sequence[int] | None = None,
    spark: SparkSession | str | None = None,
    prices: Mapping[str, float] | None = None,
    baseline: str = "local",
    sizes: Sequence[int] | None = None,
    warmup: bool = True,
    machines: Mapping[str, Any] | None = None,
    spot_discount: float = 0.0,
    time_basis: str = "time",
    interval: float | None = None,
    monitor: bool = True,
    performance_report: bool = True,
    progress: bool | Callable[[ProgressEvent], object] = True,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    n_per_class: int = 60,
    out: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    log: str | os.PathLike[str] | None = None,
    allow_busy: bool | None = None,
    quiet_wait: float | None = None,
) -> Results:
    """Run workloads on the local engine, one or more Dask clusters and optionally Spark, with
    repeats and at several data sizes, and return comparable :class:`Results`.

    Parameters
    ----------
    workloads : str, callable, or list of them
        Built-in names (``"read"``, ``"features"``, ``"kmeans"``, ``"xgboost"``, ``"logreg"``,
        ``"naive_bayes"``, ``"mlp_cv"``, ``"ddp_cnn"``, or ``"all"``) and/or callables
        ``fn(data, engine, client) -> dict`` of metrics. A callable may return
        ``train_time`` (seconds of its training step); its first other metric, or
        ``fn.metric`` when set, is its quality metric. ``client`` is None for the local engine
        and the ``SparkSession`` for Spark.
    data : str, Path, ImageSet or tuple (X, y), optional
        A class-per-directory image folder (``root/train`` is used when present), an
        ImageSet, images ``(X, y)`` or a feature matrix ``(X, y)``. ``None`` builds the
        built-in X-ray-like data set in a temporary folder (``n_per_class`` images per class).
    engines : sequence of {"local", "dask", "spark"}
        ``("local", "dask")`` by default. ``"spark"`` runs the built-in workloads on a Spark
        session with matched settings (:doc:`/guide/spark`; ``ddp_cnn`` has no Spark twin);
        without pyspark or Java its rows read ``unavailable`` with the reason.
    repeat : int
        Timed runs per workload x setup x size (after the warm-up), interleaved A B A B.
    client : distributed.Client or str, optional
        The cluster of the dask engine. ``None``: the current default client, else a new local
        cluster (closed at the end). A string is a scheduler address.
    clusters : mapping or list, optional
        Several clusters in one comparison, each a *setup* of its own beside the local
        engine (instead of ``client``): a mapping name -> ``distributed.Client``, scheduler
        address, number of local workers (a new ``LocalCluster`` of single-threaded
        workers), or a dict of :func:`dasktrain.connect` arguments (``{"gpu": True}`` for a
        GPU cluster); or a list of local cluster sizes, ``[1, 2]`` meaning
        ``{"dask-1w": 1, "dask-2w": 2}``. Their rows are named after them (the ``setup``
        column); :attr:`Results.strong_scaling` gives speedup and efficiency against the
        number of workers. Clusters started here are closed at the end.
    spark : pyspark.sql.SparkSession or str, optional
        The Spark setup: the user's session (left running), or a master URL. ``None``: a
        ``local[N]`` session on 127.0.0.1 with N = the largest cluster's worker threads (the
        same cores as the dask engine), stopped at the end. A session already running in this
        process is used instead and left running.
    prices : dict, optional
        USD per hour per machine for the ``cost_usd`` column (see :class:`Results`).
    baseline : str
        Setup the speedups are relative to (``"local"``, or a cluster's name).
    sizes : list of int, optional
        Run every workload at these data sizes (samples) and report the crossover.
    warmup : bool
        Run each workload once per setup first, at the first size, untimed (imports, JIT,
        worker caches).
    machines, spot_discount, time_basis
        See :class:`Results`.
    interval : float, optional
        Resource monitor sampling interval (``dasktrain.monitor.interval``).
    monitor : bool
        Sample resources during every run.
    performance_report : bool
        Keep Dask's performance report of the dask runs (saved by :meth:`Results.save`).
    progress : bool or callable
        True (default): a progress bar (tqdm) on a terminal. A callable is called with a
        dict after every run (``event``, ``workload``, ``engine``, ``setup``, ``size``,
        ``repeat``, ``index``, ``total``, ``record``), and its ``start(setups, total)``
        method, if it has one, before the first run; the CLI prints them. False: nothing.
    seed : int
    options : dict, optional
        Built-in workload settings (defaults in brackets; see
        :class:`~dasktrain.harness.settings.WorkloadOptions`): ``image_size`` (64),
        ``backbone`` ("smallcnn"), ``batch_size`` (64), ``model_features`` ("auto": the model
        workloads' features come from the CNN ``backbone`` when torch is installed, from HOG
        otherwise; or "cnn", "hog"), ``n_estimators`` (50), ``cv`` (3), ``mlp_max_iter``
        (200), ``ddp_model`` ("smallcnn"), ``epochs`` (12), ``ddp_batch_size`` (16),
        ``ddp_lr`` (0.01). Another key raises ``WorkloadError`` before anything runs.
    n_per_class : int
        Images per class of the built-in data set when ``data`` is None.
    out : str or Path, optional
        Output folder: checked (and created) before the first run, then every finished run
        is appended to ``out/runs.jsonl`` at once, so an interrupted comparison keeps what it
        measured (:meth:`Results.from_runs` reads it back). Write the report with
        ``Results.save(out)`` at the end.
    timeout : float, optional
        Time limit of each run in seconds. A run over it is reported with
        ``status="timeout"`` and the comparison goes on (its later repeats are skipped). The
        tasks a timed-out dask run submitted are cancelled; a run busy in this process (a local
        run) cannot be stopped and is left running in the background, which its row says.
        A cancelled task that was running keeps its thread: those workers are restarted on a
        cluster the comparison started; on yours the later runs on that setup are "not run:
        the cluster was left busy by a timed-out run" (``unavailable``); the row says which.
        Without a limit the workload runs in this thread.
    log : str or Path, optional
        Send what the libraries warn, log and print during the comparison (in this process
        and in the workers of the clusters started here) to this file instead of the
        terminal; dasktrain's own warnings still show (see :mod:`dasktrain.harness.run.quiet`).
    allow_busy : bool, optional
        Measure on a busy machine and give verdicts from busy runs (the warning then heads the
        answer). By default (``dasktrain.compare.allow-busy``, False) a machine on which other
        programs use more than half a core is waited for, up to ``quiet_wait``, then refused
        (``BusyMachineError``, before anything is measured), and a workload with busy runs
        gets "no verdict". Busy runs are marked in every table either way
        (:mod:`dasktrain.harness.measure.machine`).
    quiet_wait : float, optional
        Seconds to wait before the first run for a busy machine to calm down
        (``dasktrain.compare.quiet-wait``, 60 s).

    Returns
    -------
    Results

    Raises
    ------
    WorkloadError
        Unknown workload or option, empty data, or a price table without an engine's machine.
    ClusterConnectionError
        When the scheduler at ``client`` cannot be reached (within ``dasktrain.connect-timeout``).
    ValidationError
        Bad engines, baseline, repeat, sizes, time_basis, timeout, quiet_wait, or an ``out``
        folder that cannot be written (all checked before the first run).
    BusyMachineError
        Other programs kept using more than half a core of this machine for ``quiet_wait``
        seconds before the first run (and not ``allow_busy``).

    Notes
    -----
    A workload that raises is reported in its rows (``status="error"`` with the message) and the
    others still run; one whose part of dasktrain or optional package is missing is
    ``"unavailable"``. A dask run during which a worker left the cluster (the scheduler's
    remove-worker events) keeps its status but is marked: ``workers_lost`` counts the workers and
    ``note`` names them, since its time includes the recovery. Metrics that are not numbers never
    break a comparison: they are kept as text and noted.

    Examples
    --------
    >>> res = dasktrain.compare(
    ...     ["kmeans", "xgboost"], data="chest_xray/", repeat=3
    ... )  # doctest: +SKIP
    >>> res.table[["workload", "engine", "time_median", "speedup"]]  # doctest: +SKIP
    >>> res.save("report/")  # doctest: +SKIP
    """
    specs = resolve_workloads(workloads)
    plan = make_plan(
        engines=engines,
        clusters=clusters,
        client=client,
        spark=spark,
        baseline=baseline,
        repeat=repeat,
        sizes=sizes,
        prices=prices,
        machines=machines,
        spot_discount=spot_discount,
        time_basis=time_basis,
        timeout=timeout,
        progress=progress,
        out=out,
        warmup=warmup,
        seed=seed,
        options=options,
        interval=interval,
        monitor=monitor,
        performance_report=performance_report,
        n_per_class=n_per_class,
        allow_busy=allow_busy,
        quiet_wait=quiet_wait,
    )
    check_data(data)
    with contextlib.ExitStack() as stack:
        quiet = stack.enter_context(QuietOutput(log)) if log is not None else None
        log_path = quiet.path if quiet is not None else None
        # Watching from the start: a cluster starting meanwhile is this process tree, not
        # another program, so the first look at the machine usually costs nothing.
        watch = stack.enter_context(MachineWatch())
        setups = open_setups(plan.engines, client, plan.clusters, plan.spark, log_path)
        stack.callback(close_setups, setups)
        stack.enter_context(quiet_clusters(setups, quiet))
        machine = wait_for_quiet(watch, wait=plan.quiet_wait, allow_busy=plan.allow_busy)
        terminal = quiet.terminal_err if quiet is not None else None
        comparison = Comparison(
            specs,
            setups,
            plan,
            uuid.uuid4().hex[:12],
            watch=watch,
            machine=machine,
            terminal=terminal,
        )
        stack.callback(comparison.close)
        return comparison.run(data)
