"""What the metric modules share: the dask test, 1-d label checks, small vectors to numpy."""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING, Any

import numpy as np

from .._dask import compute_all
from .._validation import check_known_chunks, is_dask_collection
from ..exceptions import ValidationError

if TYPE_CHECKING:
    from .._typing import Array, ArrayLike


def any_dask(*xs: object) -> bool:
    """True when one of ``xs`` (None allowed) is a dask collection."""
    return any(is_dask_collection(x) for x in xs if x is not None)


def check_1d(y: ArrayLike, name: str) -> Array:
    """``y`` as a 1-d array (a column ``(n, 1)`` is flattened); raise naming ``name``."""
    a: Any = y if is_dask_collection(y) else np.asarray(y)
    if a.ndim != 1 and not (a.ndim == 2 and a.shape[1] == 1):
        raise ValidationError(f"{name} must be 1-dimensional, got shape {tuple(a.shape)!r}.")
    return a.reshape(-1) if a.ndim == 2 else a  # type: ignore[no-any-return]


def small_vectors(*xs: ArrayLike | None) -> list[Any]:
    """Compute 1-d (or thin 2-d) dask vectors to numpy in one call (never X itself)."""
    for x in xs:
        if is_dask_collection(x):
            check_known_chunks(x, "y")
    return [None if x is None else np.asarray(x) for x in compute_all(xs)]


def check_same_length(a: Sized, b: Sized, a_name: str, b_name: str) -> None:
    """Raise when two numpy vectors have different lengths."""
    if len(a) != len(b):
        raise ValidationError(
            f"{a_name} has {len(a)} samples but {b_name} has {len(b)}; they must have the same "
            "length."
        )
