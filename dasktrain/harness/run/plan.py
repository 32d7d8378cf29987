"""The options of a comparison, all checked before anything is measured.

A bad folder, price table, time limit or engine name is reported at once, not after an hour of
runs: :func:`make_plan` checks every option of :func:`~dasktrain.compare` and returns the
:class:`Plan` the runner follows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ... import _config
from ..._validation import check_engine, check_positive_int, check_positive_number
from ...exceptions import ValidationError, WorkloadError
from ..report.output import check_output_dir
from ..settings import CostSettings, WorkloadOptions
from ..workloads.inputs import image_root
from .setups import check_clusters
from .spark_setup import check_spark

__all__ = ["ENGINES", "DEFAULT_ENGINES", "Plan", "make_plan", "check_timeout", "check_data"]

#: The engines a comparison can run.
ENGINES = ("local", "dask", "spark")
#: What compare() runs unless told: Spark is asked for by name (it is an optional extra).
DEFAULT_ENGINES = ("local", "dask")


def check_timeout(timeout: float | None) -> float | None:
    """Return ``timeout`` as seconds (or None); raise ValidationError unless it is > 0."""
    if timeout is None:
        return None
    return check_positive_number(timeout, "timeout", unit="seconds")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked options of one comparison."""

    engines: tuple
    #: ``{name: cluster spec}`` of the dask setups (None: one cluster, the ``client``).
    clusters: dict | None
    #: The Spark setup's session or master URL (None: ``local[N]``, N the cluster's threads).
    spark: object
    #: The names of the setups, in the order they run.
    setups: tuple
    repeat: int
    sizes: list | None
    warmup: bool
    seed: int
    #: The built-in workloads' settings, every default filled in.
    options: WorkloadOptions
    interval: float | None
    monitor: bool
    performance_report: bool
    progress: Callable | None
    n_per_class: int
    timeout: float | None
    out: Path | None
    #: How the runs are judged (baseline, prices, time basis), prices checked for every setup.
    cost: CostSettings
    #: Measure and judge on a busy machine (:mod:`.machine`).
    allow_busy: bool
    #: Seconds to wait for a busy machine to calm down before the first run.
    quiet_wait: float

    @property
    def size_list(self) -> list:
        return self.sizes or [None]


def _check_allow_busy(allow_busy):
    if allow_busy is None:
        allow_busy = _config.get("compare.allow-busy", False)
    if not isinstance(allow_busy, bool):
        raise ValidationError(f"allow_busy={allow_busy!r} must be True, False or None.")
    return allow_busy


def _check_quiet_wait(quiet_wait):
    """Seconds (>= 0) to wait for a busy machine; None: ``dasktrain.compare.quiet-wait``."""
    from dask.utils import parse_timedelta

    shown = quiet_wait
    if quiet_wait is None:
        quiet_wait = _config.get("compare.quiet-wait", "60s")
    try:
        seconds = None if isinstance(quiet_wait, bool) else parse_timedelta(quiet_wait)
    except (TypeError, ValueError, KeyError):
        seconds = None
    if seconds is None or not seconds >= 0:
        raise ValidationError(
            f"quiet_wait={shown!r} must be None or seconds >= 0 (how long to wait for a busy "
            "machine to calm down before the first run), e.g. 60 or '2min'."
        )
    return float(seconds)


def _check_engines(engines):
    if isinstance(engines, str):
        engines = (engines,)
    engines = tuple(check_engine(e, allowed=ENGINES, name="engines") for e in engines)
    if not engines or len(set(engines)) != len(engines):
        raise ValidationError(f"engines={engines!r} must name each engine once.")
    return engines


def _setup_names(engines, clusters, baseline):
    """The setups' names (local first); the baseline must be one of them."""
    names = tuple(e for e in engines if e == "local")
    if "dask" in engines:
        names += tuple(clusters) if clusters is not None else ("dask",)
    if "spark" in engines:
        names += ("spark",)
    if baseline not in names:
        raise ValidationError(
            f"baseline={baseline!r} is not among the setups {names!r} (engines={engines!r}"
            + (f", clusters={list(clusters)!r}" if clusters else "")
            + ")."
        )
    return names


def _check_sizes(sizes):
    if sizes is None:
        return None
    sizes = sorted({check_positive_int(s, "sizes item") for s in sizes})
    if not sizes:
        raise ValidationError("sizes is empty; pass a list of data sizes or None.")
    return sizes


def _check_progress(progress):
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise ValidationError(
        f"progress={progress!r} must be True (a progress bar), False, or a callable."
    )


def check_data(data) -> None:
    """Raise WorkloadError unless ``data`` is None, a non-empty folder, an ImageSet or (X, y)."""
    if data is None:
        return
    if isinstance(data, (str, os.PathLike)):
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


def make_plan(
    *,
    engines,
    clusters,
    client,
    spark,
    baseline,
    repeat,
    sizes,
    prices,
    machines,
    spot_discount,
    time_basis,
    timeout,
    progress,
    out,
    allow_busy=None,
    quiet_wait=None,
    options=None,
    **rest,
) -> Plan:
    """Check every option of :func:`compare`; everything that could fail at the end is
    checked now, before anything is measured."""
    engines = _check_engines(engines)
    clusters = check_clusters(clusters, engines, client)
    spark = check_spark(spark, engines)
    setups = _setup_names(engines, clusters, baseline)
    cost = CostSettings(
        baseline=baseline,
        prices=prices,
        machines=machines,
        spot_discount=spot_discount,
        time_basis=time_basis,
    )
    return Plan(
        engines=engines,
        clusters=clusters,
        spark=spark,
        setups=setups,
        repeat=check_positive_int(repeat, "repeat"),
        sizes=_check_sizes(sizes),
        timeout=check_timeout(timeout),
        progress=_check_progress(progress),
        out=check_output_dir(out) if out is not None else None,
        cost=cost.for_setups(setups),
        options=WorkloadOptions.from_dict(options),
        allow_busy=_check_allow_busy(allow_busy),
        quiet_wait=_check_quiet_wait(quiet_wait),
        **rest,
    )
