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
import os

import numpy as np

from .. import _config
from .._validation import check_array, check_consistent_length, check_engine, is_dask_collection
from ..exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["save_features", "load_features"]

FORMAT = "dasktrain.features"
VERSION = 1


def _is_zarr_store(path):
    return any(
        os.path.exists(os.path.join(path, marker)) for marker in ("zarr.json", ".zgroup", ".zarray")
    )


def _write(root, path, name, arr):
    import dask.array as da

    if is_dask_collection(arr):
        # zarr needs regular chunks: keep the sample chunking, whole rows, last chunk smaller.
        step = max(1, max(arr.chunks[0]) if arr.chunks[0] else 1)
        arr = arr.rechunk((step,) + tuple(-1 for _ in range(arr.ndim - 1)))
        da.to_zarr(arr, path, component=name, mode="a")
    else:
        step = max(1, min(len(arr), int(_config.get("images.chunk-size", 256))))
        root.create_array(name, data=arr, chunks=(step,) + arr.shape[1:])


def save_features(path, X, y=None, classes=None, *, overwrite=False):
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
        Replace an existing store at ``path``. Only a zarr store is ever replaced: a directory
        holding anything else is refused.

    Returns
    -------
    path : str

    Raises
    ------
    ValidationError
        Bad shapes, NaN in a numpy X (a dask X is not scanned), y of another length,
        ``path`` already exists (without ``overwrite=True``) or is not a zarr store.

    See Also
    --------
    load_features
    """
    import zarr

    path = os.fspath(path)
    # A lazy X (features being extracted) is not scanned for NaN: that would run the whole
    # extraction twice. The extractors already reject NaN images chunk by chunk.
    X = check_array(X, name="X", ndim=2, allow_nan=is_dask_collection(X))
    if y is not None:
        y = check_array(y, name="y", ndim=1, allow_nan=False)
        check_consistent_length(X, y)
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise ValidationError(f"classes={classes!r} must be a sequence of class-name strings.")
        classes = list(classes)
    if os.path.exists(path):
        if not overwrite:
            raise ValidationError(
                f"{path!r} already exists; pass overwrite=True to replace it or choose another "
                "path."
            )
        if not _is_zarr_store(path):
            raise ValidationError(
                f"{path!r} exists and is not a zarr store; refusing to overwrite it. Choose "
                "another path."
            )
    root = zarr.open_group(path, mode="w")
    _write(root, path, "X", X)
    if y is not None:
        _write(root, path, "y", y)
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
    logger.info("saved features %s to %s", tuple(X.shape), path)
    return path


def load_features(path, *, engine="local"):
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
        ``path`` is missing or is not a dasktrain features store; unknown engine.

    See Also
    --------
    save_features
    """
    import zarr

    engine = check_engine(engine, allowed=("local", "dask"))
    path = os.fspath(path)
    if not os.path.isdir(path) or not _is_zarr_store(path):
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
    has_y = bool(attrs.get("has_y")) and "y" in root
    if engine == "dask":
        import dask.array as da

        X = da.from_zarr(path, component="X")
        y = da.from_zarr(path, component="y") if has_y else None
    else:
        X = np.asarray(root["X"][...])
        y = np.asarray(root["y"][...]) if has_y else None
    classes = attrs.get("classes")
    return X, y, (list(classes) if classes is not None else None)
