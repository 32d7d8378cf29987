"""Save extracted features (with labels and class names) to zarr and read them back.

A large extraction is done once: :func:`save_features` writes a dask array chunk by chunk on the
workers (``dask.array.to_zarr``), a numpy array in one go, into a zarr group::

    path/            zarr group, attrs: format, version, classes, n_samples, n_features
    path/X           (n_samples, n_features) float features, chunked along the samples
    path/y           (n_samples,) labels (when given)

:func:`load_features` returns numpy arrays (``engine="local"``) or lazy dask arrays backed by
the store (``engine="dask"``, ``dask.array.from_zarr``).
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _config
from .._dask import maybe_client, watching
from .._validation import (
    check_array,
    check_consistent_length,
    check_engine,
    check_fits_in_memory,
    is_dask_collection,
)
from ..exceptions import ValidationError
from ._store_files import FORMAT, check_target, is_zarr_store, swap_in

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._typing import Array, ArrayLike, NDArray

logger = logging.getLogger(__name__)

__all__ = ["save_features", "load_features"]

VERSION = 1


def _write(root: Any, path: str, name: str, arr: Any) -> None:
    import dask.array as da

    if is_dask_collection(arr):
        # zarr needs regular chunks: keep the sample chunking, whole rows, last chunk smaller.
        step = max(1, max(arr.chunks[0]) if arr.chunks[0] else 1)
        arr = arr.rechunk((step,) + tuple(-1 for _ in range(arr.ndim - 1)))
        # Behind the paused-worker guard: dask's own compute waits on the cluster.
        with watching(maybe_client(), "save_features"):
            da.to_zarr(arr, path, component=name, mode="a")
    else:
        step = max(1, min(len(arr), int(_config.get("images.chunk-size", 256))))
        # shape + dtype, then a write: create_array(data=...) only exists from zarr 3.1, and
        # this form works on every zarr 3 that pyproject.toml allows (3.0.8 and later).
        z = root.create_array(
            name, shape=arr.shape, dtype=arr.dtype, chunks=(step,) + arr.shape[1:]
        )
        z[...] = arr


def _check_inputs(
    X: ArrayLike, y: ArrayLike | None, classes: Sequence[str] | None
) -> tuple[Any, Any, list[str] | None]:
    # A lazy X (features being extracted) is not scanned for NaN: that would run the whole
    # extraction twice. The extractors already reject NaN images chunk by chunk.
    Xc = check_array(X, name="X", ndim=2, allow_nan=is_dask_collection(X))
    yc = None
    if y is not None:
        yc = check_array(y, name="y", ndim=1, allow_nan=False)
        check_consistent_length(Xc, yc)
    names = None
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise ValidationError(f"classes={classes!r} must be a sequence of class-name strings.")
        names = list(classes)
    return Xc, yc, names


def _write_store(folder: str, X: Any, y: Any, classes: list[str] | None) -> None:
    """The arrays and the attributes of a store, written into ``folder``."""
    import zarr

    root = zarr.open_group(folder, mode="w")
    _write(root, folder, "X", X)
    if y is not None:
        _write(root, folder, "y", y)
    root.attrs.update(
        {
            "format": FORMAT,
            "version": VERSION,
            "classes": classes,
            "has_y": y is not None,
            "n_samples": int(X.shape[0]),
            "n_features": int(X.shape[1]),
        }
    )


def save_features(
    path: str | os.PathLike[str],
    X: ArrayLike,
    y: ArrayLike | None = None,
    classes: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Write features ``X`` (and labels ``y``, class names ``classes``) to a zarr store.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the zarr store to create.
    X : ndarray or dask array of shape (n_samples, n_features)
        Features; a dask array is written chunk by chunk where its chunks live (computed by
        this call, not gathered to the driver).
    y : ndarray or dask array of shape (n_samples,), optional
        Labels.
    classes : sequence of str, optional
        Class names (``ImageSet.classes``); ``y`` holds indices into it.
    overwrite : bool, default False
        Replace an existing store at ``path``. Only a store written by ``save_features`` (its
        ``format`` attribute says so) that holds nothing else is ever replaced; an empty
        folder is used as it is. Anything else is refused.

    Returns
    -------
    path : str

    Raises
    ------
    ValidationError
        Bad shapes, NaN in a numpy X (a dask X is not scanned), y of another length; ``path``
        empty, ``"."``, the current folder or one of its parents, the home folder, a file
        system root or a symbolic link; ``path`` already exists (without ``overwrite=True``)
        or is not a store written by save_features, or also holds other files.

    Notes
    -----
    Every check runs before anything is written. The store is written into a new hidden
    folder beside ``path`` and moved into place when it is complete, so an interrupted save
    leaves any previous store intact; with ``overwrite=True`` the previous store is deleted
    only after the new one is in place.

    See Also
    --------
    load_features
    """
    import shutil
    import tempfile

    path = os.fspath(path)
    X_, y_, classes_ = _check_inputs(X, y, classes)
    replace = check_target(path, overwrite)
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        _write_store(tmp, X_, y_, classes_)
        swap_in(tmp, path, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, nothing else
        raise
    logger.info("saved features %s to %s", tuple(X_.shape), path)
    return path


def load_features(
    path: str | os.PathLike[str], *, engine: str = "local"
) -> tuple[Array, Array | None, list[str] | None]:
    """Read features written by :func:`save_features`.

    Parameters
    ----------
    path : str or os.PathLike
    engine : {"local", "dask"}, default "local"
        ``"local"`` reads numpy arrays into memory; ``"dask"`` returns lazy dask arrays backed
        by the store (chunks as saved).

    Returns
    -------
    X : ndarray or dask array of shape (n_samples, n_features)
    y : ndarray, dask array or None
    classes : list of str or None

    Raises
    ------
    ValidationError
        ``path`` is missing or is not a dasktrain features store; unknown engine; the store
        does not hold together (checked before anything is read: X not 2-d numeric, y not
        1-d numeric or of another length than X, ``n_samples``/``n_features``/``has_y``
        other than the arrays, ``classes`` not a list of names; and labels that are not
        indices into ``classes``, on the dask engine when ``y`` is computed). The message
        names the store and what is wrong.
    InsufficientMemoryError
        ``engine="local"`` and the arrays need more than 90% of the memory available now;
        ``engine="dask"`` and the store has so many chunks that dask's graph would not fit.

    See Also
    --------
    save_features
    """
    import zarr

    engine = check_engine(engine, allowed=("local", "dask"))
    path = os.fspath(path)
    if not os.path.isdir(path) or not is_zarr_store(path):
        raise ValidationError(
            f"{path!r} is not a zarr store; write one with save_features(path, X, y, classes)."
        )
    root = zarr.open_group(path, mode="r")
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT or "X" not in root:
        raise ValidationError(
            f"{path!r} is a zarr store but not one written by save_features "
            f"(attrs {sorted(attrs)!r}); write it with save_features(path, X, y, classes)."
        )
    X, y, classes = _check_store(path, root, attrs)
    if engine == "dask":
        return (*_lazy(path, X, y, classes), classes)
    # Python ints: zarr's own nbytes wraps around past 2**63 (a 2**40 x 2**40 X said 8 TiB).
    nbytes = sum(math.prod(a.shape) * a.dtype.itemsize for a in (X, y) if a is not None)
    check_fits_in_memory(
        nbytes,
        what=f"load_features({path!r}) would hold X of shape {X.shape} ({X.dtype})",
        fix="Pass engine='dask' to read it chunk by chunk where it is used.",
    )
    X = np.asarray(X[...])
    y = np.asarray(y[...]) if y is not None else None
    if y is not None and classes is not None:
        _check_labels(y, len(classes), path)
    return X, y, classes


def _damaged(path: str, what: str) -> ValidationError:
    """The error for a store whose arrays and metadata do not hold together."""
    return ValidationError(
        f"the features store {path!r} does not hold together: {what}. save_features writes a "
        "2-d numeric X, a 1-d numeric y with one label per row of X, and a list of class "
        "names; write the store again with save_features(path, X, y, classes, overwrite=True)."
    )


def _array(root: Any, name: str, path: str) -> Any:
    import zarr

    node = root[name]
    if not isinstance(node, zarr.Array):
        raise _damaged(path, f"{name} is a {type(node).__name__}, not an array")
    return node


def _check_store(path: str, root: Any, attrs: dict[str, Any]) -> tuple[Any, Any, list[str] | None]:
    """``(X, y or None, classes)`` as zarr arrays and a list, checked against each other and
    the metadata before anything is read (shapes, dtypes, lengths, ``classes``)."""
    X = _array(root, "X", path)
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise _damaged(path, f"X is {X.ndim}-d of dtype {X.dtype} (shape {X.shape})")
    for key, axis, unit in (("n_samples", 0, "rows"), ("n_features", 1, "columns")):
        if key in attrs and attrs[key] != X.shape[axis]:
            said = f"{key}={attrs[key]!r}"
            raise _damaged(path, f"its metadata says {said} but X has {X.shape[axis]} {unit}")
    has_y = attrs.get("has_y", "y" in root)
    if has_y is not ("y" in root):
        held = "holds a y" if "y" in root else "holds no y"
        raise _damaged(path, f"its metadata says has_y={has_y!r} but the store {held}")
    y = _array(root, "y", path) if has_y else None
    if y is not None and (y.ndim != 1 or y.dtype.kind not in "biuf"):
        raise _damaged(path, f"y is {y.ndim}-d of dtype {y.dtype} (shape {y.shape})")
    if y is not None and y.shape[0] != X.shape[0]:
        raise _damaged(path, f"y has {y.shape[0]} rows but X has {X.shape[0]}")
    classes = attrs.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise _damaged(path, f"classes is {classes!r}, not a list of class names")
    return X, y, classes


def _check_labels(y: ArrayLike, n_classes: int, path: str) -> NDArray:
    """Raise when a label of ``y`` is not an index into the ``n_classes`` class names."""
    labels = np.asarray(y)
    bad = (labels < 0) | (labels >= n_classes) | (labels != np.floor(labels))
    if bad.any():
        shown = np.unique(labels[bad])[:10].tolist()
        raise _damaged(
            path,
            f"y holds labels {shown!r} that are not indices 0..{n_classes - 1} into its "
            f"{n_classes} classes",
        )
    return labels


#: dask keeps about this much per chunk while it builds and runs a graph (keys, tasks).
_GRAPH_BYTES_PER_CHUNK = 1024


def _lazy(path: str, X: Any, y: Any, classes: list[str] | None) -> tuple[Any, Any]:
    """Lazy ``(X, y)`` backed by the store; labels are checked chunk by chunk when computed."""
    import dask.array as da

    n_chunks = math.prod(X.cdata_shape) + (math.prod(y.cdata_shape) if y is not None else 0)
    check_fits_in_memory(
        n_chunks * _GRAPH_BYTES_PER_CHUNK,
        what=(
            f"load_features({path!r}, engine='dask'): X of shape {X.shape} in chunks of "
            f"{X.chunks} makes {n_chunks:,} chunks, whose graph alone (about 1 kB each) dask "
            "would hold"
        ),
        fix="The store is damaged or was written with tiny chunks: write it again with "
        "save_features(path, X, y, classes, overwrite=True), which keeps whole rows per chunk.",
    )
    Xd = da.from_zarr(path, component="X")
    yd = da.from_zarr(path, component="y") if y is not None else None
    if yd is not None and classes is not None:
        yd = yd.map_blocks(_check_labels, dtype=yd.dtype, path=path, n_classes=len(classes))
    return Xd, yd
