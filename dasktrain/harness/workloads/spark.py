"""The built-in workloads' Spark twins: the same inputs, seeds and metrics on a SparkSession.

Each takes ``(inputs, engine, spark)`` like a built-in workload and calls :mod:`dasktrain.spark`
with the prepared numpy inputs of the other engines (the ``read`` step reads the folder itself),
so the three engines see the same data and are scored by the same functions. Moving the data
into Spark is part of the whole-step time, as moving it onto the cluster is for dask.
"""

from __future__ import annotations

import functools
import math
import time

from ...exceptions import Unavailable
from ..settings import current

__all__ = ["SPARK", "spark_fn"]


def s_read(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    image_size = current().options.image_size
    # image_size is one side or (height, width), as the other engines' read_images take it.
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    t0 = time.perf_counter()
    # read_images decodes everything once and keeps it (as the dask engine persists), and
    # counts it against the listing; this count is of the cached frame.
    df, _ = dspark.read_images(spark, inputs.path, size=size, color="gray")
    try:
        n = df.count()
    finally:
        df.unpersist()
    return {"train_time": math.nan, "images": float(n), "read_time": time.perf_counter() - t0}


def s_features(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    X, _, _ = inputs.images
    t0 = time.perf_counter()
    F = dspark.image_features(
        spark,
        X,
        current().options.backbone,
        seed=current().seed,
        batch_size=current().options.batch_size,
    )
    return {"train_time": time.perf_counter() - t0, "n_features": float(F.shape[1])}


def s_kmeans(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    F, y = inputs.features
    return dspark.kmeans(spark, F, y, seed=current().seed)


def s_xgboost(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    return dspark.xgboost(
        spark, inputs.split, n_estimators=current().options.n_estimators, seed=current().seed
    )


def s_logreg(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    return dspark.logreg(spark, inputs.split, max_iter=200)


def s_naive_bayes(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    return dspark.naive_bayes(spark, inputs.split)


def s_mlp_cv(inputs, engine, spark) -> dict:
    from ... import spark as dspark

    F, y = inputs.features
    return dspark.mlp_cv(
        spark,
        F,
        y,
        cv=current().options.cv,
        max_iter=current().options.mlp_max_iter,
        seed=current().seed,
    )


#: workload name -> its Spark twin (``ddp_cnn`` has none: its rows read "unavailable").
SPARK = {
    "read": s_read,
    "features": s_features,
    "kmeans": s_kmeans,
    "xgboost": s_xgboost,
    "logreg": s_logreg,
    "naive_bayes": s_naive_bayes,
    "mlp_cv": s_mlp_cv,
}


def spark_fn(spec):
    """The function workload ``spec`` runs on Spark: a built-in's twin above, a user's own
    function as it is; either way a JVM that died before or during the run raises
    :class:`~dasktrain.exceptions.SparkDiedError` ("Spark died: its JVM (pid ...) was killed
    by signal 9 ...") instead of py4j's raw connection errors."""
    fn = spec.fn
    if spec.builtin:
        if spec.name not in SPARK:
            raise Unavailable(f"{spec.name} has no Spark implementation in dasktrain.")
        fn = SPARK[spec.name]

    @functools.wraps(fn)
    def run(inputs, engine, spark):
        from ... import spark as dspark

        with dspark.died_as_error(spark):
            return fn(inputs, engine, spark)

    return run
