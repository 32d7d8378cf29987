"""compare(): workloads x engines x repeats -> Results, measured honestly.

Each run records the whole step's wall time and the training step's wall time apart, the
quality metric, the resource monitor's summary and the setup. The local engine is limited to as
many cores as the dask cluster has worker threads; a warm-up run per engine is excluded; repeats
run interleaved (A B A B) so that drift on the machine hits both engines alike.

The steps: :func:`compare` checks every option before anything runs (:mod:`.plan`), finds the
client, and hands a :class:`_Comparison` the plan; it prepares the inputs of each data size,
warms up, runs the timed repeats (:func:`~dasktrain.harness.timing.run_once`) and keeps each
record as it finishes (in ``out/runs.jsonl`` too), then builds the :class:`Results`.
"""

from __future__ import annotations

import contextlib
import math
import platform
import re
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .. import __version__
from .._compat import cpu_count, gpu_count
from ..exceptions import ClusterConnectionError, ValidationError
from .inputs import Inputs
from .output import RunLog
from .plan import ENGINES, check_data, make_plan
from .results import Results, RunRecord
from .timing import limited, run_once
from .workloads import RunContext, resolve_workloads, using

__all__ = ["compare"]


def _resolve_client(client, engines):
    """``(client, owned)``: the client the dask runs use and whether compare() must close it.

    A Client passed without the dask engine still sets how many cores the local engine gets.
    """
    from distributed import Client

    from .._dask import maybe_client
    from ..cluster import connect

    if "dask" not in engines and not isinstance(client, Client):
        return None, False
    if client is None:
        default = maybe_client()
        return (default, False) if default is not None else (connect(), True)
    if isinstance(client, str):
        return connect(client), True  # raises ClusterConnectionError naming the address
    if not isinstance(client, Client):
        raise ValidationError(
            f"client={client!r} must be None, a scheduler address or a distributed.Client."
        )
    if client.status not in ("running", "newly-created"):
        raise ClusterConnectionError(
            f"client {client!r} is {client.status!r}; connect it again with dasktrain.connect()."
        )
    return client, False


def _versions():
    out = {"python": platform.python_version(), "dasktrain": __version__}
    for mod in (
        "numpy",
        "pandas",
        "dask",
        "distributed",
        "sklearn",
        "xgboost",
        "dask_ml",
        "torch",
        "psutil",
    ):
        m = sys.modules.get(mod)
        if m is None and mod != "torch":  # torch is only reported when a workload used it
            try:
                m = __import__(mod)
            except ImportError:
                continue
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------------------------
# One comparison
# --------------------------------------------------------------------------------------------
class _Comparison:
    """The state of one comparison while it runs: the cluster's shape, the records kept."""

    def __init__(self, specs, client, plan, comparison) -> None:
        self.specs, self.client, self.plan, self.id = specs, client, plan, comparison
        self.n_workers, self.n_threads = self._cluster_shape()
        self.devices = {"local": 1, "dask": max(1, self.n_workers)}
        self.ctx = RunContext(n_threads=self.n_threads, seed=plan.seed, options=dict(plan.options))
        self.log = RunLog(plan.out, comparison) if plan.out is not None else None
        self.records, self.sample_frames = [], []
        self.run_id = self.emitted = 0
        n = len(specs) * len(plan.engines) * len(plan.size_list)
        self.total = n * plan.repeat + (n if plan.warmup else 0)
        self.setup = self._setup()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def _cluster_shape(self):
        """``(workers, threads)``: the dask cluster's, or (0, this machine's cores)."""
        from .._dask import scheduler_workers, total_threads

        if self.client is None:
            return 0, cpu_count()
        n_workers = len(scheduler_workers(self.client))
        if n_workers == 0:
            raise ClusterConnectionError(
                f"the Dask cluster at {self.client.scheduler.address!r} has no workers; start "
                "some or use engines=('local',)."
            )
        return n_workers, total_threads(self.client)

    def _setup(self):
        p, c = self.plan, self.client
        return {
            "engines": list(p.engines),
            "workers": self.n_workers,
            "threads": self.n_threads,
            "local_threads": self.n_threads,
            "gpus": gpu_count(),
            "devices": self.devices,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "cpu_count": cpu_count(),
            "scheduler": c.scheduler.address if c is not None else None,
            "dashboard": c.dashboard_link if c is not None else None,
            "repeat": p.repeat,
            "warmup": bool(p.warmup),
            "sizes": p.sizes,
            "seed": p.seed,
            "options": p.options,
            "timeout": p.timeout,
            "comparison": self.id,
            "runs_log": str(self.log.path) if self.log is not None else None,
            "started": _now(),
        }

    # -- keeping what ran ------------------------------------------------------------------
    def _keep(self, rec: RunRecord, size, repeat):
        rec.size, rec.repeat, rec.threads = size, repeat, self.n_threads
        rec.devices = self.devices[rec.engine]
        rec.workers = self.n_workers if rec.engine == "dask" else 0
        row = rec.as_row()
        self.records.append(row)
        if self.log is not None:
            self.log.write(row)  # at once: an interrupted comparison keeps its rows

    def _emit(self, event, rec: RunRecord, repeat):
        self.emitted += 1
        if self.plan.progress is not None:
            self.plan.progress(
                {
                    "event": event,
                    "workload": rec.workload,
                    "engine": rec.engine,
                    "repeat": repeat,
                    "index": self.emitted,
                    "total": self.total,
                    "record": rec.as_row(),
                }
            )

    def _run(self, spec, inputs, engine, *, monitor):
        p = self.plan
        return run_once(
            spec,
            inputs,
            engine,
            self.client,
            self.ctx,
            interval=p.interval,
            monitor=monitor,
            timeout=p.timeout,
        )

    # -- the steps -------------------------------------------------------------------------
    def _warm_up(self, spec, inputs):
        """One untimed run per engine; ``{engine: record}`` of those that failed."""
        failed = {}
        for e in self.plan.engines:
            rec, _ = self._run(spec, inputs, e, monitor=False)
            self._emit("warmup", rec, 0)
            if rec.status != "ok":
                failed[e] = rec
        return failed

    def _timed(self, spec, inputs, engine, size, rep):
        rec, samples = self._run(spec, inputs, engine, monitor=self.plan.monitor)
        self.run_id += 1
        rec.run = self.run_id
        self._keep(rec, size, rep)
        if samples is not None and len(samples):
            self.sample_frames.append(
                samples.assign(
                    run=self.run_id, workload=spec.name, engine=engine, size=size, repeat=rep
                )
            )
        self._emit("run", rec, rep)
        return rec

    def _workload(self, spec, inputs, size):
        """Warm-up, then the timed repeats interleaved over the engines (A B A B)."""
        # Data preparation (decoding, CNN features, splits) is not part of any timed run:
        # both engines start from the same prepared inputs.
        with using(self.ctx), limited("local", self.n_threads):
            inputs.prepare(spec.needs)
        failed = self._warm_up(spec, inputs) if self.plan.warmup else {}
        for rep in range(1, self.plan.repeat + 1):
            for e in self.plan.engines:
                if e not in failed:
                    rec = self._timed(spec, inputs, e, size, rep)
                    if rec.status in ("unavailable", "timeout"):
                        # A timed-out run may still be busy: no more repeats of it.
                        failed[e] = rec
        # A warm-up that failed stands for its engine's row (no timed runs followed).
        for rec in failed.values():
            if math.isnan(rec.run):
                self._keep(rec, size, 0)

    def _data(self, data, tmp):
        """The user's data, or the built-in data set built in ``tmp``."""
        if data is not None:
            return data
        from ..datasets import make_xray_like

        return make_xray_like(
            tmp / "data",
            n_per_class=self.plan.n_per_class,
            size=self.plan.options.get("image_size", 64),
            seed=self.plan.seed,
        )

    @contextlib.contextmanager
    def _performance_report(self, tmp):
        """Dask's performance report over the runs, as HTML in ``box["html"]`` afterwards."""
        box = {"html": None}
        c = self.client
        if not (self.plan.performance_report and c is not None and "dask" in self.plan.engines):
            yield box
            return
        from distributed import performance_report

        path = tmp / "dask-performance-report.html"
        with c.as_current(), performance_report(filename=str(path), mode="inline"):
            yield box
        if path.exists():
            # Dask's template links its favicon on docs.dask.org: drop it so the file makes no
            # network request when opened offline.
            box["html"] = re.sub(r'<link[^>]*rel="shortcut icon"[^>]*>', "", path.read_text())

    def run(self, data) -> Results:
        """Run every workload at every size; return the :class:`Results`."""
        import pandas as pd

        p = self.plan
        with tempfile.TemporaryDirectory(prefix="dasktrain-compare-") as tmp:
            tmp = Path(tmp)
            data = self._data(data, tmp)
            with self._performance_report(tmp) as perf:
                for size in p.size_list:
                    inputs = Inputs(
                        data,
                        size=size,
                        workdir=tmp,
                        seed=p.seed,
                        options=p.options,
                        n_threads=self.n_threads,
                    )
                    for spec in self.specs:
                        self._workload(spec, inputs, size)
        self.setup.update(finished=_now(), versions=_versions())
        frames = self.sample_frames
        samples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return Results(
            self.records,
            samples=samples,
            setup=self.setup,
            performance_report=perf["html"],
            **p.result_kw,
        )


def compare(
    workloads,
    data=None,
    *,
    engines=ENGINES,
    repeat=3,
    client=None,
    prices=None,
    baseline="local",
    sizes=None,
    warmup=True,
    machines=None,
    spot_discount=0.0,
    time_basis="time",
    interval=None,
    monitor=True,
    performance_report=True,
    progress=None,
    seed=0,
    options=None,
    n_per_class=60,
    out=None,
    timeout=None,
) -> Results:
    """Run workloads on several engines with repeats and return comparable :class:`Results`.

    Parameters
    ----------
    workloads : str, callable, or list of them
        Built-in names (``"read"``, ``"features"``, ``"kmeans"``, ``"xgboost"``, ``"logreg"``,
        ``"naive_bayes"``, ``"mlp_cv"``, ``"ddp_cnn"``, or ``"all"``) and/or callables
        ``fn(data, engine, client) -> dict`` of metrics. A callable may return
        ``train_time`` (seconds of its training step); its first other metric, or
        ``fn.metric`` when set, is its quality metric. ``client`` is None for the local engine.
    data : str, Path, ImageSet or tuple (X, y), optional
        A class-per-directory image folder (``root/train`` is used when present), an
        ImageSet, images ``(X, y)`` or a feature matrix ``(X, y)``. ``None`` builds the
        built-in X-ray-like data set in a temporary folder (``n_per_class`` images per class).
    engines : sequence of {"local", "dask"}
    repeat : int
        Timed runs per workload x engine (after the warm-up), interleaved A B A B.
    client : distributed.Client or str, optional
        The cluster of the dask engine. ``None``: the current default client, else a new local
        cluster (closed at the end). A string is a scheduler address.
    prices : dict, optional
        USD per hour per machine for the ``cost_usd`` column (see :class:`Results`).
    baseline : str
        Engine the speedups are relative to.
    sizes : list of int, optional
        Run every workload at these data sizes (samples) and report the crossover.
    warmup : bool
        Run each workload once per engine first, untimed (imports, JIT, worker caches).
    machines, spot_discount, time_basis
        See :class:`Results`.
    interval : float, optional
        Resource monitor sampling interval (``dasktrain.monitor.interval``).
    monitor : bool
        Sample resources during every run.
    performance_report : bool
        Keep Dask's performance report of the dask runs (saved by :meth:`Results.save`).
    progress : callable, optional
        Called with a dict after every run (``event``, ``workload``, ``engine``, ``repeat``,
        ``index``, ``total``, ``record``); the CLI prints it.
    seed : int
    options : dict, optional
        Built-in workload settings: ``image_size`` (64), ``backbone`` ("smallcnn"),
        ``epochs`` (2), ``n_estimators`` (50), ``cv`` (3), ``mlp_max_iter`` (200), ...
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
        Without a limit the workload runs in this thread, as before.

    Returns
    -------
    Results

    Raises
    ------
    WorkloadError
        Unknown workload, empty data, or a price table without an engine's machine.
    ClusterConnectionError
        When the scheduler at ``client`` cannot be reached (within ``dasktrain.connect-timeout``).
    ValidationError
        Bad engines, baseline, repeat, sizes, time_basis, timeout, or an ``out`` folder that
        cannot be written (all checked before the first run).

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
        options=dict(options or {}),
        interval=interval,
        monitor=monitor,
        performance_report=performance_report,
        n_per_class=n_per_class,
    )
    check_data(data)
    client, owned = _resolve_client(client, plan.engines)
    try:
        comparison = _Comparison(specs, client, plan, uuid.uuid4().hex[:12])
        try:
            return comparison.run(data)
        finally:
            comparison.close()
    finally:
        if owned:
            client.close()
