"""An image folder read through Spark's ``binaryFile`` source, decoded like the other engines.

The files are listed and their headers checked by the images room, as for the other engines
(the same rules: hidden files and non-image names left out, the class is the parent folder's
name; folders that cannot be listed, named pipes, empty files and non-images raise, naming
them). Spark's ``binaryFile`` source reads them and each executor decodes the bytes with the
decoder both other engines use, so the arrays are equal to ``read_images(engine="local")``'s
bit for bit. Spark's own listing skips names starting with ``_`` (Hadoop's hidden files) and
cannot be told otherwise: such files are refused up front, and the frame is counted against
the listing, so an image Spark did not deliver is an error, never a missing row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import ImageReadError
from ..images import COLORS, MAX_NAMED, decode_bytes, list_checked
from ._session import quiet

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["read_images", "to_numpy"]

_SCHEMA = "id long, path string, label long, image binary"


def _local_path(uri: str) -> str:
    """The local path of a ``path`` value of Spark's ``binaryFile`` source.

    Spark writes ``file:`` and the path as it is, not percent-encoded (``file:/x/a b.png``,
    ``file:/x/a%20b.png``, ``file:/x/a#b.png``): parsing it as a URL gave ``a#b.png`` the
    path ``a`` and ``a%20b.png`` the path of ``a b.png``.
    """
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return uri[len("file:") :] if uri.startswith("file:") else uri


def _decoder(
    index: Mapping[str, int], labels: Sequence[int], size: tuple[int, ...], color: str
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: decode each file's bytes, keep only the listed files."""

    def decode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for pdf in batches:
            rows: list[tuple[int, str, int, bytes]] = []
            failed: list[str] = []
            for uri, content in zip(pdf["path"], pdf["content"]):
                path = _local_path(uri)
                if path not in index:
                    continue  # not an image dasktrain lists (hidden, other extension)
                try:
                    image = decode_bytes(bytes(content), size, color)
                except Exception as exc:  # noqa: BLE001 - reported with the file name
                    failed.append(f"{path}: {exc}")
                    continue
                rows.append((index[path], path, labels[index[path]], image.tobytes()))
            if failed:
                raise ImageReadError(
                    f"{len(failed)} image(s) could not be decoded: {'; '.join(failed[:5])}"
                )
            yield pd.DataFrame(rows, columns=["id", "path", "label", "image"])

    return decode


def _hidden_from_spark(name: str) -> str | None:
    """Why Spark's file listing cannot deliver a file or folder called ``name``, or None."""
    if (name.startswith("_") and "=" not in name) or name.startswith("."):
        return "starts with '_' (Hadoop's hidden files; there is no setting to read them)"
    if ":" in name:
        return "holds ':' (Hadoop's paths cannot; reading it fails)"
    return None


def _named(paths: Sequence[str]) -> str:
    shown = "\n  ".join(paths[:MAX_NAMED])
    more = f"\n  ... and {len(paths) - MAX_NAMED} more" if len(paths) > MAX_NAMED else ""
    return f"  {shown}{more}"


def _check_visible(root: str, paths: Sequence[str]) -> None:
    """Raise for listed images Spark's listing would skip or fail on: the other engines read
    them."""
    hidden: dict[str, str] = {}
    for p in paths:
        why = [w for w in map(_hidden_from_spark, os.path.relpath(p, root).split(os.sep)) if w]
        if why:
            hidden[p] = why[0]
    if hidden:
        named = _named([f"{p}: its name {why}" for p, why in hidden.items()])
        raise ImageReadError(
            f"{len(hidden)} of the {len(paths)} images under {root!r} cannot be read by "
            f"Spark's file sources, although the local and dask engines read them:\n{named}\n"
            "Rename them (no leading '_', no ':' in a file or folder name), or read this folder "
            "with engine='local' or 'dask'."
        )


def _check_complete(df: DataFrame, paths: Sequence[str], root: str) -> None:
    """Materialise the cached frame and check its ids against the listing: each listed image
    exactly once. Raise naming the images Spark did not deliver."""
    ids = [r[0] for r in df.select("id").collect()]
    if len(ids) == len(paths) and set(ids) == set(range(len(paths))):
        return
    df.unpersist()
    seen = set(ids)
    missing = [p for i, p in enumerate(paths) if i not in seen]
    twice = len(ids) - len(seen)
    raise ImageReadError(
        f"Spark's binaryFile source delivered {len(seen)} of the {len(paths)} images listed "
        f"under {root!r}" + (f" ({twice} of them twice)" if twice else "") + "; not read:\n"
        f"{_named(missing)}\nCheck that Spark sees the same files (a link, a name its listing "
        "hides), or use engine='local' or 'dask'."
    )


@quiet()
def read_images(
    spark: SparkSession,
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (64, 64),
    color: str = "gray",
) -> tuple[DataFrame, list[str]]:
    """Read a class-per-directory image folder into a cached Spark DataFrame.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    path : str or os.PathLike
        The folder (``root/NORMAL/*.png``, ``root/PNEUMONIA/*.png``).
    size : (int, int)
        ``(height, width)`` of the decoded images.
    color : {"gray", "rgb"}

    Returns
    -------
    df : pyspark.sql.DataFrame
        Columns ``id`` (the file's index in :func:`~dasktrain.images.list_images` order),
        ``path``, ``label`` (class index) and ``image`` (float32 pixels as bytes); cached and
        already computed (counted against the listing).
    classes : list of str

    Raises
    ------
    ImageReadError
        Before Spark reads anything, as ``read_images(engine="local")`` raises: folders that
        cannot be listed, files that are not regular files or not images. Images whose name
        (or a folder's on the way) starts with ``_``, which Spark's listing skips. After the
        read: an image that Spark did not deliver, or that could not be decoded (the Spark
        job fails naming the file).
    DatasetLayoutError
        As for :func:`dasktrain.images.read_images`.
    """
    paths, y, classes = list_checked(path)
    root = os.path.abspath(os.fspath(path))
    _check_visible(root, paths)
    index = {p: i for i, p in enumerate(paths)}
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    raw = files.load(root).select("path", "content")
    fn = _decoder(index, y.tolist(), tuple(size), color)
    df = raw.mapInPandas(fn, schema=_SCHEMA).cache()
    _check_complete(df, paths, root)
    return df, classes


@quiet()
def to_numpy(
    df: DataFrame, *, size: tuple[int, int] = (64, 64), color: str = "gray"
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a frame from :func:`read_images`, in ``id`` order."""
    rows = df.select("id", "label", "image").orderBy("id").collect()
    h, w = size
    shape = (h, w, COLORS[color])
    X = np.stack([np.frombuffer(r["image"], np.float32).reshape(shape) for r in rows])
    return X, np.array([r["label"] for r in rows], dtype=np.int64)
