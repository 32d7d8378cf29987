"""Where a features store may be written, and which files in it are the store's own.

:func:`~dasktrain.features.save_features` never deletes what it did not write: before an
``overwrite=True`` replaces a store (and again before the old copy is deleted) every file in
it is checked against what a store holds: the group's metadata, and in ``X/`` and ``y/`` the
array's metadata and the chunk files of its own chunk grid. A user's notes in ``X/``, a file
named like a chunk outside the grid, a link, or a ``y/`` that is no zarr array make the store
"foreign", and the overwrite is refused, naming them.
"""

from __future__ import annotations

import logging
import os
import re

from .._validation import check_folder_path
from ..exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "is_zarr_store", "check_target", "swap_in"]

FORMAT = "dasktrain.features"


def is_zarr_store(path: str) -> bool:
    return any(
        os.path.exists(os.path.join(path, marker)) for marker in ("zarr.json", ".zgroup", ".zarray")
    )


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
    """Entries of the store folder ``path`` that save_features did not write (relative paths).

    At the top level only the group's metadata, ``X`` and ``y``; inside ``X`` and ``y`` only
    what :func:`_foreign_in_array` accepts. A link anywhere is not the store's either.
    """
    foreign = []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry not in _STORE_ENTRIES or os.path.islink(full):
            foreign.append(entry)
        elif entry in ("X", "y"):
            foreign += _foreign_in_array(path, entry)
        elif not os.path.isfile(full):
            foreign.append(entry)
    return foreign


#: The metadata files of a zarr array folder (v3, and v2 for stores of older zarr versions).
_ARRAY_META = frozenset({"zarr.json", ".zarray", ".zattrs"})


def _foreign_in_array(path, name):
    """The files and links under the array folder ``path/name`` that are not its own: its
    metadata, or a chunk file whose key lies on the array's chunk grid. A folder that is no
    zarr array is foreign as a whole (``name/``)."""
    import zarr

    folder = os.path.join(path, name)
    if not os.path.isdir(folder):
        return [name]
    try:
        meta = zarr.open_array(folder, mode="r").metadata
        grid = [-(-s // c) for s, c in zip(meta.shape, meta.chunks)]
    except Exception:  # noqa: BLE001 - whatever zarr cannot open as an array is not ours
        return [f"{name}/"]
    foreign = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        for entry in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.normpath(os.path.join(rel_dir, entry)).replace(os.sep, "/")
            full = os.path.join(dirpath, entry)
            ours = not os.path.islink(full) and (
                rel in _ARRAY_META or _is_chunk_key(meta, grid, rel)
            )
            if not ours:
                foreign.append(f"{name}/{rel}")
    return sorted(foreign)


def _is_chunk_key(meta, grid, rel):
    """True when ``rel`` is the key zarr gives one chunk of the grid (``c/0/3``, ``0.3``)."""
    body = rel[2:] if rel.startswith("c/") else rel
    try:
        coords = tuple(int(part) for part in re.split(r"[/.]", body))
    except ValueError:
        coords = ()
    if len(coords) != len(grid) or not all(0 <= i < n for i, n in zip(coords, grid)):
        return False
    return meta.encode_chunk_key(coords) == rel


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


def check_target(path: str, overwrite: bool) -> bool:
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
        check_folder_path(path)  # a file on the way, or '..' out of a missing folder
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
    if not is_zarr_store(path) or _store_format(path) != FORMAT:
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


def swap_in(tmp: str, path: str, replace: bool) -> None:
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
