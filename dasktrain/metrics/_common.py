"""What the metric modules share: the dask test, 1-d label checks, small vectors to numpy."""

from __future__ import annotations

import numpy as np

from .._dask import compute_all
from .._validation import check_known_chunks, is_dask_collection
from ..exceptions import ValidationError


def any_dask(*xs):
    """True when one of ``xs`` (None allowed) is a dask collection."""
    return any(is_dask_collection(x) for x in xs if x is not None)


def check_1d(y, name):
    """``y`` as a 1-d array (a column ``(n, 1)`` is flattened); raise naming ``name``."""
    if not is_dask_collection(y):
        y = np.asarray(y)
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise ValidationError(f"{name} must be 1-dimensional, got shape {tuple(y.shape)!r}.")
    return y.reshape(-1) if y.ndim == 2 else y


def small_vectors(*xs):
    """Compute 1-d (or thin 2-d) dask vectors to numpy in one call (never X itself)."""
    for x in xs:
        if is_dask_collection(x):
            check_known_chunks(x, "y")
    return [None if x is None else np.asarray(x) for x in compute_all(xs)]


def check_same_length(a, b, a_name, b_name):
    """Raise when two numpy vectors have different lengths."""
    if len(a) != len(b):
        raise ValidationError(
            f"{a_name} has {len(a)} samples but {b_name} has {len(b)}; they must have the same "
            "length."
        )
