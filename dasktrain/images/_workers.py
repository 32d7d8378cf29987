"""``files_on="workers"``: files on the workers' disks, listed and checked there."""

from __future__ import annotations

import os

from .._dask import gather, get_client, result, split_rows, task_keys
from ..exceptions import DatasetLayoutError, ValidationError
from ._decode import mtime, probe_all
from ._errors import MAX_NAMED
from ._listing import encode_labels, list_images, pairs_from_input
from ._remote import is_remote

__all__ = [
    "FILES_ON",
    "check_files_on",
    "check_exists_here",
    "not_seen_by_workers",
    "probe_on_workers",
    "select_on_workers",
]

FILES_ON = ("client", "workers")
_WHAT = "read_images(engine='dask')"


def check_files_on(files_on, engine):
    """Validate ``files_on`` (``"workers"`` needs the dask engine)."""
    if files_on not in FILES_ON:
        raise ValidationError(f"files_on={files_on!r} must be one of {FILES_ON}.")
    if files_on == "workers" and engine != "dask":
        raise ValidationError(
            f"files_on='workers' needs engine='dask' (got engine={engine!r}): the local engine "
            "reads the files in this process, so they must be on this machine."
        )
    return files_on


def check_exists_here(path):
    """A folder path that does not exist here: say so, and how to read files on the workers."""
    if isinstance(path, (str, os.PathLike)) and not is_remote(path) and not os.path.exists(path):
        raise DatasetLayoutError(
            f"path={os.fspath(path)!r} is not a folder on this machine (it does not exist "
            "here). If the images are on the Dask workers' disks only, read them with "
            "read_images(..., engine='dask', files_on='workers'): the folder is then listed "
            "and checked on the workers."
        )


def not_seen_by_workers(bad):
    """``bad`` with a hint on the files that exist here but not where the workers looked."""
    hint = (
        " (the file exists on this machine but not on the worker: the workers read the same "
        "paths, so put the images on a file system every worker sees)"
    )
    return [
        (p, r + hint)
        if r.startswith("FileNotFoundError") and not is_remote(p) and os.path.isfile(p)
        else (p, r)
        for p, r in bad
    ]


def _probe_on_worker(paths, storage_options=None):
    """On a worker: header check and mtime of each path (see ``probe_all``, ``mtime``)."""
    info, bad = probe_all(paths, storage_options)
    return info, bad, [mtime(p, storage_options) for p in paths]


def _list_on_a_worker(client, root, storage_options=None):
    """``(paths, labels)`` of folder ``root`` as one worker lists it; every worker must see it."""
    if is_remote(root):  # every worker reads the same store: one lists it
        key = task_keys("list-images", 1)[0]
        return result(
            client.submit(list_images, root, storage_options, key=key, pure=False),
            what=_WHAT,
        )
    if not os.path.isabs(root):
        raise ValidationError(
            f"path={root!r}: files_on='workers' needs an absolute path (a relative one "
            "would be resolved in each worker's own current folder)."
        )
    seen = client.run(os.path.isdir, root)
    missing = sorted(w for w, ok in seen.items() if not ok)
    if missing:
        raise DatasetLayoutError(
            f"path={root!r} is not a folder on {len(missing)} of {len(seen)} workers "
            f"({', '.join(missing[:MAX_NAMED])}). With files_on='workers' every worker "
            "must see the same files (the same folder on each host, or a shared file "
            "system)."
        )
    key = task_keys("list-images", 1)[0]
    return result(client.submit(list_images, root, key=key, pure=False), what=_WHAT)


def probe_on_workers(client, paths, chunk_size, storage_options=None):
    """``(info, bad, mtimes)`` of ``paths``, checked on the workers in blocks."""
    blocks = split_rows(paths, chunk_size)
    keys = task_keys("probe-images", len(blocks))
    # storage_options positionally, never as a keyword of client.map (see _dask).
    futures = client.map(
        _probe_on_worker, blocks, [storage_options] * len(blocks), key=keys, pure=False
    )
    info, bad, mtimes = [], [], []
    for block_info, block_bad, block_mtimes in gather(client, futures, what=_WHAT):
        info += block_info
        bad += block_bad
        mtimes += block_mtimes
    return info, bad, mtimes


def select_on_workers(path, classes, chunk_size, storage_options=None):
    """Listing and header checks run on the workers, for files the client cannot see.

    Returns ``(paths, y, classes, info, bad, mtimes)`` (see :func:`~._listing.select` and
    :func:`~._decode.probe_all`).
    """
    client = get_client(None, what="read_images(files_on='workers')")
    if isinstance(path, (str, os.PathLike)):
        paths, labels = _list_on_a_worker(client, os.fspath(path), storage_options)
    else:
        paths, labels, _ = pairs_from_input(path)  # pairs and DataFrames list no folders
    keep, y, classes = encode_labels(labels, classes)
    paths, y = [p for p, k in zip(paths, keep) if k], y[keep]
    return (paths, y, classes, *probe_on_workers(client, paths, chunk_size, storage_options))
