"""The built-in model workloads on Spark MLlib, scored like the other engines.

Each function takes the same numpy inputs as the local and dask workloads, moves them into a
cached Spark frame, fits MLlib's estimator with settings matched to dasktrain's, collects the
predictions in row order and scores them with :mod:`dasktrain.metrics`: one definition of each
metric for the three engines. ``train_time`` is the ``fit`` call alone. What could not be
matched is said in :data:`SETTINGS`, which the comparison prints beside the times.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import metrics
from .._compat import import_optional
from ._frames import collect_column, vector_frame
from ._session import quiet

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from .._typing import Split

__all__ = ["SETTINGS", "kmeans", "xgboost", "logreg", "naive_bayes", "mlp_cv"]

#: How each MLlib estimator is matched to dasktrain's (printed beside the times).
SETTINGS = {
    "kmeans": "MLlib KMeans: k-means|| init (2 steps), maxIter=300, tol=1e-4 (MLlib: centre "
    "shift; scikit-learn: relative to the data's variance), the run's seed",
    "xgboost": "xgboost.spark.SparkXGBClassifier, one XGBoost worker per core, same trees, "
    "depth, learning rate and seed; tracker on the driver's address",
    "logreg": "MLlib LogisticRegression, L2 with regParam = 1/(C n) (scikit-learn's C=1), "
    "no internal standardisation, maxIter=200, L-BFGS",
    "naive_bayes": "MLlib NaiveBayes(modelType='gaussian')",
    "mlp_cv": "MLlib MultilayerPerceptronClassifier (64 hidden, L-BFGS; scikit-learn: Adam) "
    "after StandardScaler, CrossValidator on scikit-learn's stratified folds",
}


@quiet()
def kmeans(
    spark: SparkSession,
    F: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> dict[str, float]:
    """MLlib KMeans with k = the number of classes; the same scores as the other engines."""
    clustering = import_optional("pyspark.ml.clustering", "spark")
    k = int(len(np.unique(y)))
    df = vector_frame(spark, F)
    est = clustering.KMeans(
        k=k, maxIter=max_iter, tol=tol, seed=int(seed), initMode="k-means||", initSteps=2
    )
    t0 = time.perf_counter()
    model = est.fit(df)
    train = time.perf_counter() - t0
    labels = collect_column(model.transform(df), "prediction").astype(np.int64)
    return {
        "train_time": train,
        "silhouette": float(metrics.silhouette_score(F, labels, sample_size=min(len(F), 2000))),
        "davies_bouldin": float(metrics.davies_bouldin_score(F, labels)),
        "adjusted_rand": float(metrics.adjusted_rand_score(y, labels)),
        "n_iter": float(model.summary.numIter),
    }


def _score(model: Any, test: DataFrame, yte: np.ndarray) -> dict[str, float]:
    """Accuracy (and ROC AUC for two classes) of ``model`` on the test frame."""
    out = model.transform(test)
    pred = collect_column(out, "prediction").astype(np.int64)
    scores = {"accuracy": float(metrics.accuracy_score(yte, pred))}
    if len(np.unique(yte)) == 2:
        proba = collect_column(out, "probability")[:, 1]
        scores["roc_auc"] = float(metrics.roc_auc_score(yte, proba))
    return scores


def _classify(spark: SparkSession, split: Split, est: Any) -> dict[str, float]:
    Ftr, Fte, ytr, yte = split
    train_df, test_df = vector_frame(spark, Ftr, ytr), vector_frame(spark, Fte)
    t0 = time.perf_counter()
    model = est.fit(train_df)
    train = time.perf_counter() - t0
    return {"train_time": train, **_score(model, test_df, yte)}


def _driver_host(spark: SparkSession) -> str:
    return spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")


@quiet()
def xgboost(
    spark: SparkSession,
    split: Split,
    *,
    n_estimators: int = 50,
    max_depth: int = 4,
    learning_rate: float = 0.3,
    seed: int = 0,
) -> dict[str, float]:
    """``xgboost.spark.SparkXGBClassifier`` with one XGBoost worker per Spark core."""
    xspark = import_optional("xgboost.spark", "spark")
    collective = import_optional("xgboost.collective")
    est = xspark.SparkXGBClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        random_state=int(seed),
        verbosity=1,
        verbose=False,
        num_workers=int(spark.sparkContext.defaultParallelism),
        # xgboost's tracker would otherwise pick an address of its own; bind it to the driver's.
        coll_cfg=collective.Config(tracker_host_ip=_driver_host(spark)),
    )
    return _classify(spark, split, est)


@quiet()
def logreg(
    spark: SparkSession, split: Split, *, C: float = 1.0, max_iter: int = 200
) -> dict[str, float]:
    """MLlib logistic regression with scikit-learn's default L2 penalty, rescaled."""
    classification = import_optional("pyspark.ml.classification", "spark")
    n = len(split[0])
    # scikit-learn minimises C * sum(loss) + |w|^2 / 2; MLlib mean(loss) + regParam |w|^2 / 2.
    est = classification.LogisticRegression(
        maxIter=max_iter, regParam=1.0 / (C * n), elasticNetParam=0.0, standardization=False
    )
    return _classify(spark, split, est)


@quiet()
def naive_bayes(spark: SparkSession, split: Split) -> dict[str, float]:
    """MLlib's Gaussian naive Bayes."""
    classification = import_optional("pyspark.ml.classification", "spark")
    return _classify(spark, split, classification.NaiveBayes(modelType="gaussian"))


def _stratified_folds(y: np.ndarray, cv: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(y), np.int64)
    for i, (_, test) in enumerate(StratifiedKFold(n_splits=cv).split(np.zeros(len(y)), y)):
        fold[test] = i
    return fold


@quiet()
def mlp_cv(
    spark: SparkSession,
    F: np.ndarray,
    y: np.ndarray,
    *,
    cv: int = 3,
    hidden: int = 64,
    max_iter: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Cross-validated MLP on standardised features, on scikit-learn's folds."""
    ml = import_optional("pyspark.ml", "spark")
    classification = import_optional("pyspark.ml.classification", "spark")
    evaluation = import_optional("pyspark.ml.evaluation", "spark")
    tuning = import_optional("pyspark.ml.tuning", "spark")
    feature = import_optional("pyspark.ml.feature", "spark")
    df = vector_frame(spark, F, y, extra={"fold": _stratified_folds(y, cv)})
    scaler = feature.StandardScaler(
        inputCol="features", outputCol="scaled", withMean=True, withStd=True
    )
    mlp = classification.MultilayerPerceptronClassifier(
        featuresCol="scaled",
        layers=[F.shape[1], hidden, int(len(np.unique(y)))],
        maxIter=max_iter,
        seed=int(seed),
    )
    search = tuning.CrossValidator(
        estimator=ml.Pipeline(stages=[scaler, mlp]),
        estimatorParamMaps=tuning.ParamGridBuilder().build(),
        evaluator=evaluation.MulticlassClassificationEvaluator(metricName="accuracy"),
        foldCol="fold",
    )
    t0 = time.perf_counter()
    model = search.fit(df)
    train = time.perf_counter() - t0
    return {"train_time": train, "accuracy": float(model.avgMetrics[0])}
