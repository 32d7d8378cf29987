"""compare(): workloads x engines x repeats -> Results, measured honestly.

Each run records the whole step's wall time and the training step's wall time apart, the
quality metric, the resource monitor's summary and the setup. The local engine is limited to as
many cores as the dask cluster has worker threads; a warm-up run per engine is excluded; repeats
run interleaved (A B A B) so that drift on the machine hits both engines alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import numbers
import os
import platform
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

import numpy as np

from . import __version__
from ._compat import cpu_count, gpu_count
from ._validation import check_engine, check_positive_int
from .exceptions import ClusterConnectionError, ValidationError, WorkloadError
from .workloads import Inputs, RunContext, Unavailable, resolve_workloads, using

logger = logging.getLogger(__name__)

__all__ = ["compare", "Results"]

ENGINES = ("local", "dask")

RUN_COLUMNS = [
    "workload",
    "engine",
    "size",
    "repeat",
    "status",
    "error",
    "time",
    "train_time",
    "quality_metric",
    "quality",
    "devices",
    "workers",
    "threads",
    "cpu_percent_mean",
    "cpu_percent_max",
    "peak_rss_bytes",
    "energy_j",
    "energy_measured",
    "start",
    "end",
    "workers_lost",
    "note",
]

TIME_BASES = ("time", "train_time")

#: The files a comparison writes into its output folder (``compare(out=...)``, ``Results.save``).
OUTPUT_FILES = (
    "runs.jsonl",
    "report.html",
    "results.csv",
    "results.json",
    "runs.csv",
    "samples.csv",
    "dask-performance-report.html",
)


def _clean_text(text):
    """``text`` with what UTF-8 cannot hold (a non-UTF-8 file name decoded with surrogate
    escapes) written as backslash escapes: pandas, JSON and HTML writers reject it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_record(rec):
    return {k: _clean_text(v) if isinstance(v, str) else v for k, v in rec.items()}


def _check_time_basis(time_basis):
    if time_basis not in TIME_BASES:
        raise ValidationError(
            f"time_basis={time_basis!r} must be 'time' (the whole step) or 'train_time' (the "
            "training step alone)."
        )
    return time_basis


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
        raise ValidationError(
            f"timeout={timeout!r} must be None or a number of seconds > 0 (the limit of each run)."
        )
    return float(timeout)


def check_output_dir(directory, *, name="out"):
    """Make sure the comparison's files can be written into ``directory``; return it as a Path.

    Runs before anything is measured, so that a bad folder is reported at once rather than
    after a long comparison. The folder is created when missing.

    Raises
    ------
    ValidationError
        ``directory`` is empty, an existing file, cannot be created or written, or holds a
        symbolic link (or a folder) under one of the names in ``OUTPUT_FILES``: dasktrain never
        writes through a link.
    """
    if directory is None or not str(os.fspath(directory)).strip():
        raise ValidationError(f"{name}={directory!r} is empty; pass a folder, e.g. 'report/'.")
    d = Path(directory)
    shown = os.fspath(directory)
    if d.exists() and not d.is_dir():
        raise ValidationError(
            f"{name}={shown!r} is an existing file, not a folder; pass a folder for the report "
            "(created if missing), e.g. 'report/'."
        )
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dasktrain-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValidationError(
            f"{name}={shown!r} cannot be written ({type(exc).__name__}: {exc}); choose a folder "
            "you can write to."
        ) from exc
    links = [n for n in OUTPUT_FILES if (d / n).is_symlink()]
    if links:
        raise ValidationError(
            f"{name}={shown!r} holds symbolic link(s) {links!r} with the names of the files "
            "written there; dasktrain never writes through a link. Remove them or choose "
            "another folder."
        )
    folders = [n for n in OUTPUT_FILES if (d / n).exists() and not (d / n).is_file()]
    if folders:
        raise ValidationError(
            f"{name}={shown!r} holds {folders!r}, which are not files; move them or choose "
            "another folder."
        )
    return d


def _write_atomic(path, write):
    """Call ``write(tmp_path)`` on a new file beside ``path``, then rename it over ``path``.

    The rename replaces the name itself (a link found there is replaced, never followed), and
    a reader never sees half a file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)

    _write_atomic(path, write)


def _json_default(value):
    """numpy scalars as numbers (``np.int64`` is no int to json), anything else as text."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)


class _RunLog:
    """``runs.jsonl`` in the output folder: one JSON line per finished run, written at once.

    Lines are appended, each naming its comparison, so an interrupted comparison keeps the rows
    it had and an earlier comparison's rows in the same folder are never lost;
    :meth:`Results.from_runs` reads them back.
    """

    def __init__(self, directory, comparison):
        self.path = Path(directory) / "runs.jsonl"
        self.comparison = comparison
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self._f = os.fdopen(os.open(self.path, flags, 0o644), "a", encoding="utf-8")

    def write(self, rec):
        line = json.dumps({"comparison": self.comparison, **rec}, default=_json_default)
        self._f.write(line + "\n")
        self._f.flush()

    def close(self):
        self._f.close()


# ---------------------------------------------------------------------------------------
# Prices
# ---------------------------------------------------------------------------------------
def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValidationError(
            f"{name}={value!r} must be a fraction in [0, 1), e.g. 0.7 for 70% off."
        )
    return float(value)


def _price_of(prices, machines, engine, spot_discount):
    """``(usd_per_hour_total, machine_label)`` of an engine, after the spot discount."""
    spec = (machines or {}).get(engine, engine)
    name, count = spec if isinstance(spec, tuple) else (spec, 1)
    if name not in prices:
        raise WorkloadError(
            f"the price table has no entry for machine {name!r} (engine {engine!r}); it knows "
            f"{sorted(prices)!r}. Add {name!r} to prices=, or map the engine to a priced machine "
            f"with machines={{{engine!r}: '<machine in prices>'}}."
        )
    entry = prices[name]
    discount = spot_discount
    if isinstance(entry, dict):
        if "usd_per_hour" not in entry:
            raise WorkloadError(f"prices[{name!r}]={entry!r} needs a 'usd_per_hour' key.")
        discount = entry.get("spot_discount", discount)
        entry = entry["usd_per_hour"]
    if isinstance(entry, bool) or not isinstance(entry, numbers.Real) or entry < 0:
        raise WorkloadError(f"prices[{name!r}]={entry!r} must be a price in USD per hour (>= 0).")
    discount = _check_fraction(discount, "spot_discount")
    count = check_positive_int(count, f"machines[{engine!r}] count")
    label = name if count == 1 else f"{count} x {name}"
    return float(entry) * count * (1 - discount), label


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
class Results:
    """The outcome of :func:`compare`: run records, the summary table, scaling and report.

    Parameters
    ----------
    runs : list of dict or pandas.DataFrame
        One record per timed run with at least ``workload``, ``engine``, ``status`` and
        ``time`` (seconds of the whole step); optional ``train_time``, ``quality``,
        ``quality_metric``, ``devices``, ``energy_j``, ``size``, ``error`` (see
        ``RUN_COLUMNS``). Records with ``status`` other than ``"ok"`` are reported, not timed.
    baseline : str
        Engine the speedups are measured against.
    prices : dict, optional
        USD per hour per machine: ``{"m5.xlarge": 0.192}`` or
        ``{"m5.xlarge": {"usd_per_hour": 0.192, "spot_discount": 0.7}}``.
    machines : dict, optional
        Engine -> machine name in ``prices``, or ``(name, count)`` for several machines. By
        default each engine is looked up under its own name.
    spot_discount : float
        Fraction taken off every price (0.7 = 70% off), unless a machine sets its own.
    time_basis : {"time", "train_time"}
        Which time the speedup, efficiency, EDP and cost use: the whole step (default) or
        the training step alone.
    samples : pandas.DataFrame, optional
        Monitor samples of all runs (with a ``run`` column).
    setup : dict, optional
        Engine, workers, threads, devices, versions.
    performance_report : str, optional
        HTML of Dask's performance report over the dask runs.

    Attributes
    ----------
    runs : pandas.DataFrame
    table : pandas.DataFrame
        One row per workload x engine (at the largest size): ``time_median``, ``time_min``,
        ``time_max``, ``train_time_*``, ``speedup`` (t_baseline / t), ``improvement_pct``
        ((t_baseline / t - 1) x 100), ``devices``, ``efficiency`` (speedup divided by the
        device ratio against the baseline), ``quality``, ``energy_j``, ``edp`` (energy x time,
        J s, NaN where energy is not measured), ``cost_usd`` (per run) and ``status``/``error``.
    scaling : pandas.DataFrame or None
        Median times per workload x engine x size when several sizes ran.
    crossover : pandas.DataFrame or None
        Per workload and non-baseline engine: the size from which that engine wins, or a note
        that it does not in the range.
    """

    def __init__(
        self,
        runs,
        *,
        baseline="local",
        prices=None,
        machines=None,
        spot_discount=0.0,
        time_basis="time",
        samples=None,
        setup=None,
        performance_report=None,
    ):
        import pandas as pd

        if isinstance(runs, (list, tuple)):
            runs = [_clean_record(r) if isinstance(r, dict) else r for r in runs]
        runs = pd.DataFrame(runs)
        if runs.empty:
            raise WorkloadError("Results needs at least one run record.")
        for col in RUN_COLUMNS:
            if col not in runs:
                runs[col] = (
                    np.nan if col not in ("status", "error", "quality_metric", "note") else None
                )
        runs["status"] = runs["status"].fillna("ok")
        runs["devices"] = pd.to_numeric(runs["devices"]).fillna(1)
        _check_time_basis(time_basis)
        self.runs = runs
        self.baseline = baseline
        self.prices = prices
        self.machines = machines
        self.spot_discount = _check_fraction(spot_discount, "spot_discount")
        self.time_basis = time_basis
        self.samples = samples if samples is not None else pd.DataFrame()
        self.setup = dict(setup or {})
        self.performance_report = performance_report
        if prices is not None:
            for engine in runs["engine"].unique():
                _price_of(prices, machines, engine, self.spot_discount)
        self._table = None

    # -- tables ----------------------------------------------------------------------------
    @staticmethod
    def _agg(runs):
        import pandas as pd

        rows = []
        keys = ["workload", "engine", "size"]
        r = runs.assign(size=runs["size"].fillna(-1))
        for (w, e, s), g in r.groupby(keys, sort=False, dropna=False):
            ok = g[g.status == "ok"]
            bad = g[g.status != "ok"]
            row = {"workload": w, "engine": e, "size": None if s == -1 else s}
            if len(ok):
                row["status"] = "ok" if bad.empty else "partial"
            else:
                row["status"] = bad.status.iloc[0]
            row["error"] = bad.error.dropna().iloc[0] if bad.error.notna().any() else None
            row["repeats"] = len(ok)
            for col in ("time", "train_time"):
                v = pd.to_numeric(ok[col], errors="coerce")
                row[f"{col}_median"] = float(v.median()) if v.notna().any() else math.nan
                row[f"{col}_min"] = float(v.min()) if v.notna().any() else math.nan
                row[f"{col}_max"] = float(v.max()) if v.notna().any() else math.nan
            row["devices"] = float(g.devices.max())
            row["quality_metric"] = (
                ok.quality_metric.dropna().iloc[0] if ok.quality_metric.notna().any() else None
            )
            q = pd.to_numeric(ok.quality, errors="coerce")
            row["quality"] = float(q.median()) if q.notna().any() else math.nan
            for col in ("cpu_percent_mean", "peak_rss_bytes"):
                v = pd.to_numeric(ok[col], errors="coerce")
                row[col] = float(v.median()) if v.notna().any() else math.nan
            e_j = pd.to_numeric(ok.energy_j, errors="coerce")
            row["energy_j"] = float(e_j.median()) if e_j.notna().any() else math.nan
            lost = pd.to_numeric(g.workers_lost, errors="coerce")
            row["workers_lost"] = float(lost.sum()) if lost.notna().any() else math.nan
            rows.append(row)
        return pd.DataFrame(rows)

    def _derive(self, agg):
        basis = f"{self.time_basis}_median"
        out = []
        for _, row in agg.iterrows():
            row = row.to_dict()
            base = agg[
                (agg.workload == row["workload"])
                & (agg.engine == self.baseline)
                & ((agg["size"] == row["size"]) | (agg["size"].isna() & (row["size"] is None)))
            ]
            t = row[basis]
            tb = float(base[basis].iloc[0]) if len(base) else math.nan
            db = float(base.devices.iloc[0]) if len(base) else math.nan
            speed = tb / t if t and t > 0 and not math.isnan(tb) else math.nan
            row["speedup"] = speed
            row["improvement_pct"] = (speed - 1) * 100 if not math.isnan(speed) else math.nan
            row["efficiency"] = (
                speed / (row["devices"] / db) if db and not math.isnan(speed) else math.nan
            )
            # Energy is measured over the whole step, so EDP uses the whole-step time whatever
            # the time basis (energy of the whole step x training time would mix two windows).
            tw = row["time_median"]
            row["edp"] = row["energy_j"] * tw if not math.isnan(row["energy_j"]) else math.nan
            if self.prices is not None:
                usd_h, label = _price_of(
                    self.prices, self.machines, row["engine"], self.spot_discount
                )
                row["machine"] = label
                row["cost_usd"] = usd_h * t / 3600 if not math.isnan(t) else math.nan
            else:
                row["machine"] = None
                row["cost_usd"] = math.nan
            out.append(row)
        return out

    @property
    def table(self):
        """One row per workload x engine at the largest size (see the class docstring)."""
        import pandas as pd

        if self._table is None:
            agg = self._agg(self.runs)
            derived = pd.DataFrame(self._derive(agg))
            sizes = derived["size"].dropna()
            if len(sizes):
                top = derived.groupby("workload")["size"].transform("max")
                derived = derived[(derived["size"] == top) | derived["size"].isna()]
            cols = [
                "workload",
                "engine",
                "status",
                "repeats",
                "time_median",
                "time_min",
                "time_max",
                "train_time_median",
                "train_time_min",
                "train_time_max",
                "speedup",
                "improvement_pct",
                "devices",
                "efficiency",
                "quality_metric",
                "quality",
                "cpu_percent_mean",
                "peak_rss_bytes",
                "energy_j",
                "edp",
                "machine",
                "cost_usd",
                "workers_lost",
                "size",
                "error",
            ]
            self._table = derived[cols].reset_index(drop=True)
        return self._table

    @property
    def scaling(self):
        """Median time per workload x engine x size, or None with a single size."""
        import pandas as pd

        if self.runs["size"].dropna().nunique() < 2:
            return None
        agg = pd.DataFrame(self._derive(self._agg(self.runs[self.runs["size"].notna()])))
        return agg[
            [
                "workload",
                "engine",
                "size",
                "time_median",
                "time_min",
                "time_max",
                "speedup",
                "status",
            ]
        ].sort_values(["workload", "engine", "size"], ignore_index=True)

    @property
    def crossover(self):
        """Where each non-baseline engine starts to win, per workload (None with one size).

        The crossover is the smallest size from which the engine is faster at that size and at
        every larger size that ran; when it is slower at the largest size it "does not win in
        range".
        """
        import pandas as pd

        sc = self.scaling
        if sc is None:
            return None
        basis = "time_median"
        rows = []
        for (w, e), g in sc.groupby(["workload", "engine"], sort=False):
            if e == self.baseline:
                continue
            base = sc[(sc.workload == w) & (sc.engine == self.baseline)].set_index("size")[basis]
            g = g.set_index("size").sort_index()
            sizes = [s for s in g.index if s in base.index and not math.isnan(g.at[s, basis])]
            if not sizes:
                rows.append(
                    {"workload": w, "engine": e, "crossover_size": math.nan, "note": "no timings"}
                )
                continue
            wins = [g.at[s, basis] < base.at[s] for s in sizes]
            lo, hi = sizes[0], sizes[-1]
            if not wins[-1]:
                cross, note = math.nan, f"{e} does not win in range [{lo:g}, {hi:g}]"
            else:
                i = len(wins) - 1
                while i > 0 and wins[i - 1]:
                    i -= 1
                cross = sizes[i]
                note = (
                    f"{e} wins over the whole range [{lo:g}, {hi:g}]"
                    if i == 0
                    else f"{e} wins from size {cross:g}"
                )
            rows.append({"workload": w, "engine": e, "crossover_size": cross, "note": note})
        return pd.DataFrame(rows, columns=["workload", "engine", "crossover_size", "note"])

    # -- output ----------------------------------------------------------------------------
    def to_string(self, columns=None):
        """The table formatted for a terminal."""
        t = self.table.copy()
        t["peak_rss_mb"] = t["peak_rss_bytes"] / 2**20
        columns = columns or [
            "workload",
            "engine",
            "status",
            "time_median",
            "time_min",
            "time_max",
            "train_time_median",
            "speedup",
            "improvement_pct",
            "efficiency",
            "quality_metric",
            "quality",
            "cpu_percent_mean",
            "peak_rss_mb",
            "energy_j",
            "cost_usd",
        ]
        columns = [c for c in columns if c in t and (c != "cost_usd" or self.prices is not None)]
        if "energy_j" in columns and t["energy_j"].isna().all():
            columns.remove("energy_j")
        text = t[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-")
        errors = t[t.error.notna()]
        for _, r in errors.iterrows():
            text += f"\n{r.workload} [{r.engine}] {r.status}: {r.error}"
        for _, r in t[t.workers_lost.fillna(0) > 0].iterrows():
            text += (
                f"\n{r.workload} [{r.engine}] lost {r.workers_lost:g} worker(s) during its runs: "
                "those times include the recovery (see runs.note)"
            )
        if t["energy_j"].isna().all():
            text += "\nenergy: not measured on this machine (no readable RAPL/NVML counter)"
        return text

    def __repr__(self):
        return f"<Results {len(self.table)} rows, baseline={self.baseline!r}>\n{self.to_string()}"

    def to_dict(self):
        """JSON-ready dict: setup, table, runs, scaling and crossover."""

        def records(df):
            if df is None:
                return None
            return json.loads(df.to_json(orient="records", default_handler=str))

        return {
            "dasktrain_version": __version__,
            "baseline": self.baseline,
            "time_basis": self.time_basis,
            "prices": self.prices,
            "machines": {
                k: list(v) if isinstance(v, tuple) else v for k, v in (self.machines or {}).items()
            },
            "spot_discount": self.spot_discount,
            "setup": self.setup,
            "table": records(self.table),
            "runs": records(self.runs),
            "scaling": records(self.scaling),
            "crossover": records(self.crossover),
        }

    def save(self, directory):
        """Write ``report.html``, ``results.csv``, ``results.json``, ``runs.csv``,
        ``samples.csv`` and, when the dask engine ran, ``dask-performance-report.html``.

        Each file is written beside its name and renamed over it, so a file is never half
        written and a symbolic link is never written through (a folder holding a link under
        one of these names is refused, see :func:`check_output_dir`). ``runs.jsonl``, written
        run by run by :func:`compare`, is left as it is.

        Returns
        -------
        pathlib.Path
            The directory.

        Raises
        ------
        ValidationError
            See :func:`check_output_dir`.
        """
        from .report import write_report

        d = check_output_dir(directory, name="directory")
        _write_text(d / "results.csv", self.table.to_csv(index=False))
        _write_text(d / "runs.csv", self.runs.to_csv(index=False))
        _write_text(d / "samples.csv", self.samples.to_csv(index=False))
        _write_text(d / "results.json", json.dumps(self.to_dict(), indent=2, default=str))
        if self.performance_report:
            _write_text(d / "dask-performance-report.html", self.performance_report)
        _write_atomic(d / "report.html", lambda tmp: write_report(self, tmp))
        logger.info("report written to %s", d / "report.html")
        return d

    @classmethod
    def from_runs(cls, path, *, comparison=None, **kwargs):
        """Results from the ``runs.jsonl`` that :func:`compare` appends to run by run.

        What an interrupted comparison measured is kept there.

        Parameters
        ----------
        path : str or Path
            ``runs.jsonl``, or the output folder holding it.
        comparison : str, optional
            Which comparison (``Results.setup["comparison"]``); the last one in the file by
            default.
        **kwargs
            As for :class:`Results` (baseline, prices, time_basis...).

        Raises
        ------
        ValidationError
            No such file, or no rows of that comparison.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "runs.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValidationError(
                f"cannot read the runs of a comparison from {str(path)!r}: {exc}"
            ) from exc
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by an interruption
                logger.warning("skipped an incomplete line of %s", path)
        ids = list(dict.fromkeys(r.get("comparison") for r in rows))
        chosen = comparison if comparison is not None else (ids[-1] if ids else None)
        runs = [
            {k: v for k, v in r.items() if k != "comparison"}
            for r in rows
            if r.get("comparison") == chosen
        ]
        if not runs:
            raise ValidationError(
                f"{str(path)!r} holds no runs of comparison {chosen!r} (comparisons: {ids!r})."
            )
        kwargs.setdefault("setup", {"comparison": chosen, "runs_log": str(path)})
        return cls(runs, **kwargs)


# ---------------------------------------------------------------------------------------
# compare()
# ---------------------------------------------------------------------------------------
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
        if m is None and mod not in ("torch",):  # torch is only reported when a workload used it
            try:
                m = __import__(mod)
            except ImportError:
                continue
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _resolve_client(client, engines):
    """``(client, owned)``: the client the dask runs use and whether compare() must close it.

    A Client passed without the dask engine still sets how many cores the local engine gets.
    """
    from distributed import Client

    from ._dask import maybe_client
    from .cluster import connect

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


@contextlib.contextmanager
def _limited(engine, n_threads):
    """Limit the local engine to ``n_threads`` cores (BLAS/OpenMP pools and torch)."""
    if engine != "local":
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        if torch is not None and old is not None:
            torch.set_num_threads(old)


def _check_data(data):
    if data is None:
        return
    if isinstance(data, (str, os.PathLike)):
        from .workloads import image_root

        image_root(data)  # raises WorkloadError for a missing or empty folder
        return
    X = data[0] if isinstance(data, tuple) else getattr(data, "X", None)
    if X is None:
        raise WorkloadError(
            f"data={type(data).__name__} is not understood: pass a folder, an ImageSet, or (X, y)."
        )
    if isinstance(data, tuple) and len(data) != 2:
        raise WorkloadError(f"data must be (X, y); got a tuple of {len(data)} items.")
    if len(X) == 0:
        raise WorkloadError("data is empty (0 samples); pass a data set with samples.")


class _RunTimeout(Exception):
    """A run did not finish within its time limit (reported in its row, never raised out)."""


def _future_keys(client):
    """The keys of the futures ``client`` holds (its event loop thread may change the dict)."""
    for _ in range(10):
        try:
            return set(client.futures)
        except RuntimeError:  # "dictionary changed size during iteration"
            time.sleep(0.01)
    return set(client.futures)


def _cancel_new_futures(client, before):
    """Cancel the futures ``client`` holds that were not there in ``before``: a hung dask run's
    tasks. Returns how many were cancelled."""
    from distributed import Future

    keys = [k for k in _future_keys(client) if k not in before]
    if keys:
        futures = [Future(k, client) for k in keys]
        try:
            client.cancel(futures, force=True, reason="dasktrain.compare: the run timed out")
        except Exception:  # noqa: BLE001 - best effort: the row says the run timed out anyway
            logger.warning("could not cancel the tasks of a timed-out run", exc_info=True)
        del futures
    return len(keys)


def _call(fn, args, timeout, client):
    """``(fn(*args), seconds)``; with ``timeout``, raise :class:`_RunTimeout` when it is over.

    With a time limit the workload runs in a daemon thread (in a copy of this context, so it
    sees the run's RunContext and current client) while this thread waits. On timeout the
    tasks the run submitted to the cluster are cancelled, which ends a dask run blocked on
    them. A thread cannot be killed in Python: a run still busy in this process (a local run)
    is left running in the background, and the row says so.
    """
    if timeout is None:
        t0 = time.perf_counter()
        value = fn(*args)
        return value, time.perf_counter() - t0
    box = {}
    before = _future_keys(client) if client is not None else set()

    def target():
        t0 = time.perf_counter()
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["exc"] = exc
        box["elapsed"] = time.perf_counter() - t0

    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(target,),
        daemon=True,
        name="dasktrain-compare-run",
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        cancelled = _cancel_new_futures(client, before) if client is not None else 0
        thread.join(min(5.0, timeout))  # a dask run blocked on its cancelled tasks ends now
        msg = f"did not finish within the time limit of {timeout:g} s"
        if cancelled:
            msg += f"; its {cancelled} task(s) on the cluster were cancelled"
        if thread.is_alive():
            msg += (
                "; the run could not be stopped (a Python thread cannot be killed) and was left "
                "running in the background, so later timings of this comparison may be disturbed"
            )
        raise _RunTimeout(msg)
    if "exc" in box:
        raise box["exc"]
    return box["value"], box["elapsed"]


def _record_metrics(rec, metrics, spec, notes):
    """Put a run's metrics into its record; nothing a workload returns may break the record."""
    tt = metrics.pop("train_time", None)
    if tt is None:
        rec["train_time"] = math.nan
    elif isinstance(tt, numbers.Real):
        rec["train_time"] = float(tt)
    else:
        rec["train_time"] = math.nan
        notes.append(f"train_time={str(tt)[:60]!r} is not a number of seconds; ignored")
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
    # The quality metric is the first *numeric* metric unless the workload names one.
    name = None if spec.metric is False else (spec.metric or next(iter(numeric), None))
    rec["quality_metric"] = name
    rec["quality"] = numeric.get(name, math.nan)
    if name is not None and name in metrics and name not in numeric:
        notes.append(f"metric {name!r}={str(metrics[name])[:60]!r} is not a number")
    for k, v in metrics.items():
        if k in numeric:
            rec[f"metric.{k}"] = numeric[k]
        elif isinstance(v, str):
            rec[f"metric.{k}"] = v[:200]


def _one_run(spec, inputs, engine, client, ctx, interval, monitor, timeout=None):
    from ._dask import WorkerWatch
    from .monitor import ResourceMonitor

    rec = {"workload": spec.name, "engine": engine, "status": "ok", "error": None}
    notes = []
    mon = ResourceMonitor(interval=interval, client=client) if monitor else None
    dask_client = client if engine == "dask" else None
    watch = WorkerWatch(dask_client) if dask_client is not None else None
    metrics = {}
    start = time.time()
    try:
        # Code that resolves the client late (distributed.get_client()) finds this one.
        current = dask_client.as_current() if dask_client is not None else contextlib.nullcontext()
        with using(ctx), _limited(engine, ctx.n_threads), current:
            if mon is not None:
                mon.start()
            try:
                metrics, rec["time"] = _call(
                    spec.fn, (inputs, engine, dask_client), timeout, dask_client
                )
            finally:
                if mon is not None:
                    mon.stop()
        if not isinstance(metrics, dict):
            raise WorkloadError(
                f"workload {spec.name!r} returned {type(metrics).__name__}; it must return a "
                "dict of metrics (optionally with 'train_time')."
            )
    except Unavailable as exc:
        rec.update(status="unavailable", error=str(exc), time=math.nan)
    except _RunTimeout as exc:
        rec.update(status="timeout", error=str(exc), time=math.nan)
    except Exception as exc:
        logger.info("workload %s on %s failed:\n%s", spec.name, engine, traceback.format_exc())
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}", time=math.nan)
    rec["start"], rec["end"] = start, time.time()
    metrics = dict(metrics) if isinstance(metrics, dict) and rec["status"] == "ok" else {}
    _record_metrics(rec, metrics, spec, notes)
    if watch is not None:
        lost = watch.lost()
        rec["workers_lost"] = len(lost)
        if lost:
            names = ", ".join(f"{a!r}" + (" (retired)" if planned else "") for a, planned in lost)
            notes.append(
                f"worker(s) {names} left the cluster during this run: its time includes the "
                "recovery"
            )
    rec["note"] = "; ".join(notes) or None
    samples = None
    if mon is not None and rec["status"] != "unavailable":
        # The local engine is charged for the driver's tree only, not the idle cluster.
        idle = ("worker", "nanny", "scheduler") if rec.get("engine") == "local" else ()
        s = mon.summary(exclude_roles=idle)
        for k in (
            "cpu_percent_mean",
            "cpu_percent_max",
            "peak_rss_bytes",
            "energy_j",
            "energy_measured",
        ):
            rec[k] = s[k]
        rec["monitor_overhead_pct"] = s["overhead_percent_of_core"]
        samples = mon.samples
    return _clean_record(rec), samples


def compare(
    workloads,
    data=None,
    engines=ENGINES,
    repeat=3,
    client=None,
    prices=None,
    baseline="local",
    sizes=None,
    warmup=True,
    *,
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
):
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
    others still run; one whose part of dasktrain is missing is ``"unavailable"``. A dask run
    during which a worker left the cluster (the scheduler's remove-worker events) keeps its
    status but is marked: ``workers_lost`` counts the workers and ``note`` names them, since
    its time includes the recovery. Metrics that are not numbers never break a comparison:
    they are kept as text and noted.

    Examples
    --------
    >>> res = dasktrain.compare(
    ...     ["kmeans", "xgboost"], data="chest_xray/", repeat=3
    ... )  # doctest: +SKIP
    >>> res.table[["workload", "engine", "time_median", "speedup"]]  # doctest: +SKIP
    >>> res.save("report/")  # doctest: +SKIP
    """
    specs = resolve_workloads(workloads)
    if isinstance(engines, str):
        engines = (engines,)
    engines = tuple(check_engine(e, allowed=ENGINES, name="engines") for e in engines)
    if not engines or len(set(engines)) != len(engines):
        raise ValidationError(f"engines={engines!r} must name each engine once.")
    if baseline not in engines:
        raise ValidationError(f"baseline={baseline!r} is not among engines={engines!r}.")
    repeat = check_positive_int(repeat, "repeat")
    if sizes is not None:
        sizes = sorted({check_positive_int(s, "sizes item") for s in sizes})
        if not sizes:
            raise ValidationError("sizes is empty; pass a list of data sizes or None.")
    spot_discount = _check_fraction(spot_discount, "spot_discount")
    if prices is not None:
        if not isinstance(prices, dict):
            raise WorkloadError(f"prices={prices!r} must be a dict machine -> USD per hour.")
        for e in engines:
            _price_of(prices, machines, e, spot_discount)
    # Everything that could fail at the end is checked now, before anything is measured.
    _check_time_basis(time_basis)
    timeout = _check_timeout(timeout)
    if progress is not None and not callable(progress):
        raise ValidationError(f"progress={progress!r} must be None or a callable.")
    out = check_output_dir(out) if out is not None else None
    _check_data(data)

    client, owned = _resolve_client(client, engines)
    comparison = uuid.uuid4().hex[:12]
    log = _RunLog(out, comparison) if out is not None else None
    try:
        return _compare(
            specs,
            data,
            engines,
            repeat,
            client,
            sizes,
            warmup,
            seed,
            options,
            interval,
            monitor,
            performance_report,
            progress,
            n_per_class,
            dict(
                baseline=baseline,
                prices=prices,
                machines=machines,
                spot_discount=spot_discount,
                time_basis=time_basis,
            ),
            timeout=timeout,
            log=log,
            comparison=comparison,
        )
    finally:
        if log is not None:
            log.close()
        if owned:
            client.close()


def _compare(
    specs,
    data,
    engines,
    repeat,
    client,
    sizes,
    warmup,
    seed,
    options,
    interval,
    monitor,
    perf,
    progress,
    n_per_class,
    result_kw,
    *,
    timeout=None,
    log=None,
    comparison=None,
):
    import pandas as pd

    if client is not None:
        nthreads = client.nthreads()
        n_workers, n_threads = len(nthreads), int(sum(nthreads.values()))
        if n_workers == 0:
            raise ClusterConnectionError(
                f"the Dask cluster at {client.scheduler.address!r} has no workers; start some "
                "or use engines=('local',)."
            )
    else:
        n_workers, n_threads = 0, cpu_count()
    n_gpus = gpu_count()
    devices = {"local": 1, "dask": max(1, n_workers)}
    setup = {
        "engines": list(engines),
        "workers": n_workers,
        "threads": n_threads,
        "local_threads": n_threads,
        "gpus": n_gpus,
        "devices": devices,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": cpu_count(),
        "scheduler": client.scheduler.address if client is not None else None,
        "dashboard": client.dashboard_link if client is not None else None,
        "repeat": repeat,
        "warmup": bool(warmup),
        "sizes": sizes,
        "seed": seed,
        "options": options or {},
        "timeout": timeout,
        "comparison": comparison,
        "runs_log": str(log.path) if log is not None else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ctx = RunContext(n_threads=n_threads, seed=seed, options=dict(options or {}))
    records, sample_frames = [], []
    n_timed = len(specs) * len(engines) * repeat * len(sizes or [None])
    total = n_timed + (len(specs) * len(engines) * len(sizes or [None]) if warmup else 0)
    counter = {"i": 0}
    data_error = None
    perf_html = None

    def keep(rec):
        records.append(rec)
        if log is not None:
            log.write(rec)  # at once: an interrupted comparison keeps its rows

    def emit(event, spec, engine, rep, rec):
        counter["i"] += 1
        if progress is not None:
            progress(
                {
                    "event": event,
                    "workload": spec.name,
                    "engine": engine,
                    "repeat": rep,
                    "index": counter["i"],
                    "total": total,
                    "record": rec,
                }
            )

    with tempfile.TemporaryDirectory(prefix="dasktrain-compare-") as tmp:
        tmp = Path(tmp)
        if data is None:
            from .workloads import _need

            try:
                make = _need("dasktrain.datasets", "make_xray_like")
                size = (options or {}).get("image_size", 64)
                data = make(tmp / "data", n_per_class=n_per_class, size=size, seed=seed)
            except Unavailable as exc:
                data = None
                data_error = exc
        run_id = 0
        perf_path = tmp / "dask-performance-report.html"
        use_perf = perf and client is not None and "dask" in engines
        stack = contextlib.ExitStack()
        with stack:
            if use_perf:
                from distributed import performance_report

                stack.enter_context(client.as_current())
                stack.enter_context(performance_report(filename=str(perf_path), mode="inline"))
            for size in sizes or [None]:
                inputs = None
                if data is not None:
                    inputs = Inputs(data, size=size, workdir=tmp, seed=seed, options=options)
                for spec in specs:
                    where = {"size": size, "threads": n_threads}
                    if inputs is None:
                        for e in engines:
                            keep(
                                _clean_record(
                                    dict(
                                        where,
                                        workload=spec.name,
                                        engine=e,
                                        repeat=0,
                                        status="unavailable",
                                        error=f"no data: {data_error}",
                                        time=math.nan,
                                        devices=devices[e],
                                    )
                                )
                            )
                        continue
                    # Data preparation (decoding, CNN features, splits) is not part of any
                    # timed run: both engines start from the same prepared inputs.
                    with using(ctx), _limited("local", ctx.n_threads):
                        inputs.prepare(spec.needs)
                    failed = {}
                    if warmup:
                        for e in engines:
                            rec, _ = _one_run(
                                spec, inputs, e, client, ctx, interval, False, timeout
                            )
                            emit("warmup", spec, e, 0, rec)
                            if rec["status"] != "ok":
                                failed[e] = rec
                    for rep in range(1, repeat + 1):
                        for e in engines:  # interleaved: A B A B
                            if e in failed:
                                continue
                            rec, samples = _one_run(
                                spec, inputs, e, client, ctx, interval, monitor, timeout
                            )
                            run_id += 1
                            rec.update(
                                where,
                                repeat=rep,
                                devices=devices[e],
                                run=run_id,
                                workers=n_workers if e == "dask" else 0,
                            )
                            keep(rec)
                            if samples is not None and len(samples):
                                sample_frames.append(
                                    samples.assign(
                                        run=run_id,
                                        workload=spec.name,
                                        engine=e,
                                        size=size,
                                        repeat=rep,
                                    )
                                )
                            emit("run", spec, e, rep, rec)
                            if rec["status"] in ("unavailable", "timeout"):
                                # A timed-out run may still be busy: no more repeats of it.
                                failed[e] = rec
                    # A warm-up that failed stands for its engine's row (no timed runs followed).
                    for e, rec in failed.items():
                        if "run" not in rec:
                            rec.update(
                                where,
                                repeat=0,
                                devices=devices[e],
                                workers=n_workers if e == "dask" else 0,
                            )
                            keep(rec)
        if use_perf and perf_path.exists():
            # Dask's template links its favicon on docs.dask.org: drop it so the file makes no
            # network request when opened offline.
            perf_html = re.sub(r'<link[^>]*rel="shortcut icon"[^>]*>', "", perf_path.read_text())
    setup["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    setup["versions"] = _versions()
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame()
    return Results(records, samples=samples, setup=setup, performance_report=perf_html, **result_kw)
