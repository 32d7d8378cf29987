"""read_images: list, check and decode an image folder, decided once for both engines."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._dask import compute_all, maybe_client, split_rows
from .._validation import check_fits_in_memory
from ._decode import COLORS, check_block, decode_many, mtime, probe_all, read_block
from ._errors import check_any_left, read_error, unlisted_error, warn_skipped
from ._imageset import ImageSet
from ._listing import check_classes, select
from ._options import check_options, check_shuffle
from ._remote import check_workers_see
from ._workers import (
    check_exists_here,
    check_files_on,
    not_seen_by_workers,
    probe_on_workers,
    select_on_workers,
)

if TYPE_CHECKING:
    from .._typing import ImageSource, NDArray, StorageOptions

logger = logging.getLogger(__name__)

__all__ = ["read_images", "list_checked"]


def read_images(
    path: ImageSource,
    *,
    size: int | tuple[int, int] = (128, 128),
    color: str = "gray",
    engine: str = "local",
    chunk_size: int | None = None,
    errors: str = "raise",
    classes: Sequence[str] | None = None,
    files_on: str = "client",
    storage_options: StorageOptions | None = None,
    n_threads: int | None = None,
    shuffle: bool | int = False,
) -> ImageSet:
    """Read an image folder (or a list of files) into an :class:`ImageSet`.

    Parameters
    ----------
    path : str, os.PathLike, list of (path, label) pairs, or DataFrame
        A folder with one sub-folder per class at any depth (the class is the image's parent
        folder name, so ``chest_xray/train/NORMAL/x.jpeg`` is ``"NORMAL"``), local or a URL
        read through fsspec (``s3://bucket/chest_xray/train``, ``gs://``, ``https://``,
        ``memory://``; the package of its protocol, e.g. s3fs, must be installed on the
        client and the workers); or explicit
        ``(path, label)`` pairs; or a pandas/dask DataFrame with ``path`` and ``label`` columns
        (a dask DataFrame's two columns are computed: they are small). Explicit paths are not
        filtered by extension: a missing file or a non-image is an unreadable file (see
        ``errors``). Labels may be strings or integers; classes are named ``str(label)``.
    size : int or (int, int)
        Output ``(height, width)``; images are resized to it with bicubic antialiasing.
    color : {"gray", "rgb"}
        Output channels: 1 for ``"gray"``, 3 for ``"rgb"`` (gray files are repeated).
    engine : {"local", "dask"}
        ``"local"`` decodes in this process into numpy arrays; ``"dask"`` builds a lazy dask
        array chunked along the sample axis only, ``chunk_size`` files per task, with known
        chunk sizes; nothing is decoded until it is computed (except with ``errors="skip"``,
        see below).
    chunk_size : int, optional
        Files per dask task (and rows per chunk). Default: the ``dasktrain.images.chunk-size``
        setting (256 unless changed with ``dask.config.set``). Checked but unused by
        ``engine="local"``.
    errors : {"raise", "skip"}
        What to do with files that claim to be images but cannot be read. Headers are checked
        up front on both engines (cheap, no pixels decoded), so files that are not images raise
        at once. ``"skip"`` leaves unreadable files out, lists them in ``ImageSet.skipped`` and
        warns once with :class:`~dasktrain.exceptions.SkippedFilesWarning`. With
        ``engine="dask"``, ``"skip"`` decodes every file once on the cluster first to find the
        bad ones, so the chunk sizes stay known; ``"raise"`` raises at compute time for files
        whose header is fine but whose pixels are not. Folders that cannot be listed, files
        that are not regular files (named pipes, sockets, devices) and float images with
        NaN/inf or values outside [0, 1] are unreadable input too.
    classes : list of str, optional
        Class names in label order (``y == i`` means ``classes[i]``). A subset reads only those
        classes. By default all classes found, sorted.
    files_on : {"client", "workers"}
        Where the files are. ``"client"``: this machine lists the folder (the workers must see
        the same paths to decode them); with ``engine="dask"`` and a default client the headers
        are checked on the workers, in parallel, else here. ``"workers"`` (``engine="dask"``
        only): the files are on the workers' disks and may not exist here; the folder is
        listed on one worker, every worker must see it, and the headers are checked on the
        workers in blocks of ``chunk_size``. ``path`` must then be absolute. Uses the default
        Dask client. Remote files (URLs) are listed here and, with ``engine="dask"`` and a
        default client, their headers are checked on the workers, which read them anyway.
    storage_options : dict, optional
        For URLs: keyword arguments of the fsspec filesystem (``{"anon": True}``, keys,
        ``{"endpoint_url": ...}`` for S3-compatible stores), used on the client and sent with
        the tasks to the workers (so keep secrets in the workers' environment where you can).
    n_threads : int, optional
        ``engine="local"`` only: files decoded side by side, one thread each (Pillow releases
        the GIL while it decodes). Default: this machine's CPU count; 1 decodes one file after
        the other. Checked but unused by ``engine="dask"`` (a worker decodes with its own
        threads).
    shuffle : bool or int
        Put the files in a seeded random order (``True``: seed 0; an int: that seed) instead
        of class by class, on both engines alike. A chunk of a dask set then holds every
        class, which training that streams chunks needs (:func:`dasktrain.ddp.shard`: a
        batch mixes the rows of a few chunks only, and chunks of one class each would give
        batches of one class). ``paths`` and ``y`` follow the order.

    Returns
    -------
    ImageSet
        ``X`` float32 of shape ``(n, height, width, channels)`` in [0, 1], scaled by each
        file's bit depth (16-bit files are divided by 65535), and ``y`` int64.

    Raises
    ------
    DatasetLayoutError
        Not a folder, no images, images without a class folder, one class only, a name in
        ``classes`` that is not present, or a folder reached twice through a symbolic link.
    ValidationError
        A bad ``size``, ``color``, ``engine``, ``chunk_size``, ``errors``, ``classes``,
        ``files_on``, ``n_threads`` or ``shuffle``.
    ImageReadError
        With ``errors="raise"``, for files or folders that cannot be read (all of them are
        named). For the dask engine, files whose header is fine but whose pixels are not raise
        at compute time.
    InsufficientMemoryError
        With ``engine="local"``, before anything is decoded, when the images would need more
        than 90% of the memory available now (the message gives both numbers and suggests
        ``engine="dask"``).

    See Also
    --------
    ImageSet.to_numpy : compute a dask-engine set into a local one.

    Examples
    --------
    >>> from dasktrain.datasets import make_xray_like
    >>> root = make_xray_like(tmp_path / "xray", n_per_class=8, size=32)  # doctest: +SKIP
    >>> ds = read_images(root / "train", size=32, engine="dask")  # doctest: +SKIP
    >>> ds.X.chunks[0]  # doctest: +SKIP
    (12,)
    """
    opts = check_options(
        size=size,
        color=color,
        errors=errors,
        chunk_size=chunk_size,
        engine=engine,
        storage_options=storage_options,
        n_threads=n_threads,
    )
    files_on = check_files_on(files_on, engine)
    seed = check_shuffle(shuffle)
    found = _list(path, check_classes(classes), files_on, opts)
    if seed is not None:
        found.permute(seed)
    if opts.engine == "local":
        X, y = _decode_here(found, opts)
    else:
        X, y = _decode_lazily(found, opts)
    check_any_left(found.paths, found.skipped)
    warn_skipped(found.skipped)
    result = ImageSet(
        X,
        y,
        classes=found.classes,
        paths=found.paths,
        skipped=found.skipped,
        size=opts.size,
        color=opts.color,
        _labels=found.y,
    )
    logger.info("read_images: %r", result)
    return result


@dataclasses.dataclass
class _Found:
    """The files to read and what was left out: the listing as it is narrowed down."""

    paths: list
    y: np.ndarray
    classes: list
    skipped: list
    mtimes: list | None = None  # read on the workers when they checked the headers

    def permute(self, seed):
        """Put the files in a seeded random order (instead of class by class)."""
        order = np.random.default_rng(seed).permutation(len(self.paths))
        self.paths = [self.paths[i] for i in order]
        self.y = self.y[order]
        if self.mtimes is not None:
            self.mtimes = [self.mtimes[i] for i in order]

    def drop(self, bad):
        """Leave out the files ``bad`` (``[(path, reason)]``) and record them as skipped."""
        dropped = {p for p, _ in bad}
        keep = np.array([p not in dropped for p in self.paths], dtype=bool)
        self.paths = [p for p, k in zip(self.paths, keep) if k]
        self.y = self.y[keep]
        if self.mtimes is not None:
            self.mtimes = [m for m, k in zip(self.mtimes, keep) if k]
        self.skipped.extend(bad)


def list_checked(
    path: ImageSource,
    classes: Sequence[str] | None = None,
    storage_options: StorageOptions | None = None,
) -> tuple[list[str], NDArray, list[str]]:
    """``(paths, y, classes)``: the listing and header check of ``read_images(errors="raise")``
    on this machine, for an engine that reads the files its own way (Spark).

    The same rules as the other engines: folders that cannot be listed, files that are not
    regular files (named pipes, sockets, devices) and files that are not images (an empty
    file) raise :class:`ImageReadError` naming them, before anything is read.
    """
    check_exists_here(path)
    paths, y, classes, unlisted = select(path, check_classes(classes), storage_options)
    if unlisted:
        raise unlisted_error(unlisted)
    _, bad = probe_all(paths, storage_options)
    if bad:
        raise read_error(bad, when="opened as images")
    return paths, y, classes


def _list(path, classes, files_on, opts):
    """The listed images whose headers are fine; unreadable ones raise or are skipped."""
    so = opts.storage_options
    client = maybe_client() if opts.engine == "dask" else None
    if client is not None:
        check_workers_see(path, client)
    if files_on == "workers":
        paths, y, classes, _, bad, mtimes = select_on_workers(
            path, classes, opts.chunk_size, storage_options=so
        )
        found = _Found(paths, y, classes, [], mtimes)
    else:
        check_exists_here(path)
        paths, y, classes, unlisted = select(path, classes, so)
        if unlisted and opts.errors == "raise":
            raise unlisted_error(unlisted)
        # folders that could not be listed (errors="skip")
        found = _Found(paths, y, classes, list(unlisted))
        if client is not None:
            # The workers read the files anyway: they check the headers (and read versions),
            # in parallel. On this machine the check was a serial pass before any task ran:
            # 0.3 s per 1,000 JPEGs, a fifth of a 2-worker read.
            _, bad, found.mtimes = probe_on_workers(client, paths, opts.chunk_size, so)
            bad = not_seen_by_workers(bad)
        else:
            _, bad = probe_all(paths, so)
    if bad:
        if opts.errors == "raise":
            raise read_error(bad, when="opened as images")
        found.drop(bad)
        check_any_left(found.paths, found.skipped)
    return found


def _decode_here(found, opts):
    """The local engine: decode every file now, raising or skipping the failures."""
    _check_fits_in_memory(len(found.paths), opts.size, opts.color)
    X, failures = decode_many(
        found.paths, opts.size, opts.color, opts.storage_options, n_threads=opts.n_threads
    )
    if failures:
        bad = [(p, r) for _, p, r in failures]
        if opts.errors == "raise":
            raise read_error(bad, when="decoded")
        rows = np.ones(len(found.paths), dtype=bool)
        rows[[i for i, _, _ in failures]] = False
        X = X[rows]
        found.drop(bad)
    return X, found.y


def _decode_lazily(found, opts):
    """The dask engine: lazy arrays (after finding undecodable files for errors="skip")."""
    if opts.errors == "skip" and found.paths:
        bad = _find_undecodable(
            found.paths, opts.size, opts.color, opts.chunk_size, opts.storage_options
        )
        if bad:
            found.drop(bad)
    return _lazy_arrays(
        found.paths,
        found.y,
        opts.size,
        opts.color,
        opts.chunk_size,
        mtimes=found.mtimes,
        storage_options=opts.storage_options,
    )


def _check_fits_in_memory(n, size, color):
    """Raise :class:`InsufficientMemoryError` before decoding ``n`` images that cannot fit.

    The decoded array is allocated lazily by the OS, so without this check the process only
    dies (killed for memory) far into the decoding; the estimate needs no allocation.
    """
    h, w = size
    c = COLORS[color]
    check_fits_in_memory(
        n * h * w * c * np.dtype(np.float32).itemsize,
        what=f"read_images(engine='local') would hold {n} images of {h}x{w}x{c} float32",
        fix="Use engine='dask', which decodes chunk by chunk on the workers, or read fewer or "
        "smaller images (size=, color='gray').",
    )


def _find_undecodable(paths, size, color, chunk_size, storage_options=None):
    """``[(path, reason)]`` of the files that fail to decode, decoding each once (in tasks
    ``check-images-<token>``, on the cluster when there is a default client)."""
    import dask
    from dask.base import tokenize

    logger.info(
        "read_images(engine='dask', errors='skip'): decoding %d files once on the cluster to "
        "find unreadable ones, so the chunk sizes stay known",
        len(paths),
    )
    tasks = [
        dask.delayed(check_block, pure=True)(
            block,
            size,
            color,
            storage_options,
            dask_key_name=f"check-images-{tokenize(block, size, color, storage_options)}",
        )
        for block in split_rows(paths, chunk_size)
    ]
    return [bad for block in compute_all(tasks) for bad in block]


def _lazy_arrays(paths, y, size, color, chunk_size, mtimes=None, storage_options=None):
    """Lazy ``(X, y)``: one ``read-images`` task per ``chunk_size`` files, chunk sizes known."""
    import dask.array as da
    from dask.base import tokenize

    h, w = size
    c = COLORS[color]
    names = np.empty(len(paths), dtype=object)
    names[:] = paths
    # mtimes in the token: a rewritten file must not reuse a result cached on the cluster.
    # (Read on the workers when the files are there only: files_on="workers".)
    if mtimes is None:
        mtimes = [mtime(p, storage_options) for p in paths]
    token = tokenize(paths, mtimes, size, color, chunk_size, storage_options)
    P = da.from_array(names, chunks=chunk_size, name=f"image-paths-{token}")
    X = P.map_blocks(
        read_block,
        size,
        color,
        storage_options,
        dtype=np.float32,
        new_axis=[1, 2, 3],
        chunks=(P.chunks[0], (h,), (w,), (c,)),
        meta=np.empty((0, h, w, c), dtype=np.float32),
        name=f"read-images-{token}",
    )
    return X, da.from_array(y, chunks=(P.chunks[0],), name=f"image-labels-{token}")
