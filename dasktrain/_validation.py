"""Dask-aware input checks whose messages say how to fix the problem.

One home for the checks every layer needs: engine names, known chunk sizes, shapes, finite
values and label lengths, folders to write into, memory before a large load. numpy and dask
inputs are both accepted; a dask check that must look at the values (NaN/inf) computes a
single boolean reduction, never the array itself.
"""

from __future__ import annotations

import numbers
import os
import pathlib

import numpy as np

from .exceptions import InsufficientMemoryError, ValidationError

ENGINES = ("auto", "local", "dask")


def is_dask_collection(x):
    """True for a dask array / dataframe / series (without importing dask for numpy input)."""
    try:
        from dask.base import is_dask_collection as _is
    except ImportError:  # pragma: no cover - dask is a core dependency
        return False
    return _is(x)


def check_engine(engine, *, allowed=ENGINES, name="engine"):
    """Validate an engine name and return it.

    Raises
    ------
    ValidationError
        Naming the bad value and the allowed ones.
    """
    if not isinstance(engine, str) or engine not in allowed:
        raise ValidationError(
            f"{name}={engine!r} is not a known engine; use one of {', '.join(map(repr, allowed))}."
        )
    return engine


def resolve_engine(engine, *inputs, allowed=ENGINES):
    """Resolve ``engine="auto"`` from the inputs: a dask collection -> ``"dask"``, else ``"local"``.

    An explicit ``"local"`` or ``"dask"`` is returned unchanged: that is what a comparison needs.
    """
    engine = check_engine(engine, allowed=allowed)
    if engine != "auto":
        return engine
    return "dask" if any(is_dask_collection(x) for x in inputs if x is not None) else "local"


def check_known_chunks(X, name="X"):
    """Raise when a dask array has unknown (NaN) chunk sizes, saying how to fix it."""
    chunks = getattr(X, "chunks", None)
    if chunks is None or not is_dask_collection(X):
        return X
    if any(np.isnan(c) for dim in chunks for c in dim):
        raise ValidationError(
            f"{name} is a dask array with unknown chunk sizes (chunks={chunks!r}). "
            f"Call `{name} = {name}.compute_chunk_sizes()` first, or build it from a dataframe "
            "with `.to_dask_array(lengths=True)`."
        )
    return X


def n_samples(X, name="X"):
    """Number of rows of a numpy or dask array (chunk sizes must be known)."""
    check_known_chunks(X, name)
    shape = getattr(X, "shape", None)
    if shape is None:
        return len(X)
    if len(shape) == 0:
        raise ValidationError(f"{name} must have at least one dimension, got a scalar.")
    return int(shape[0])


def check_array(X, *, name="X", ndim=None, min_samples=1, allow_nan=False, dtype=None):
    """Validate a numpy or dask array and return it (numpy input becomes an ndarray).

    Parameters
    ----------
    X : array-like or dask array
    name : str
        Argument name used in messages.
    ndim : int or tuple of int, optional
        Allowed number of dimensions.
    min_samples : int
        Smallest allowed number of rows.
    allow_nan : bool
        When False, NaN and inf raise. For a dask array this computes one boolean reduction.
    dtype : numpy dtype, optional
        Cast to this dtype (lazily for dask).

    Raises
    ------
    ValidationError
        For unknown chunk sizes, the wrong number of dimensions, too few samples, non-numeric
        dtype, NaN or inf.
    """
    if X is None:
        raise ValidationError(f"{name} is None; pass an array of shape (n_samples, ...).")
    if is_dask_collection(X):
        if not hasattr(X, "chunks"):
            raise ValidationError(
                f"{name} is a dask {type(X).__name__}; pass a dask array "
                f"(`{name}.to_dask_array(lengths=True)`)."
            )
        check_known_chunks(X, name)
    else:
        X = np.asarray(X)
    ndims = (ndim,) if isinstance(ndim, numbers.Integral) else ndim
    if ndims is not None and X.ndim not in ndims:
        want = " or ".join(str(d) for d in ndims)
        raise ValidationError(
            f"{name} must be {want}-dimensional, got shape {tuple(X.shape)!r} ({X.ndim}-d)."
        )
    if X.ndim == 0:
        raise ValidationError(f"{name} must be an array, got a scalar {X!r}.")
    if X.dtype.kind not in "biuf":
        raise ValidationError(
            f"{name} must be numeric, got dtype {X.dtype!s}; convert it with `.astype('float32')`."
        )
    if X.shape[0] < min_samples:
        raise ValidationError(
            f"{name} has {X.shape[0]} samples; at least {min_samples} are required."
        )
    if dtype is not None and X.dtype != dtype:
        X = X.astype(dtype)
    if not allow_nan and X.dtype.kind == "f":
        finite = X if not is_dask_collection(X) else None
        if finite is not None:
            ok = bool(np.isfinite(X).all())
        else:
            import dask.array as da

            ok = bool(da.isfinite(X).all().compute())
        if not ok:
            raise ValidationError(
                f"{name} contains NaN or infinite values; drop or impute them first "
                "(for example sklearn.impute.SimpleImputer)."
            )
    return X


def check_consistent_length(X, y, *, x_name="X", y_name="y"):
    """Raise when X and y have different numbers of samples."""
    nx, ny = n_samples(X, x_name), n_samples(y, y_name)
    if nx != ny:
        raise ValidationError(
            f"{x_name} has {nx} samples but {y_name} has {ny}; they must have the same length."
        )


def check_classification_targets(y, *, name="y", min_classes=2):
    """Return the sorted unique labels; raise when there are fewer than ``min_classes``.

    For a dask ``y`` this computes the unique labels (small) rather than the array.
    """
    if is_dask_collection(y):
        import dask.array as da

        classes = da.unique(y).compute()
    else:
        classes = np.unique(np.asarray(y))
    if classes.dtype.kind in "fc" and not np.isfinite(classes).all():
        # On the dask engine this would surface as a worker traceback (scikit-learn) or a bare
        # AssertionError (xgboost); the unique labels are already here, so it costs nothing.
        raise ValidationError(
            f"{name} contains NaN or infinite labels; drop those samples or fill in their "
            "labels before fitting."
        )
    if len(classes) < min_classes:
        raise ValidationError(
            f"{name} has {len(classes)} class(es) ({classes.tolist()!r}); a classifier needs at "
            f"least {min_classes}. Check the labels or the data split."
        )
    return classes


def check_weights(sample_weight, *, name="sample_weight"):
    """Raise for negative weights, or weights that are all 0 (there is nothing to fit).

    All-zero weights were refused by scikit-learn's KMeans but not on the dask engine, and
    ended inside xgboost's C++ code on a dask fit ("quantile.cc:363: Check failed"). For dask
    input this is one pass over the weights (both questions in one ``compute``), never over X.
    """
    if is_dask_collection(sample_weight):
        import dask

        negative, positive = dask.compute((sample_weight < 0).any(), (sample_weight > 0).any())
    else:
        w = np.asarray(sample_weight)
        negative, positive = (w < 0).any(), (w > 0).any()
    if negative:
        raise ValidationError(f"{name} has negative values; weights must be >= 0.")
    if not positive:
        raise ValidationError(
            f"{name} is zero for every sample: there is nothing to fit. Give the samples that "
            "count a positive weight."
        )


def check_weighted_classes(y, sample_weight, *, min_classes=2):
    """Raise when fewer than ``min_classes`` labels of ``y`` have a positive ``sample_weight``.

    Zero weights can leave a classifier one class, which is the "one class only" case of
    :func:`check_classification_targets` in disguise. xgboost before 3.2 fails on it deep in
    its C++ code ("base_score must be in (0,1)"), 3.2 fits a constant; dasktrain refuses it
    the same way on every version. For dask input this computes the unique weighted labels
    (one pass over ``y`` and ``sample_weight``, never over X).
    """
    if is_dask_collection(y) or is_dask_collection(sample_weight):
        import dask.array as da

        y, w = da.asarray(y), da.asarray(sample_weight)
        if not any(np.isnan(c).any() for c in y.chunks):
            w = w.rechunk(y.chunks)
        kept = da.unique(y[w > 0]).compute()
    else:
        kept = np.unique(np.asarray(y)[np.asarray(sample_weight) > 0])
    if len(kept) < min_classes:
        raise ValidationError(
            f"sample_weight is positive for {len(kept)} class(es) only ({kept.tolist()!r}); a "
            f"classifier needs positive weight on at least {min_classes} classes. Check the "
            "weights: the samples of a class whose weights are all 0 do not count."
        )


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; raise naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValidationError(f"{name}={value!r} must be an integer >= {minimum}.")
    return int(value)


def check_positive_number(value: object, name: str, *, unit: str | None = None) -> float:
    """Return ``value`` as a float if it is a finite real number > 0; raise naming it otherwise.

    ``unit`` (``"seconds"``) is said in the message: ``interval=0 must be a number of seconds
    > 0.`` A bool, NaN and infinity are refused.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(float(value))
        or float(value) <= 0
    ):
        of = f" of {unit}" if unit else ""
        raise ValidationError(f"{name}={value!r} must be a number{of} > 0.")
    return float(value)


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is True or False; raise naming the argument otherwise.

    A string such as ``"false"`` is truthy in Python; rejecting it avoids the silent opposite.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValidationError(f"{name}={value!r} must be True or False.")
    return bool(value)


def check_folder_path(path: str | os.PathLike[str], *, name: str = "path") -> str:
    """Return ``os.fspath(path)`` if a folder can be at ``path``; raise naming the part that
    stops it.

    Every part of ``path`` that exists must be a folder (a file half-way gave a bare
    ``NotADirectoryError`` deep in the writing), and ``..`` may not follow a part that does
    not exist: the operating system cannot go up out of a missing folder, although
    ``os.path.normpath`` and ``os.makedirs`` pretend it can (``a/missing/../x`` failed only
    when the finished output was moved into place). Nothing is created.

    Raises
    ------
    ValidationError
        Naming ``path``, the part that is not a folder or does not exist, and the fix.
    """
    text = os.fspath(path)
    parts = pathlib.PurePath(text).parts
    current = ""
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        if os.path.isdir(current):
            continue
        if os.path.lexists(current):
            raise ValidationError(
                f"{name}={text!r}: {current!r} exists and is not a folder (a file or a broken "
                "link), so nothing can be written under it. Choose another path or move it."
            )
        if ".." in parts[i + 1 :]:
            raise ValidationError(
                f"{name}={text!r} goes up ('..') out of {current!r}, which does not exist: the "
                f"operating system cannot follow '..' out of a missing folder. Pass "
                f"{os.path.normpath(text)!r} instead, or create {current!r} first."
            )
        break
    return text


def check_fits_in_memory(nbytes, *, what, fix, headroom=0.9):
    """Raise :class:`InsufficientMemoryError` when ``nbytes`` exceed ``headroom`` of the memory
    available now, before anything is allocated.

    The OS hands out memory lazily, so without the check a process dies (killed for memory)
    far into the work, or numpy raises a bare ``MemoryError``. ``what`` says what would be
    held (``"read_images(engine='local') would hold 30,000 images"``), ``fix`` what to do.
    """
    import psutil
    from dask.utils import format_bytes

    available = psutil.virtual_memory().available
    if nbytes > headroom * available:
        raise InsufficientMemoryError(
            f"{what} in memory: {format_bytes(nbytes)}, but only {format_bytes(available)} is "
            f"available (at most {headroom:.0%} of it is used). {fix}"
        )
