"""Listing and selection: which files are images, of which class.

A class-per-directory folder, a list of ``(path, label)`` pairs or a DataFrame becomes
``(paths, y, classes)``; folders that cannot be listed are returned, never dropped silently.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .._dask import compute_if_dask
from ..exceptions import DatasetLayoutError, ValidationError
from ._errors import MAX_NAMED, reason, unlisted_error
from ._remote import is_remote, walk_remote

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._typing import ImageSource, NDArray, PathLike, StorageOptions

    #: ``(paths, labels, unlisted)``: the images, their labels, the folders not listed
    Listing = tuple[list[str], list[Any], list[tuple[str, str]]]

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_classes",
    "list_images",
    "pairs_from_input",
    "encode_labels",
    "select",
]

#: File extensions (lower case) that are read as images; everything else is ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff"})


def check_classes(classes: Sequence[str] | None) -> list[str] | None:
    """``classes`` as a list of distinct class names (or None: every class found)."""
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ValidationError(
            f"classes={classes!r} must be a list of class names (strings), "
            "for example classes=['NORMAL', 'PNEUMONIA']."
        )
    names = list(classes)
    dup = sorted(c for c, k in Counter(names).items() if k > 1)
    if dup:
        raise ValidationError(f"classes={names!r} names {dup!r} more than once.")
    return names


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(
    path: PathLike, storage_options: StorageOptions | None = None
) -> tuple[list[str], list[str]]:
    """List the image files under a class-per-directory folder.

    Parameters
    ----------
    path : str or os.PathLike
        Root folder. Each image's class is the name of its parent folder, at any depth, so
        ``root/train/NORMAL/a.png`` and ``root/test/NORMAL/b.png`` are both ``"NORMAL"``.
        A URL (``s3://bucket/xray/train``) is listed through fsspec.
    storage_options : dict, optional
        For a URL: keyword arguments of its fsspec filesystem.

    Returns
    -------
    paths : list of str
        Absolute paths in a deterministic (sorted) order.
    labels : list of str
        The class name of each path.

    Raises
    ------
    DatasetLayoutError
        When ``path`` is not a folder, holds no image files, holds images directly in the
        root (they have no class folder), or reaches one folder under two names (a class
        folder that is a link to another one: its images would get two labels).
    ImageReadError
        When a folder cannot be listed (permissions): its images would vanish silently.
        :func:`read_images` with ``errors="skip"`` leaves such folders out and reports them.
    """
    paths, labels, unlisted = _walk(path, storage_options)
    if unlisted:
        raise unlisted_error(unlisted)
    return paths, labels


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _not_a_folder(path: PathLike) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"path={os.fspath(path)!r} is not a folder; pass a folder with one sub-folder per "
        "class, a list of (path, label) pairs, or a DataFrame with 'path' and 'label' columns."
    )


def _walk_remote(url: str, storage_options: StorageOptions | None) -> Listing:
    """:func:`_walk` for a URL (fsspec): no links to follow, no folders it cannot list."""
    found = walk_remote(url, storage_options)
    if found is None:
        raise _not_a_folder(url)
    paths, labels, loose = found
    names = [n for n in loose if _is_image_name(n)]
    keep = [i for i, p in enumerate(paths) if _is_image_name(p.rsplit("/", 1)[-1])]
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    _check_found(url, paths, names, [])
    return paths, labels, []


def _check_found(
    root: PathLike, paths: list[str], loose: list[str], unlisted: list[tuple[str, str]]
) -> None:
    """Raise for a folder with no images, or with images outside any class folder."""
    if not paths and not loose and not unlisted:
        raise DatasetLayoutError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) were found under "
            f"{root!r}. Check the path; hidden files and other extensions are ignored."
        )
    if loose:
        shown = ", ".join(loose[:MAX_NAMED]) + (" ..." if len(loose) > MAX_NAMED else "")
        what = "no class sub-folders: " if not paths else ""
        raise DatasetLayoutError(
            f"{what}{len(loose)} image(s) lie directly in {root!r} ({shown}) without a class "
            "folder. Put each image in a sub-folder named after its class (root/NORMAL/x.png, "
            "root/PNEUMONIA/y.png), or pass a list of (path, label) pairs."
        )


def _walk(path: PathLike, storage_options: StorageOptions | None = None) -> Listing:
    """``(paths, labels, unlisted)``: the images under ``path`` and the folders that could not
    be listed, as ``(folder, reason)``; raises DatasetLayoutError for the layout problems."""
    if is_remote(path):
        return _walk_remote(path, storage_options)
    root = os.path.abspath(os.fspath(path))
    if not os.path.isdir(root):
        raise _not_a_folder(path)
    paths: list[str] = []
    labels: list[object] = []
    loose: list[str] = []
    unlisted: list[tuple[str, str]] = []
    seen: dict[str, str] = {}  # resolved folder -> the first path it was reached by

    def onerror(exc: OSError) -> None:
        # os.walk skips a folder it cannot list unless told: its images would just vanish.
        unlisted.append((exc.filename or root, reason(exc)))

    # followlinks: a class folder that is a symlink (a common way to assemble a data set) must
    # not vanish silently.
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            if _inside(os.path.realpath(os.path.dirname(dirpath)), real):
                # A link back up the tree (to an ancestor of itself): a loop, not data.
                logger.debug("not following %s: it links back to %s", dirpath, seen[real])
                continue
            raise DatasetLayoutError(
                f"{seen[real]!r} and {dirpath!r} are the same folder ({real!r}, reached through "
                "a symbolic link): its images would be read twice, under two class names. "
                "Remove the link, or pass an explicit list of (path, label) pairs."
            )
        seen[real] = dirpath
        # Hidden folders (.git, .ipynb_checkpoints) never hold data; sort for a stable order.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in filenames if _is_image_name(f))
        if dirpath == root:
            loose.extend(names)
            continue
        label = os.path.basename(dirpath)
        for name in names:
            paths.append(os.path.join(dirpath, name))
            labels.append(label)
    _check_found(root, paths, loose, unlisted)
    return paths, labels, unlisted


def _absolute(p: PathLike) -> str:
    """A local path made absolute; a URL (``s3://...``) kept as it is."""
    return p if is_remote(p) else os.path.abspath(os.fspath(p))


def pairs_from_input(path: ImageSource, storage_options: StorageOptions | None = None) -> Listing:
    """Return ``(paths, labels, unlisted)`` from a folder, a list of pairs, or a DataFrame."""
    if isinstance(path, (str, os.PathLike)):
        return _walk(path, storage_options)
    columns = getattr(path, "columns", None)
    if columns is not None:
        missing = {"path", "label"} - set(columns)
        if missing:
            raise ValidationError(
                f"the DataFrame has columns {list(columns)!r} but needs 'path' and 'label' "
                f"(missing: {sorted(missing)!r}); rename them with df.rename(columns=...)."
            )
        # The listing is small (two columns of names): a dask DataFrame is brought to the
        # driver so the number of images, and so the chunk sizes, are known.
        frame = compute_if_dask(cast("Any", path)[["path", "label"]])  # a DataFrame
        pairs = list(zip(frame["path"].tolist(), frame["label"].tolist()))
    else:
        try:
            pairs = [tuple(p) for p in path]
        except TypeError:
            pairs = None
        if pairs is None or any(len(p) != 2 for p in pairs):
            raise ValidationError(
                f"path={path!r} must be a folder, a list of (path, label) pairs, or a pandas/dask "
                "DataFrame with 'path' and 'label' columns."
            )
    if not pairs:
        raise DatasetLayoutError(
            "the list of (path, label) pairs is empty; there is nothing to read."
        )
    paths = [_absolute(p) for p, _ in pairs]
    return paths, [lab for _, lab in pairs], []


def encode_labels(
    labels: Sequence[Any], classes: Sequence[str] | None
) -> tuple[NDArray, NDArray, list[str]]:
    """Map labels to class indices; return ``(keep_mask, y, class_names)``."""
    names = [str(lab) for lab in labels]
    if classes is None:
        # Sort by the labels' own order (so integer labels 2 < 10), then name them as strings.
        try:
            uniq = sorted(set(labels))
        except TypeError:
            uniq = sorted(set(names))
        names_found = list(dict.fromkeys(str(u) for u in uniq))
    else:
        found = set(names)
        unknown = [c for c in classes if c not in found]
        if unknown:
            raise DatasetLayoutError(
                f"classes={classes!r}: {unknown!r} not found among the classes present "
                f"{sorted(found)!r}. Check the spelling (class names are folder names)."
            )
        names_found = list(classes)
    if len(names_found) < 2:
        raise DatasetLayoutError(
            f"only one class was found ({names_found!r}); a classifier needs at least two. Put the "
            "images of each class in their own folder (root/NORMAL, root/PNEUMONIA)."
        )
    index = {c: i for i, c in enumerate(names_found)}
    y = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    return y >= 0, y, names_found


def select(
    path: ImageSource, classes: list[str] | None, storage_options: StorageOptions | None = None
) -> tuple[list[str], NDArray, list[str], list[tuple[str, str]]]:
    """``(paths, y, classes, unlisted)``: the listed images of the chosen classes, labels
    encoded, and the folders that could not be listed (``(folder, reason)``)."""
    paths, labels, unlisted = pairs_from_input(path, storage_options)
    if not paths:  # every image folder was unlisted
        raise unlisted_error(unlisted)
    try:
        keep, y, classes = encode_labels(labels, classes)
    except DatasetLayoutError as exc:
        if unlisted:  # a class is missing because its folder could not be listed
            raise unlisted_error(unlisted) from exc
        raise
    return [p for p, k in zip(paths, keep) if k], y[keep], classes, unlisted
