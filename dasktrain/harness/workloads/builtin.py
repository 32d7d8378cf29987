"""The built-in comparison workloads and the :class:`Workload` record.

A workload is one step of the image pipeline run on one engine: ``read``, ``features``,
``kmeans``, ``xgboost``, ``logreg``, ``naive_bayes``, ``mlp_cv``, and the three trained by a
launcher, ``ddp_cnn``, ``keras_cnn`` and ``tf_cnn`` (in :mod:`.ddp`). Each takes the shared
:class:`~dasktrain.harness.workloads.inputs.Inputs`, the engine and the client, and returns a
dict of metrics; ``train_time`` is the wall time of the training step alone (data loading is not
training, as in MLPerf), while :func:`~dasktrain.compare` times the whole step around it. The
dask engine pays for moving its input onto the cluster inside the whole-step time.

Each workload imports the part of dasktrain it runs when it runs (so that naming the harness
does not import scikit-learn, xgboost or torch); a missing optional package raises
:class:`~dasktrain.exceptions.OptionalDependencyError`, which the runner reports as an
``unavailable`` row. It is never faked.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..._dask import compute_if_dask, to_cluster, wait_for
from ...exceptions import Unavailable, WorkloadError
from ..measure.breakdown import phase
from ..settings import current
from .ddp import w_ddp_cnn, w_keras_cnn, w_tf_cnn

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN",
    "DEFAULT_WORKLOADS",
    "Unavailable",
    "Workload",
    "resolve_workloads",
]


# ---------------------------------------------------------------------------------------
# Engine plumbing
# ---------------------------------------------------------------------------------------
def _to_cluster(client, *arrays):
    """Put numpy arrays on the cluster as persisted dask arrays, one chunk per worker thread
    (data transfer in the run's time breakdown)."""
    with phase("transfer"):
        return to_cluster(client, *arrays, n_blocks=max(1, current().n_threads))


def _result(client, x):
    """A numpy result from a numpy or dask value (computed on ``client``).

    The cluster computes it first; only fetching the result counts as data transfer.
    """
    import dask

    if client is None or not dask.is_dask_collection(x):
        return np.asarray(compute_if_dask(x, client=client))
    future = client.compute(x)
    wait_for(client, [future])
    with phase("transfer"):
        return np.asarray(future.result())


# ---------------------------------------------------------------------------------------
# The built-in workloads
# ---------------------------------------------------------------------------------------
def w_read(inputs, engine, client) -> dict:
    """Decode and resize the image folder (the dask engine persists it on the cluster)."""
    from ...images import read_images

    path = inputs.path
    t0 = time.perf_counter()
    threads = current().n_threads if engine == "local" else None
    size = current().options.image_size
    iset = read_images(path, size=size, color="gray", engine=engine, n_threads=threads)
    if engine == "dask":
        wait_for(client, client.persist(iset.X))
    else:
        np.asarray(iset.X)
    return {
        "train_time": math.nan,
        "images": float(len(iset.y)),
        "read_time": time.perf_counter() - t0,
    }


def w_features(inputs, engine, client) -> dict:
    """CNN features of the decoded images."""
    from ...features import CNNFeatures

    X, _, _ = inputs.images
    if engine == "dask":
        (X,) = _to_cluster(client, X)
    ext = CNNFeatures(
        current().options.backbone,
        engine=engine,
        seed=current().seed,
        batch_size=current().options.batch_size,
        n_threads=current().n_threads if engine == "local" else None,
    )
    t0 = time.perf_counter()
    F = _result(client, ext.fit(X).transform(X))
    return {"train_time": time.perf_counter() - t0, "n_features": float(F.shape[1])}


def w_kmeans(inputs, engine, client) -> dict:
    """KMeans with k = the number of classes, scored against the labels."""
    from ... import metrics
    from ...models import KMeans

    F, y = inputs.features
    k = int(len(np.unique(y)))
    Xe = _to_cluster(client, F)[0] if engine == "dask" else F
    km = KMeans(k, engine=engine, random_state=current().seed, client=client)
    t0 = time.perf_counter()
    km.fit(Xe)
    train = time.perf_counter() - t0
    labels = _result(client, km.labels_)
    return {
        "train_time": train,
        "silhouette": float(metrics.silhouette_score(F, labels, sample_size=min(len(F), 2000))),
        "davies_bouldin": float(metrics.davies_bouldin_score(F, labels)),
        "adjusted_rand": float(metrics.adjusted_rand_score(y, labels)),
    }


def _classify(inputs, engine, client, est):
    """Fit ``est`` on the feature split and score it on the held-out part."""
    from ... import metrics

    Ftr, Fte, ytr, yte = inputs.split
    if engine == "dask":
        Xtr, ytr_e, Xte = _to_cluster(client, Ftr, ytr, Fte)
    else:
        Xtr, ytr_e, Xte = Ftr, ytr, Fte
    t0 = time.perf_counter()
    est.fit(Xtr, ytr_e)
    train = time.perf_counter() - t0
    pred = _result(client, est.predict(Xte))
    out = {"train_time": train, "accuracy": float(metrics.accuracy_score(yte, pred))}
    if len(np.unique(ytr)) == 2 and len(np.unique(yte)) == 2:  # ROC AUC needs both classes
        proba = _result(client, est.predict_proba(Xte))[:, 1]
        out["roc_auc"] = float(metrics.roc_auc_score(yte, proba))
    return out


def w_xgboost(inputs, engine, client) -> dict:
    """Gradient-boosted trees (``xgboost.dask`` on the dask engine)."""
    from ...models import XGBClassifier

    est = XGBClassifier(
        n_estimators=current().options.n_estimators,
        max_depth=4,
        learning_rate=0.3,
        engine=engine,
        n_jobs=current().n_threads if engine == "local" else None,
        random_state=current().seed,
        client=client if engine == "dask" else None,
    )
    return _classify(inputs, engine, client, est)


def w_logreg(inputs, engine, client) -> dict:
    """Logistic regression."""
    from ...models import LogisticRegression

    return _classify(inputs, engine, client, LogisticRegression(engine=engine, max_iter=200))


def w_naive_bayes(inputs, engine, client) -> dict:
    """Gaussian naive Bayes."""
    from ...models import GaussianNB

    return _classify(inputs, engine, client, GaussianNB(engine=engine))


def w_mlp_cv(inputs, engine, client) -> dict:
    """Cross-validated MLP: the folds are what is distributed."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ...models import MLPClassifier, cross_validate

    F, y = inputs.features
    # Each fold's MLP trains in one process on either engine.
    mlp = MLPClassifier(
        (64,), max_iter=current().options.mlp_max_iter, random_state=current().seed, engine="local"
    )
    # CNN features have very different scales per channel; an MLP (unlike trees) needs them
    # standardised or it stays at chance. The scaler is fitted inside each fold.
    est = make_pipeline(StandardScaler(), mlp)
    kw = {"cv": current().options.cv, "scoring": "accuracy", "engine": engine}
    if engine == "dask":
        kw["client"] = client
    t0 = time.perf_counter()
    res = cross_validate(est, F, y, **kw)
    train = time.perf_counter() - t0
    return {"train_time": train, "accuracy": float(np.mean(res["test_score"]))}


# ---------------------------------------------------------------------------------------
# Workload records
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Workload:
    """A named workload: ``fn(inputs, engine, client) -> dict`` and its quality metric.

    ``metric=None`` takes the first metric the function returns; ``False`` means none.

    ``higher_is_better`` tells the report which way the quality metric points
    (Davies-Bouldin is lower-is-better; silhouette and accuracy are higher-is-better).
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    metric: str | bool | None = None
    higher_is_better: bool = True
    builtin: bool = True
    #: Inputs attributes to prepare before any timed run (see ``Inputs.prepare``).
    needs: tuple[str, ...] = ()


BUILTIN = {
    w.name: w
    for w in [
        # Reading and feature extraction have no quality metric of their own (False: none).
        Workload("read", w_read, False, needs=("path",)),
        Workload("features", w_features, False, needs=("images",)),
        Workload("kmeans", w_kmeans, "silhouette", needs=("features",)),
        Workload("xgboost", w_xgboost, "accuracy", needs=("split",)),
        Workload("logreg", w_logreg, "accuracy", needs=("split",)),
        Workload("naive_bayes", w_naive_bayes, "accuracy", needs=("split",)),
        Workload("mlp_cv", w_mlp_cv, "accuracy", needs=("features",)),
        Workload("ddp_cnn", w_ddp_cnn, "accuracy", needs=("image_split",)),
        Workload("keras_cnn", w_keras_cnn, "accuracy", needs=("image_split",)),
        Workload("tf_cnn", w_tf_cnn, "accuracy", needs=("image_split",)),
    ]
}


#: The built-in workloads the command line runs unless told (``--workloads``): all but
#: ``keras_cnn`` and ``tf_cnn``, which need Keras or TensorFlow and are asked for by name.
DEFAULT_WORKLOADS = tuple(name for name in BUILTIN if name not in ("keras_cnn", "tf_cnn"))


def _user(fn):
    """A user's callable ``fn(data, engine, client) -> dict`` as a :class:`Workload`."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if name == "<lambda>":
        name = f"lambda@{id(fn):x}"

    def call(inputs, engine, client):
        return fn(inputs.for_user(), engine, client)

    return Workload(
        name, call, metric=getattr(fn, "metric", None), builtin=False, needs=("for_user",)
    )


def _one(w):
    if isinstance(w, Workload):
        return [w]
    if isinstance(w, str):
        if w == "all":
            return list(BUILTIN.values())
        if w not in BUILTIN:
            raise WorkloadError(
                f"unknown workload {w!r}; use one of {', '.join(map(repr, BUILTIN))}, 'all', "
                "or a callable (data, engine, client) -> dict of metrics."
            )
        return [BUILTIN[w]]
    if callable(w):
        return [_user(w)]
    raise WorkloadError(
        f"workload {w!r} is neither a known name nor a callable (data, engine, client)."
    )


def resolve_workloads(workloads) -> list[Workload]:
    """Turn names, callables or a mix (or ``"all"``) into a list of :class:`Workload`.

    Raises
    ------
    WorkloadError
        For an unknown name (the message lists the known ones), an empty list or a duplicate.
    """
    if isinstance(workloads, (str, Workload)) or callable(workloads):
        workloads = [workloads]
    try:
        items = list(workloads)
    except TypeError:
        raise WorkloadError(
            f"workloads={workloads!r} must be a name, a callable or a list of them."
        ) from None
    out = [spec for w in items for spec in _one(w)]
    if not out:
        raise WorkloadError("workloads is empty; name at least one workload.")
    names = [w.name for w in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise WorkloadError(f"workload(s) {dup!r} given twice; each name must be unique.")
    return out
