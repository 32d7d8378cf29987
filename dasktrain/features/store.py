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
from .._dask import maybe_client, watching
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


#: What a store written by :func:`save_features` holds at its top level (zarr v3, or v2 files).
_STORE_ENTRIES = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zmetadata", "X", "y"})


def _store_format(path):
    """The ``format`` attribute of the zarr group at ``path`` (None when there is none)."""
    import json

    for name, key in (("zarr.json", ("attributes", "format")), (".zattrs", ("format",))):
        try:
            with open(os.path.join(path, name), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        for k in key:
            meta = meta.get(k) if isinstance(meta, dict) else None
        if meta is not None:
            return meta
    return None


def _foreign_entries(path):
    """Entries of the folder ``path`` that a store written by save_features does not hold.

    ``X`` and ``y`` must be real folders (a link inside the store is not ours either).
    """
    foreign = []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry not in _STORE_ENTRIES:
            foreign.append(entry)
        elif entry in ("X", "y") and (os.path.islink(full) or not os.path.isdir(full)):
            foreign.append(entry)
        elif entry not in ("X", "y") and (os.path.islink(full) or not os.path.isfile(full)):
            foreign.append(entry)
    return foreign


def _protected(real):
    """Why the folder ``real`` (a resolved path) must never be replaced, or None."""
    cwd = os.path.realpath(os.getcwd())
    home = os.path.realpath(os.path.expanduser("~"))
    if os.path.dirname(real) == real:
        return "it is the root of a file system"
    if real == home:
        return "it is the home folder"
    if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        return "it is the current folder or one of its parents"
    return None


def _check_target(path, overwrite):
    """Validate where a store is written, before anything is created or deleted.

    Returns whether an existing store (a dasktrain store, nothing else) is to be replaced.
    """
    if path.strip() == "":
        raise ValidationError(
            f"path={path!r} is empty; pass the folder to create, e.g. 'features.zarr'."
        )
    if os.path.basename(os.path.normpath(path)) in (".", ".."):
        raise ValidationError(
            f"path={path!r} names the current or the parent folder; pass a new folder for the "
            "store, e.g. 'features.zarr'."
        )
    why = _protected(os.path.realpath(path))
    if why is not None:
        raise ValidationError(
            f"path={path!r} cannot hold a features store: {why}. Pass a new folder for the store, "
            "e.g. 'features.zarr'."
        )
    if os.path.islink(path):
        raise ValidationError(
            f"path={path!r} is a symbolic link (to {os.readlink(path)!r}); save_features does "
            "not write through links. Pass the real folder or another path."
        )
    if not os.path.lexists(path):
        return False
    if not overwrite:
        raise ValidationError(
            f"{path!r} already exists; pass overwrite=True to replace it or choose another path."
        )
    if not os.path.isdir(path):
        raise ValidationError(
            f"{path!r} exists and is not a folder; refusing to overwrite it. Choose another path."
        )
    if not os.listdir(path):
        return True  # an empty folder: nothing of the user's is lost
    if not _is_zarr_store(path) or _store_format(path) != FORMAT:
        raise ValidationError(
            f"{path!r} exists and is not a zarr store written by save_features; refusing to "
            "overwrite it. Choose another path."
        )
    foreign = _foreign_entries(path)
    if foreign:
        raise ValidationError(
            f"{path!r} is a features store but also holds {foreign[:10]!r}, which "
            "save_features did not write; refusing to overwrite it. Move them away or choose "
            "another path."
        )
    return True


def _swap_in(tmp, path, replace):
    """Move the finished store ``tmp`` to ``path``; the old store is deleted only afterwards."""
    import shutil
    import tempfile

    if not replace:
        os.rename(tmp, path)  # fails (nothing lost) if something appeared at path meanwhile
        return
    parent, name = os.path.split(os.path.abspath(path))
    old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    os.rmdir(old)  # only the unique name is wanted
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)  # put the old store back
        raise
    # Checked again: only what save_features writes is ever deleted.
    if _foreign_entries(old):
        logger.warning("left the previous store at %s: it holds files of another origin", old)
        return
    try:
        shutil.rmtree(old)
    except OSError as exc:  # the new store is in place; only the cleanup failed
        logger.warning("could not delete the previous store at %s: %s", old, exc)


def _check_inputs(X, y, classes):
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
    return X, y, classes


def _write_store(folder, X, y, classes):
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


def save_features(path, X, y=None, classes=None, *, overwrite=False) -> str:
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
    X, y, classes = _check_inputs(X, y, classes)
    replace = _check_target(path, overwrite)
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        _write_store(tmp, X, y, classes)
        _swap_in(tmp, path, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, nothing else
        raise
    logger.info("saved features %s to %s", tuple(X.shape), path)
    return path


def load_features(path, *, engine="local") -> tuple:
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
