"""Any scikit-learn estimator on both engines: fitted in one task on a worker, applied blockwise.

:class:`OnWorker` wraps an estimator the way dask-ml's ``ParallelPostFit`` does, and adds the
fit:

* ``engine="local"`` fits in this process (a dask input is computed here first);
* ``engine="dask"`` fits as one task on a worker: the row blocks of X (and y, and the
  row-aligned fit parameters such as ``sample_weight``) are gathered *on the cluster* into
  one matrix, sent once, and the estimator is fitted there; only the fitted estimator comes
  back. Estimators that need all rows at once (most of scikit-learn) get the same result as
  locally, bit for bit (dask-ml's ``Incremental`` would change the results);
* ``predict``, ``predict_proba``, ``decision_function``, ``transform``... on a dask input are
  lazy and blockwise, the fitted estimator entering the graph once.

The wrapped estimator sees numpy arrays on both engines; the wrapper owns the column names
(``feature_names_in_``), so an estimator that selects DataFrame columns *by name* (a
``ColumnTransformer`` given names) does not fit in it. :class:`LogisticRegression`,
:class:`GaussianNB` and :class:`MLPClassifier` (:mod:`dasktrain.models.classic`) are
:class:`OnWorker` subclasses with the scikit-learn estimator's own parameters.
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .._dask import (
    compute_all,
    compute_if_dask,
    maybe_client,
    row_chunked,
    using_client,
    watching,
)
from .._validation import check_array, check_consistent_length, is_dask_collection, resolve_engine
from ..exceptions import ValidationError
from ._base import (
    fit_X,
    is_dask_frame,
    scoring_inputs,
    strip_client_state,
    validate_fitted_X,
    validate_sample_weight,
    validate_X,
    validate_y,
)
from ._output import LazySetOutputMixin, apply_blockwise, dask_columns, wrap_numpy

if TYPE_CHECKING:
    from .._typing import Array, ArrayLike, Client, Estimator, NDArray, Self

logger = logging.getLogger(__name__)

__all__ = ["OnWorker"]

# Learned attributes the wrapper sets itself rather than copying from the fitted estimator.
_OWN_ATTRIBUTES = frozenset({"n_features_in_", "feature_names_in_"})


def _fit_estimator(est, X, y, fit_params, allow_nan):
    """Fit on numpy X, y: in this process (local engine) or in one task (dask engine).

    X is checked for NaN/inf here, where it is materialised anyway: a dask X checked before
    would be computed twice (for features of images: every file read and decoded twice).
    """
    X = validate_X(X, allow_nan=allow_nan)
    if y is None:
        return est.fit(X, **fit_params)
    return est.fit(X, y, **fit_params)


def _has(method):
    """``available_if`` check: the (fitted, else the template) estimator has ``method``."""

    def check(self):
        est = self.estimator_ if hasattr(self, "estimator_") else self._template()
        getattr(est, method)  # AttributeError: the wrapper does not offer it either
        return True

    return check


class OnWorker(LazySetOutputMixin, MetaEstimatorMixin, BaseEstimator):
    """Fit any scikit-learn-compatible estimator on a Dask worker; predict block by block.

    Parameters
    ----------
    estimator : estimator object
        Any scikit-learn-compatible estimator (a ``Pipeline`` too): classifier, regressor,
        transformer or clusterer. Its parameters are reachable as ``estimator__<name>``
        (``GridSearchCV``, ``set_params``). It is cloned at every fit.
    engine : {"auto", "local", "dask"}, default="auto"
        ``"auto"`` follows the input (a dask collection -> ``"dask"``). ``"dask"``: fitted as
        one task on a worker, the data gathered there once (see the module docstring);
        ``"local"``: fitted here, a dask input computed first.
    client : distributed.Client or None
        Resolved late (the default client); never pickled.

    Attributes
    ----------
    estimator_ : estimator
        The fitted estimator. Its learned attributes (``coef_``, ``classes_``,
        ``n_iter_``...) are read through the wrapper (``OnWorker(...).fit(X, y).coef_``).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        The column names of a pandas or dask DataFrame ``X`` at fit; checked at predict
        (unseen, missing or reordered columns raise). Only set for a DataFrame ``X``.
    engine_ : str
        The engine that ran.

    See Also
    --------
    dask_ml.wrappers.ParallelPostFit : fitted locally, predicted blockwise.
    LogisticRegression, GaussianNB, MLPClassifier : :class:`OnWorker` with the scikit-learn
        estimator's parameters.

    Notes
    -----
    Output type follows input type: see ``dasktrain.models._output`` (numpy in, numpy
    out; dask in, lazy dask out; ``set_output(transform="pandas")`` on dask input gives a lazy
    dask DataFrame). ``score`` is eager: classifiers and regressors reduce dask inputs
    blockwise with :mod:`dasktrain.metrics`; other estimators compute X and call their own
    ``score``. Fit parameters whose first dimension has X's length (``sample_weight``) are
    sent with the rows; others are passed as given.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.ensemble import HistGradientBoostingClassifier
    >>> from dasktrain.models import OnWorker
    >>> X, y = make_classification(200, 16, random_state=0)
    >>> model = OnWorker(HistGradientBoostingClassifier(max_iter=20)).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    """

    # ``fit_transform`` and ``get_feature_names_out`` follow the wrapped estimator: no
    # TransformerMixin, which would make every wrapper a transformer to scikit-learn.

    def __init__(
        self, estimator: Estimator, *, engine: str = "auto", client: Client | None = None
    ) -> None:
        self.estimator = estimator
        self.engine = engine
        self.client = client

    # -- the wrapped estimator -----------------------------------------------------------------
    def _template(self):
        """The unfitted estimator (tags, available methods)."""
        return self.estimator

    def _new_estimator(self):
        """A fresh unfitted estimator for one fit."""
        return clone(self.estimator)

    def __getstate__(self):
        return strip_client_state(self.__dict__)

    def __sklearn_tags__(self):
        inner = copy.deepcopy(get_tags(self._template()))
        tags = super().__sklearn_tags__()
        for field in ("estimator_type", "target_tags", "transformer_tags", "classifier_tags"):
            setattr(tags, field, getattr(inner, field))
        tags.regressor_tags = inner.regressor_tags
        tags.non_deterministic = inner.non_deterministic
        tags.input_tags = inner.input_tags
        tags.input_tags.sparse = False  # X is validated as a dense array
        return tags

    def _kind(self):
        return get_tags(self._template()).estimator_type

    def _allow_nan(self):
        return bool(get_tags(self._template()).input_tags.allow_nan)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike | None = None, **fit_params: Any) -> Self:
        """Fit a clone of ``estimator`` on the chosen engine.

        Parameters
        ----------
        X : array-like, pandas/dask DataFrame or dask array of shape (n_samples, n_features)
        y : array-like, pandas/dask Series or dask array of shape (n_samples,), optional
            Required by classifiers and regressors.
        **fit_params
            Passed to the estimator's ``fit``; ``sample_weight`` is checked and sent with the
            rows.

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            NaN/inf (unless the estimator allows NaN), wrong lengths, one class only, unknown
            chunk sizes or engine.
        WorkersPausedError
            The input checks or the fit task waited on workers paused for memory for
            ``dasktrain.paused-workers.grace``.
        """
        # Behind the paused-worker guard: the input checks of a dask X wait on the cluster.
        what = f"{type(self).__name__}.fit"
        with using_client(self.client), watching(maybe_client(self.client), what):
            return self._fit(X, y, fit_params)

    def _fit(self, X, y, fit_params):
        engine = resolve_engine(self.engine, X, y, *fit_params.values())
        allow_nan = self._allow_nan()
        X = fit_X(self, X, allow_nan=allow_nan or is_dask_collection(X))
        y = self._check_y(y, X)
        fit_params = self._check_fit_params(fit_params, X)
        est = self._new_estimator()
        if engine == "local":
            X, y, *values = compute_all([X, y, *fit_params.values()])
            est = _fit_estimator(est, X, y, dict(zip(fit_params, values)), allow_nan)
        else:
            est = self._fit_in_a_task(est, X, y, fit_params, allow_nan)
        self.estimator_ = est
        self.engine_ = engine
        return self

    def __getattr__(self, name):
        # The fitted estimator's learned attributes (coef_, classes_, n_iter_...), read
        # through: also those that are properties (a Pipeline's classes_).
        est = self.__dict__.get("estimator_")
        if est is not None and name.endswith("_") and not name.startswith("_"):
            if name not in _OWN_ATTRIBUTES:
                return getattr(est, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _check_y(self, y, X):
        """Classifier labels are checked here (>= 2 classes, no NaN); a 2-d y (multi-output,
        multilabel) only for its shape: the estimator checks it on fit, as in scikit-learn."""
        tags = get_tags(self._template())
        name = type(self).__name__
        if tags.target_tags.required and y is None:
            raise ValidationError(f"{name} requires y to be passed, but the target y is None.")
        if y is None:
            return None
        if is_dask_frame(y):
            y = y.to_dask_array(lengths=True)
        shape = y.shape if is_dask_collection(y) else np.shape(np.asarray(y))
        two_d = len(shape) == 2 and shape[1] > 1
        classifier = tags.estimator_type == "classifier"
        if classifier and not two_d:
            return validate_y(y, X, estimator=name, classifier=True)[0]
        multilabel = classifier and tags.classifier_tags.multi_label
        if two_d and not (tags.target_tags.multi_output or multilabel):
            raise ValidationError(
                f"y has shape {tuple(shape)!r}, but {name} takes one target (shape (n,))."
            )
        if is_dask_collection(y):
            y = check_array(y, name="y", ndim=(1, 2), allow_nan=True)
        else:
            y = np.asarray(y)
        # numpy targets of regressors are the estimator's to check (messages, dtypes), as in
        # scikit-learn; on the dask engine that happens in the fit task.
        check_consistent_length(X, y)
        return y

    @staticmethod
    def _check_fit_params(fit_params, X):
        out = dict(fit_params)
        if out.get("sample_weight") is not None:
            out["sample_weight"] = validate_sample_weight(out["sample_weight"], X)
        return out

    def _fit_in_a_task(self, est, X, y, fit_params, allow_nan):
        """The dask engine: one task gathers the blocks on a worker and fits ``est`` there."""
        import dask

        n = X.shape[0]

        def rows(value):
            aligned = is_dask_collection(value) and value.shape[:1] == (n,)
            return row_chunked(value) if aligned else value

        # A readable, fresh key: "fit-logisticregression-<uuid>" on the dashboard.
        task = dask.delayed(_fit_estimator, pure=False)(
            est,
            row_chunked(X),
            None if y is None else rows(y),
            {k: rows(v) for k, v in fit_params.items()},
            allow_nan,
            dask_key_name=f"fit-{type(est).__name__.lower()}-{uuid.uuid4().hex}",
        )
        return compute_if_dask(task, client=maybe_client(self.client))

    # -- after fit -----------------------------------------------------------------------------
    def _output_shape(self, method, X):
        """``(dtype, n_columns)`` of ``method``'s output, from one row of zeros (here, no task)."""
        probe = np.zeros((1, self.n_features_in_), dtype=X.dtype)
        try:
            out = np.asarray(getattr(self.estimator_, method)(probe))
        except Exception as exc:
            raise ValidationError(
                f"{type(self.estimator_).__name__}.{method} failed on a row of zeros, which "
                f"dasktrain uses to learn the shape of its output for a lazy dask result "
                f"({type(exc).__name__}: {exc}). Compute X first (numpy input)."
            ) from exc
        return out.dtype, (None if out.ndim == 1 else out.shape[1])

    def _apply(self, method, X):
        check_is_fitted(self, "estimator_")
        X_in = X
        dask_in = is_dask_collection(X)
        X = validate_fitted_X(self, X, allow_nan=dask_in or self._allow_nan(), lengths=False)
        columns = dask_columns(self) if dask_in and method == "transform" else None
        if dask_in:
            dtype, n_columns = self._output_shape(method, X)
            return apply_blockwise(
                self.estimator_,
                method,
                X_in if is_dask_frame(X_in) else X,
                dtype=dtype,
                n_columns=n_columns,
                name=f"{method}-{type(self.estimator_).__name__.lower()}",
                allow_nan=self._allow_nan(),
                columns=columns,
            )
        out = getattr(self.estimator_, method)(X)
        return wrap_numpy(self, out, X_in) if method == "transform" else out

    @available_if(_has("predict"))
    def predict(self, X: ArrayLike) -> Array:
        """``estimator_.predict``; lazy and blockwise for a dask input."""
        return self._apply("predict", X)

    @available_if(_has("predict_proba"))
    def predict_proba(self, X: ArrayLike) -> Array:
        """``estimator_.predict_proba``; lazy and blockwise for a dask input."""
        return self._apply("predict_proba", X)

    @available_if(_has("predict_log_proba"))
    def predict_log_proba(self, X: ArrayLike) -> Array:
        """``estimator_.predict_log_proba``; lazy and blockwise for a dask input."""
        return self._apply("predict_log_proba", X)

    @available_if(_has("decision_function"))
    def decision_function(self, X: ArrayLike) -> Array:
        """``estimator_.decision_function``; lazy and blockwise for a dask input."""
        return self._apply("decision_function", X)

    @available_if(_has("score_samples"))
    def score_samples(self, X: ArrayLike) -> Array:
        """``estimator_.score_samples``; lazy and blockwise for a dask input."""
        return self._apply("score_samples", X)

    @available_if(_has("transform"))
    def transform(self, X: ArrayLike) -> Array:
        """``estimator_.transform``; lazy and blockwise for a dask input (see ``set_output``)."""
        return self._apply("transform", X)

    @available_if(_has("transform"))
    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None, **fit_params: Any) -> Array:
        """``fit(X, y, **fit_params).transform(X)``."""
        return self.fit(X, y, **fit_params).transform(X)

    @available_if(_has("transform"))
    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> NDArray:
        """``estimator_.get_feature_names_out`` given the column names seen at fit."""
        check_is_fitted(self, "estimator_")
        seen = getattr(self, "feature_names_in_", None)
        if input_features is not None and seen is not None:
            if not np.array_equal(np.asarray(input_features, dtype=object), seen):
                raise ValidationError("input_features is not equal to feature_names_in_")
        names = input_features if input_features is not None else seen
        return self.estimator_.get_feature_names_out(names)

    @available_if(_has("score"))
    def score(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> float:
        """Accuracy (classifiers), R^2 (regressors), else ``estimator_.score``; eager.

        Classifiers and regressors reduce dask inputs blockwise with
        :mod:`dasktrain.metrics`; a dask DataFrame's predictions and labels are computed here
        (n values each). Other estimators compute X (and y) here and call their own ``score``.
        """
        from .. import metrics

        check_is_fitted(self, "estimator_")
        kind = self._kind()
        with using_client(self.client):
            if kind not in ("classifier", "regressor"):
                X, y, w = compute_all([X, y, sample_weight])
                X = validate_fitted_X(self, X, allow_nan=self._allow_nan())
                kw = {} if w is None else {"sample_weight": w}
                return float(self.estimator_.score(X, y, **kw))
            pred, y, sample_weight = scoring_inputs(X, self.predict(X), y, sample_weight)
            score = metrics.accuracy_score if kind == "classifier" else metrics.r2_score
            return float(score(y, pred, sample_weight=sample_weight))
