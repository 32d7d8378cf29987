"""The typed settings of a comparison, each default written once, each check made once.

:class:`WorkloadOptions` holds what ``compare(options=...)`` sets for the built-in workloads
(image size, backbone, epochs...): the workloads, the inputs and the runner read its
attributes, and a key it does not know is refused before anything runs.
:class:`CostSettings` holds how a comparison is judged (baseline, prices, time basis): it is
checked when it is made and goes from :func:`~dasktrain.compare` through the plan to
:class:`~dasktrain.harness.Results` and its tables as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .._validation import check_positive_int
from ..exceptions import ValidationError, WorkloadError

__all__ = [
    "TIME_BASES",
    "MODEL_FEATURES",
    "WorkloadOptions",
    "CostSettings",
    "check_time_basis",
    "check_fraction",
    "price_of",
    "RunContext",
    "current",
    "using",
]

#: What speedup, efficiency, EDP and cost are computed from: the whole step or its training.
TIME_BASES = ("time", "train_time")
#: Where the model workloads' features come from (``WorkloadOptions.model_features``).
MODEL_FEATURES = ("auto", "cnn", "hog")


@dataclasses.dataclass(frozen=True)
class WorkloadOptions:
    """The settings of the built-in workloads, ``compare(options={...})``; every default here.

    The docstring of :func:`~dasktrain.compare` lists the same names and defaults (a test
    keeps them together).

    Attributes
    ----------
    image_size : int or (int, int)
        Side (or ``(height, width)``) the images are resized to when read from a folder.
    backbone : str
        CNN trunk of ``features`` and of the model workloads' CNN features.
    batch_size : int
        Images per batch of the ``features`` workload.
    model_features : {"auto", "cnn", "hog"}
        Features of the model workloads: ``"auto"`` takes the CNN ``backbone`` when torch is
        installed, HOG otherwise.
    n_estimators : int
        Trees of ``xgboost``.
    cv : int
        Folds of ``mlp_cv``.
    mlp_max_iter : int
        Iterations of each fold's MLP in ``mlp_cv``.
    ddp_model : str
        Network ``ddp_cnn`` trains (``train_classifier``'s ``model``).
    epochs : int
        Epochs of ``ddp_cnn``: 12, where its recipe reaches >= 0.85 test accuracy on the
        built-in data set whatever the seed and the placement of the chunks (at 8, 2 seeds
        in 40 and 2 chunk orders in 30 ended at 0.79-0.85).
    ddp_batch_size : int
        Global batch of ``ddp_cnn`` (the same optimiser steps on every setup).
    ddp_lr : float
        Peak learning rate of ``ddp_cnn``'s one-cycle schedule.
    """

    image_size: int | tuple[int, int] = 64
    backbone: str = "smallcnn"
    batch_size: int = 64
    model_features: str = "auto"
    n_estimators: int = 50
    cv: int = 3
    mlp_max_iter: int = 200
    ddp_model: str = "smallcnn"
    epochs: int = 12
    ddp_batch_size: int = 16
    ddp_lr: float = 1e-2

    def __post_init__(self) -> None:
        if self.model_features not in MODEL_FEATURES:
            raise WorkloadError(
                f"options['model_features']={self.model_features!r}: use 'auto', 'cnn' or 'hog'."
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in the order of the fields."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | WorkloadOptions | None) -> WorkloadOptions:
        """The options of ``compare(options=...)``: a mapping, a record or None (defaults).

        Raises
        ------
        WorkloadError
            A key that is no option (the message names the close match and every option), or
            ``options`` that is not a mapping.
        """
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if not isinstance(options, Mapping):
            raise WorkloadError(
                f"options={options!r} must be a dict of workload settings "
                f"({', '.join(cls.names())})."
            )
        unknown = [k for k in options if k not in cls.names()]
        if unknown:
            raise WorkloadError(_unknown_message(unknown[0], cls.names()))
        return cls(**options)

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults, as a dict (``Results.setup["options"]``)."""
        default = type(self)()
        return {
            n: getattr(self, n) for n in self.names() if getattr(self, n) != getattr(default, n)
        }


def _unknown_message(key: object, names: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"options has no setting {key!r}; {hint}the settings are {', '.join(names)}."


# --------------------------------------------------------------------------------------------
# How a comparison is judged
# --------------------------------------------------------------------------------------------
def check_time_basis(time_basis: object) -> str:
    """Return ``time_basis`` when it is one of ``TIME_BASES``; raise ValidationError."""
    if time_basis not in TIME_BASES:
        raise ValidationError(
            f"time_basis={time_basis!r} must be 'time' (the whole step) or 'train_time' (the "
            "training step alone)."
        )
    return str(time_basis)


def check_fraction(value: object, name: str) -> float:
    """Return ``value`` as a float in [0, 1); raise ValidationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < 1:
        raise ValidationError(
            f"{name}={value!r} must be a fraction in [0, 1), e.g. 0.7 for 70% off."
        )
    return float(value)


def price_of(
    prices: Mapping[str, Any],
    machines: Mapping[str, Any] | None,
    setup: str,
    spot_discount: float,
) -> tuple[float, str]:
    """``(usd_per_hour_total, machine_label)`` of a setup, after the spot discount.

    A setup is looked up under its own name (``"local"``, ``"dask"``, a cluster's name) unless
    ``machines`` maps it to a machine.

    Raises
    ------
    WorkloadError
        The price table has no entry for the setup's machine, or a bad one.
    """
    spec = (machines or {}).get(setup, setup)
    name, count = spec if isinstance(spec, tuple) else (spec, 1)
    if name not in prices:
        raise WorkloadError(
            f"the price table has no entry for machine {name!r} (setup {setup!r}); it knows "
            f"{sorted(prices)!r}. Add {name!r} to prices=, or map the setup to a priced machine "
            f"with machines={{{setup!r}: '<machine in prices>'}}."
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
    discount = check_fraction(discount, "spot_discount")
    count = check_positive_int(count, f"machines[{setup!r}] count")
    label = name if count == 1 else f"{count} x {name}"
    return float(entry) * count * (1 - discount), label


@dataclasses.dataclass(frozen=True)
class CostSettings:
    """How a comparison is judged: checked when made, then read by every table.

    ``baseline``, ``prices``, ``machines``, ``spot_discount`` and ``time_basis`` are the
    arguments of :class:`~dasktrain.harness.Results` (see there). ``setups`` are the setups
    whose prices have been checked (:meth:`for_setups`).

    Raises
    ------
    ValidationError
        A ``time_basis`` or ``spot_discount`` out of range.
    WorkloadError
        ``prices`` that is not a dict.
    """

    baseline: str = "local"
    prices: dict[str, Any] | None = None
    machines: dict[str, Any] | None = None
    spot_discount: float = 0.0
    time_basis: str = "time"
    setups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "spot_discount", check_fraction(self.spot_discount, "spot_discount")
        )
        object.__setattr__(self, "time_basis", check_time_basis(self.time_basis))
        if self.prices is not None and not isinstance(self.prices, dict):
            raise WorkloadError(f"prices={self.prices!r} must be a dict machine -> USD per hour.")

    def for_setups(self, setups: Iterable[str]) -> CostSettings:
        """These settings with the price of every one of ``setups`` checked (each once).

        Raises
        ------
        WorkloadError
            The price table has no entry for a setup's machine, or a bad one.
        """
        new = [s for s in dict.fromkeys(setups) if s not in self.setups]
        if not new:
            return self
        if self.prices is not None:
            for name in new:
                self.price(name)
        return dataclasses.replace(self, setups=self.setups | frozenset(new))

    def price(self, setup: str) -> tuple[float, str]:
        """``(usd_per_hour_total, machine_label)`` of ``setup`` (see :func:`price_of`)."""
        if self.prices is None:
            raise WorkloadError("no prices= were given; there is no price of a setup.")
        return price_of(self.prices, self.machines, setup, self.spot_discount)


# ---------------------------------------------------------------------------------------
# The run's context: what a workload is told about the run it is in
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunContext:
    """What a workload needs to know about the run it is in (see :func:`current`).

    ``n_threads`` is the number of cores the run may use: a cluster's total worker threads on
    the dask engine; on the local engine as many as the largest cluster has (it is limited to
    them for a fair comparison). ``options`` are the built-in workloads' settings
    (:class:`~dasktrain.harness.settings.WorkloadOptions`, read as attributes:
    ``current().options.epochs``). ``setup`` names the setup the run belongs to.
    """

    n_threads: int = 1
    seed: int = 0
    options: WorkloadOptions = dataclasses.field(default_factory=WorkloadOptions)
    setup: str = "local"

    def __post_init__(self) -> None:
        # A dict of options, as compare(options=...) takes them, is checked into the record.
        self.options = WorkloadOptions.from_dict(self.options)


_CURRENT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "dasktrain_workload_context", default=None
)


def current() -> RunContext:
    """The :class:`RunContext` of the run in progress (defaults outside a comparison)."""
    ctx = _CURRENT.get()
    return RunContext() if ctx is None else ctx


@contextlib.contextmanager
def using(ctx: RunContext) -> Iterator[RunContext]:
    """Make ``ctx`` what :func:`current` returns inside the ``with`` block."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
