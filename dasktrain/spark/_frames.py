"""Moving numpy data into Spark DataFrames and results back, in a known row order.

Every frame built here carries an ``id`` column (the row's index in the numpy input), so results
collected back are put in the input's order: Spark does not keep row order through a shuffle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._compat import import_optional

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["vector_frame", "image_frame", "collect_column", "n_partitions"]


def n_partitions(spark: SparkSession, n_rows: int) -> int:
    """One partition per core, as the dask engine uses one chunk per worker thread."""
    return max(1, min(int(n_rows), int(spark.sparkContext.defaultParallelism)))


def vector_frame(
    spark: SparkSession,
    X: np.ndarray,
    y: np.ndarray | None = None,
    *,
    extra: Mapping[str, np.ndarray] | None = None,
) -> DataFrame:
    """A cached frame with ``id``, ``features`` (an MLlib vector) and, given ``y``, ``label``.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,), optional
        Integer class labels (MLlib wants them as 0..k-1 doubles).
    extra : dict of str to ndarray, optional
        More integer columns (a fold index for ``CrossValidator``).
    """
    import pandas as pd

    mlf = import_optional("pyspark.ml.functions", "spark")
    X = np.asarray(X, dtype=np.float64)
    cols: dict[str, Any] = {"id": np.arange(len(X), dtype=np.int64), "features": list(X)}
    schema = ["id long", "features array<double>"]
    if y is not None:
        cols["label"] = np.asarray(y, dtype=np.float64)
        schema.append("label double")
    for name, values in (extra or {}).items():
        cols[name] = np.asarray(values, dtype=np.int64)
        schema.append(f"{name} long")
    df = spark.createDataFrame(pd.DataFrame(cols), schema=", ".join(schema))
    df = df.withColumn("features", mlf.array_to_vector("features"))
    return df.repartition(n_partitions(spark, len(X))).cache()


def image_frame(spark: SparkSession, X: np.ndarray, y: np.ndarray | None = None) -> DataFrame:
    """A cached frame of numpy images ``(n, h, w, c)``: ``id``, ``label``, ``image`` (bytes).

    The layout :func:`~dasktrain.spark.read_images` produces, for images already in memory.
    """
    import pandas as pd

    X = np.ascontiguousarray(X, dtype=np.float32)
    labels = np.zeros(len(X), np.int64) if y is None else np.asarray(y, dtype=np.int64)
    pdf = pd.DataFrame(
        {
            "id": np.arange(len(X), dtype=np.int64),
            "label": labels,
            "image": [x.tobytes() for x in X],
        }
    )
    df = spark.createDataFrame(pdf, schema="id long, label long, image binary")
    return df.repartition(n_partitions(spark, len(X))).cache()


def collect_column(df: DataFrame, column: str, n: int | None = None) -> np.ndarray:
    """``column`` of ``df`` as numpy, in ``id`` order (vectors become rows of a 2-d array)."""
    rows = df.select("id", column).orderBy("id").collect()
    values = [r[1] for r in rows]
    if values and hasattr(values[0], "toArray"):
        return np.stack([v.toArray() for v in values])
    return np.asarray(values)
