"""CNN features of images in a Spark DataFrame, one ``mapInPandas`` task per partition.

The extractor is dasktrain's own :class:`~dasktrain.features.CNNFeatures` on the local engine
with one torch thread per task (a ``local[N]`` session runs N tasks at once, as a dask cluster
runs one task per worker thread). Its network comes from the per-process cache, so each Spark
Python worker builds it once and reuses it for every later partition: the same weights (same
seed or file) as the other engines, hence features equal to theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..features import CNNFeatures
from ..images import COLORS
from ._frames import collect_column, image_frame
from ._session import quiet

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["cnn_features", "image_features"]


def _extractor(
    ext: CNNFeatures, shape: tuple[int, ...]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def features(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for pdf in batches:
            X = np.stack([np.frombuffer(b, np.float32).reshape(shape) for b in pdf["image"]])
            F = ext.transform(X) if len(X) else np.empty((0, 0), np.float32)
            yield pd.DataFrame({"id": pdf["id"], "label": pdf["label"], "features": list(F)})

    return features


@quiet()
def cnn_features(
    df: DataFrame,
    backbone: str = "smallcnn",
    *,
    size: tuple[int, int] = (64, 64),
    color: str = "gray",
    seed: int = 0,
    **kwargs: Any,
) -> DataFrame:
    """Features of the ``image`` column of ``df`` (from :func:`~dasktrain.spark.read_images`).

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Columns ``id``, ``label`` and ``image`` (float32 pixel bytes of ``size`` x ``color``).
    backbone : str
        A :class:`~dasktrain.features.CNNFeatures` backbone.
    size, color
        The images' shape, as read.
    seed : int
        Seed of the network's random weights (as for the other engines).
    **kwargs
        More :class:`~dasktrain.features.CNNFeatures` parameters (``pool``, ``weights``,
        ``batch_size``).

    Returns
    -------
    pyspark.sql.DataFrame
        ``id``, ``label`` and ``features`` (``array<float>``), cached.
    """
    shape = (*size, COLORS[color])
    ext = CNNFeatures(backbone, engine="local", seed=seed, n_threads=1, **kwargs)
    ext.fit(np.zeros((1, *shape), np.float32))
    schema = "id long, label long, features array<float>"
    return df.mapInPandas(_extractor(ext, shape), schema=schema).cache()


@quiet()
def image_features(
    spark: SparkSession, X: np.ndarray, backbone: str = "smallcnn", *, seed: int = 0, **kwargs: Any
) -> np.ndarray:
    """:func:`cnn_features` of numpy images ``X`` ``(n, h, w, c)``, returned as numpy ``(n, d)``."""
    X = np.asarray(X, dtype=np.float32)
    df = image_frame(spark, X)
    size, color = X.shape[1:3], "gray" if X.shape[3] == 1 else "rgb"
    out = cnn_features(df, backbone, size=size, color=color, seed=seed, **kwargs)
    try:
        return collect_column(out, "features").astype(np.float32)
    finally:
        out.unpersist()
        df.unpersist()
