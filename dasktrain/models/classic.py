"""Logistic regression, Gaussian naive Bayes and an MLP on both engines, plus cross-validation.

scikit-learn does the learning on both engines, so results are identical:

* ``engine="local"`` fits in this process (a dask input is computed here first);
* ``engine="dask"`` fits as one task on a worker: the dask array's blocks are gathered *on the
  cluster* into the training matrix and the scikit-learn estimator is fitted there; only the
  fitted estimator (small) comes back. These models need all rows at once, so this is the honest
  distributed version of them (dask-ml's ``Incremental`` would change the results).
* prediction on a dask input is blockwise and lazy (dask-ml's ``ParallelPostFit``), the fitted
  estimator entering the graph once.

:func:`cross_validate` returns the same dict as :func:`sklearn.model_selection.cross_validate`.
On the dask engine X and y are put on the cluster once and every fold is one task.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.utils.validation import check_is_fitted

from .._dask import (
    blockwise_apply,
    compute_all,
    compute_if_dask,
    get_client,
    maybe_client,
    row_chunked,
    task_keys,
    using_client,
)
from .._validation import (
    check_array,
    check_consistent_length,
    is_dask_collection,
    resolve_engine,
)
from ._base import (
    strip_client_state,
    validate_fitted_X,
    validate_X,
    validate_y,
)

if TYPE_CHECKING:
    from .._typing import Array, Self

logger = logging.getLogger(__name__)

__all__ = ["LogisticRegression", "GaussianNB", "MLPClassifier", "cross_validate"]

_OWN_PARAMS = ("engine", "client")


def _fit_estimator(est, X, y, sample_weight):
    """Fit on numpy X, y: in this process (local engine) or in one task (dask engine).

    X is checked for NaN/inf here, where it is materialised anyway: a dask X checked before
    would be computed twice (for features of images: every file read and decoded twice).
    """
    X = validate_X(X)
    kw = {} if sample_weight is None else {"sample_weight": sample_weight}
    return est.fit(X, y, **kw)


def _check_xy(X, y, estimator):
    """Shape, dtype and target checks; the NaN check of a dask X waits for ``_fit_estimator``."""
    X = validate_X(X, allow_nan=is_dask_collection(X))
    y, _ = validate_y(y, X, estimator=estimator)
    return X, y


class _SklearnClassifier(ClassifierMixin, BaseEstimator):
    """Common engine plumbing; subclasses name the scikit-learn class in ``_sk_class``."""

    _sk_class = None

    def __getstate__(self):
        return strip_client_state(self.__dict__)

    def _make(self):
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in _OWN_PARAMS}
        return self._sk_class()(**params)

    def fit(self, X, y, sample_weight=None) -> Self:
        """Fit the scikit-learn model on the chosen engine.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
        y : array-like or dask array of shape (n_samples,)
        sample_weight : array-like or dask array of shape (n_samples,), optional

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            NaN/inf, wrong lengths, one class only, unknown chunk sizes or engine.
        """
        with using_client(self.client):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        engine = resolve_engine(self.engine, X, y, sample_weight)
        X, y = _check_xy(X, y, type(self).__name__)
        if sample_weight is not None:
            sample_weight = check_array(sample_weight, name="sample_weight", ndim=1)
            check_consistent_length(X, sample_weight, y_name="sample_weight")
        est = self._make()
        if engine == "local":
            est = _fit_estimator(est, *compute_all([X, y, sample_weight]))
        else:
            est = self._fit_in_a_task(est, X, y, sample_weight)
        self.estimator_ = est
        self.engine_ = engine
        for name, value in vars(est).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(self, name, value)
        return self

    def _fit_in_a_task(self, est, X, y, sample_weight):
        """The dask engine: one task gathers the blocks on a worker and fits ``est`` there."""
        import dask

        # A readable, fresh key: "fit-logisticregression-<uuid>" on the dashboard.
        task = dask.delayed(_fit_estimator, pure=False)(
            est,
            row_chunked(X),
            row_chunked(y),
            None if sample_weight is None else row_chunked(sample_weight),
            dask_key_name=f"fit-{type(est).__name__.lower()}-{uuid.uuid4().hex}",
        )
        return compute_if_dask(task, client=maybe_client(self.client))

    def _apply(self, method, X, n_columns=None, dtype=np.float64):
        check_is_fitted(self, "estimator_")
        X = validate_fitted_X(self, X)
        if is_dask_collection(X):
            return blockwise_apply(self.estimator_, method, X, dtype=dtype, n_columns=n_columns)
        return getattr(self.estimator_, method)(X)

    def predict(self, X) -> Array:
        """Class labels; lazy and blockwise for a dask input."""
        check_is_fitted(self, "estimator_")
        return self._apply("predict", X, dtype=self.classes_.dtype)

    def predict_proba(self, X) -> Array:
        """Class probabilities of shape (n_samples, n_classes); lazy for a dask input."""
        check_is_fitted(self, "estimator_")
        return self._apply("predict_proba", X, n_columns=len(self.classes_))

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy; dask inputs reduced blockwise by :mod:`dasktrain.metrics`."""
        from .. import metrics

        with using_client(self.client):
            return float(metrics.accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class LogisticRegression(_SklearnClassifier):
    """Logistic regression (scikit-learn's) on both engines.

    Parameters
    ----------
    C, tol, max_iter, solver, class_weight, random_state
        As :class:`sklearn.linear_model.LogisticRegression`.
    engine : {"auto", "local", "dask"}
        Dask: fitted as one task on a worker (see the module docstring).
    client : distributed.Client or None

    See Also
    --------
    sklearn.linear_model.LogisticRegression
    """

    def __init__(
        self,
        C=1.0,
        *,
        tol=1e-4,
        max_iter=100,
        solver="lbfgs",
        class_weight=None,
        random_state=None,
        engine="auto",
        client=None,
    ):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.class_weight = class_weight
        self.random_state = random_state
        self.engine = engine
        self.client = client

    @staticmethod
    def _sk_class():
        from sklearn.linear_model import LogisticRegression as K

        return K

    def decision_function(self, X) -> Array:
        """Signed distance to the hyperplane; lazy for a dask input."""
        check_is_fitted(self, "estimator_")
        n = None if len(self.classes_) == 2 else len(self.classes_)
        return self._apply("decision_function", X, n_columns=n)


class GaussianNB(_SklearnClassifier):
    """Gaussian naive Bayes (scikit-learn's) on both engines.

    See Also
    --------
    sklearn.naive_bayes.GaussianNB
    """

    def __init__(self, *, priors=None, var_smoothing=1e-9, engine="auto", client=None):
        self.priors = priors
        self.var_smoothing = var_smoothing
        self.engine = engine
        self.client = client

    @staticmethod
    def _sk_class():
        from sklearn.naive_bayes import GaussianNB as K

        return K


class MLPClassifier(_SklearnClassifier):
    """Multi-layer perceptron (scikit-learn's) on both engines.

    See Also
    --------
    sklearn.neural_network.MLPClassifier
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        activation="relu",
        solver="adam",
        alpha=1e-4,
        batch_size="auto",
        learning_rate_init=1e-3,
        max_iter=200,
        tol=1e-4,
        early_stopping=False,
        random_state=None,
        engine="auto",
        client=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.random_state = random_state
        self.engine = engine
        self.client = client

    @staticmethod
    def _sk_class():
        from sklearn.neural_network import MLPClassifier as K

        return K


# ------------------------------------------------------------------------ cross-validation


def _fold(estimator, X, y, train, test, scorer, return_train_score):
    """One fold: what sklearn's ``_fit_and_score`` measures (runs in a task on dask)."""
    est = clone(estimator)
    t0 = time.perf_counter()
    est.fit(X[train], y[train])
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_scores = scorer(est, X[test], y[test])
    score_time = time.perf_counter() - t0
    train_scores = scorer(est, X[train], y[train]) if return_train_score else None
    return fit_time, score_time, test_scores, train_scores


def cross_validate(
    estimator,
    X,
    y,
    *,
    cv=5,
    scoring=None,
    groups=None,
    engine="auto",
    client=None,
    return_train_score=False,
) -> dict[str, np.ndarray]:
    """Cross-validated scores; the same dict as :func:`sklearn.model_selection.cross_validate`.

    Parameters
    ----------
    estimator : scikit-learn estimator
        A dasktrain estimator is run with ``engine="local"`` inside each fold (the fold is
        already the unit of distribution).
    X : array-like or dask array of shape (n_samples, n_features)
    y : array-like or dask array of shape (n_samples,)
    cv : int, CV splitter or iterable
        As scikit-learn (stratified k-fold for classifiers when an int).
    scoring : str, callable, list, dict or None
        As scikit-learn.
    groups : array-like, optional
    engine : {"auto", "local", "dask"}
        Local: folds run in process (scikit-learn's ``cross_validate``). Dask: X and y are
        put on the cluster once (scattered, or computed there for dask inputs) and each fold
        is one task; the fold indices come from the same splitter, so scores are identical.
    client : distributed.Client or None
    return_train_score : bool

    Returns
    -------
    dict
        ``fit_time``, ``score_time``, ``test_<name>`` / ``test_score`` (and ``train_*``).
    """
    from sklearn.model_selection import cross_validate as sk_cross_validate

    engine = resolve_engine(engine, X, y)
    # The checks of a dask X (NaN, labels) run on the given client: an X persisted on a client
    # that is not the default is unknown to any other scheduler.
    with using_client(client):
        X = validate_X(X)
        y, _ = validate_y(y, X, estimator="cross_validate", classifier=is_classifier(estimator))
    estimator = _local_twin(estimator)
    if engine == "local":
        Xn, yn = compute_all([X, y])
        return sk_cross_validate(
            estimator,
            Xn,
            yn,
            cv=cv,
            scoring=scoring,
            groups=groups,
            return_train_score=return_train_score,
        )
    client = get_client(client, what="cross_validate(engine='dask')")
    results = _folds_on_cluster(client, estimator, X, y, cv, scoring, groups, return_train_score)
    return _cv_results(results, return_train_score)


def _local_twin(estimator):
    """A dasktrain estimator runs locally inside its fold (the fold is the unit of work).

    Rebuilt rather than cloned so that a client argument is dropped instead of deep-copied.
    """
    params = estimator.get_params(deep=False)
    if "engine" not in params:
        return estimator
    params.update(engine="local", **({"client": None} if "client" in params else {}))
    return type(estimator)(**params)


def _folds_on_cluster(client, estimator, X, y, cv, scoring, groups, return_train_score):
    """Every fold as one task (``cv-fold-<uuid>-<i>``), X and y sent to the cluster once."""
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import check_cv

    # The splitter needs y (small) on the client; X stays on the cluster.
    y_local = compute_if_dask(y)
    splitter = check_cv(cv, y_local, classifier=is_classifier(estimator))
    splits = list(splitter.split(np.zeros((len(y_local), 1)), y_local, groups))
    scorer = check_scoring(estimator, scoring=scoring)
    # Once, not per fold: numpy is scattered (to one worker; others fetch it once when a fold
    # lands there); a dask X is concatenated on the cluster without visiting the client.
    # hash=False: a fresh key per call; re-scattering the same content under the same key
    # while the previous call's copy is being released can lose it ("lost dependencies").
    X_f = (
        client.compute(X)
        if is_dask_collection(X)
        else client.scatter(X, broadcast=False, hash=False)
    )
    y_f = client.scatter(y_local, broadcast=False, hash=False)
    # Everything positional (a keyword array would become a graph node keyed by its name).
    futures = [
        client.submit(
            _fold, estimator, X_f, y_f, tr, te, scorer, return_train_score, key=key, pure=False
        )
        for (tr, te), key in zip(splits, task_keys("cv-fold", len(splits)))
    ]
    return client.gather(futures)


def _cv_results(results, return_train_score):
    """scikit-learn's ``cross_validate`` dict from the ``_fold`` results."""
    out = {
        "fit_time": np.array([r[0] for r in results]),
        "score_time": np.array([r[1] for r in results]),
    }
    for prefix, pos in (("test", 2), ("train", 3)):
        if prefix == "train" and not return_train_score:
            continue
        first = results[0][pos]
        if isinstance(first, dict):
            for name in first:
                out[f"{prefix}_{name}"] = np.array([r[pos][name] for r in results])
        else:
            out[f"{prefix}_score"] = np.array([r[pos] for r in results])
    return out
