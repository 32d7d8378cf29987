"""An image folder read through Spark's ``binaryFile`` source, decoded like the other engines.

The files are listed by :func:`dasktrain.images.list_images` (the same rules: hidden files and
non-image names left out, the class is the parent folder's name) and read by Spark's
``binaryFile`` source; each executor decodes the bytes with the decoder both other engines use,
so the arrays are equal to ``read_images(engine="local")``'s bit for bit.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import numpy as np

from ..exceptions import ImageReadError
from ..images import list_images
from ..images._decode import COLORS, decode_bytes
from ..images._listing import encode_labels
from ._session import quiet

__all__ = ["read_images", "to_numpy"]

_SCHEMA = "id long, path string, label long, image binary"


def _local_path(uri):
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


def _decoder(index, labels, size, color):
    """The ``mapInPandas`` function: decode each file's bytes, keep only the listed files."""

    def decode(batches):
        import pandas as pd

        for pdf in batches:
            rows, failed = [], []
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


@quiet()
def read_images(spark, path, *, size=(64, 64), color="gray"):
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
        ``path``, ``label`` (class index) and ``image`` (float32 pixels as bytes).
    classes : list of str
    """
    paths, names = list_images(path)
    _, y, classes = encode_labels(names, None)
    index = {p: i for i, p in enumerate(paths)}
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    raw = files.load(os.fspath(os.path.abspath(path))).select("path", "content")
    fn = _decoder(index, y.tolist(), tuple(size), color)
    return raw.mapInPandas(fn, schema=_SCHEMA).cache(), classes


@quiet()
def to_numpy(df, *, size=(64, 64), color="gray"):
    """``(X, y)`` of a frame from :func:`read_images`, in ``id`` order."""
    rows = df.select("id", "label", "image").orderBy("id").collect()
    h, w = size
    shape = (h, w, COLORS[color])
    X = np.stack([np.frombuffer(r["image"], np.float32).reshape(shape) for r in rows])
    return X, np.array([r["label"] for r in rows], dtype=np.int64)
