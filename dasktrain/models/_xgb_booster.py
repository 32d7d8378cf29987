"""What a fitted XGBoost estimator offers, as xgboost's own scikit-learn wrapper does.

``get_booster``, ``best_iteration`` / ``best_score``, ``evals_result()``, ``save_model`` /
``load_model`` (xgboost's file, readable by ``xgboost.XGBClassifier`` and back),
``feature_importances_``, ``apply`` (leaf indices) and the booster's output behind
``predict`` with ``iteration_range``, on numpy and dask input alike.
"""

from __future__ import annotations

import json
import numbers
import os

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._compat import import_optional
from .._dask import maybe_client, row_chunked
from .._validation import is_dask_collection
from ..exceptions import ValidationError
from ._base import is_dask_frame, validate_fitted_X
from ._output import apply_blockwise
from ._xgb_dask import predict_dask
from ._xgb_predict import BoosterPredictor, feature_importances

__all__ = ["BoosterMethods"]

#: the booster attribute xgboost's wrapper keeps its metadata in (``save_model``)
_META = "scikit_learn"


class BoosterMethods:
    """Mixin of the XGBoost estimators: the fitted booster's methods (see the module)."""

    def get_booster(self):
        """The fitted :class:`xgboost.Booster` (``booster_``), as xgboost's own wrapper names it.

        Returns
        -------
        xgboost.Booster
        """
        check_is_fitted(self)
        return self.booster_

    @property
    def best_iteration(self):
        """The best round of a fit with early stopping (0-based), as in xgboost.

        Raises
        ------
        AttributeError
            The fit did not use early stopping (``early_stopping_rounds`` and ``eval_set``).
        """
        check_is_fitted(self)
        if self.best_iteration_ is None:
            raise AttributeError(
                "`best_iteration` is only defined when early stopping is used "
                "(early_stopping_rounds=... and fit(..., eval_set=[...]))."
            )
        return int(self.best_iteration_)

    @property
    def best_score(self):
        """The evaluation score at ``best_iteration``, as in xgboost.

        Raises
        ------
        AttributeError
            The fit did not use early stopping.
        """
        self.best_iteration  # noqa: B018 - raises the same AttributeError without it
        return float(self.booster_.attr("best_score"))

    def evals_result(self):
        """The evaluation history of ``eval_set``: ``{"validation_0": {metric: [...]}, ...}``.

        Returns
        -------
        dict
            Empty when ``fit`` had no ``eval_set``.
        """
        check_is_fitted(self)
        return {k: {m: list(v) for m, v in d.items()} for k, d in self.evals_result_.items()}

    @property
    def feature_importances_(self):
        """Importance of each feature, normalised to sum to 1 (xgboost's definition).

        The ``importance_type`` parameter (default ``"gain"``) picks the measure; features
        never used in a split get 0.

        Returns
        -------
        ndarray of shape (n_features_in_,), float32
        """
        check_is_fitted(self)
        kind = self.importance_type or "gain"
        return feature_importances(self.booster_, self.n_features_in_, kind)

    # -- files -------------------------------------------------------------------------------
    def save_model(self, fname):
        """Save the model in xgboost's format (``.json`` or ``.ubj``), as xgboost's wrapper does.

        The file also keeps the classes, the number of features and their names, so
        :meth:`load_model` restores a model that predicts the same labels; xgboost's own
        ``XGBClassifier.load_model`` reads it too (and ours reads xgboost's).

        Parameters
        ----------
        fname : str or path
        """
        check_is_fitted(self)
        own = {"n_features_in": int(self.n_features_in_)}
        if hasattr(self, "feature_names_in_"):
            own["feature_names_in"] = [str(n) for n in self.feature_names_in_]
        if hasattr(self, "classes_"):
            own["classes"] = self.classes_.tolist()
            own["classes_dtype"] = self.classes_.dtype.str
        meta = {"_estimator_type": self._kind, "dasktrain": own}
        self.booster_.set_attr(**{_META: json.dumps(meta)})
        try:
            self.booster_.save_model(os.fspath(fname))
        finally:
            self.booster_.set_attr(**{_META: None})

    def load_model(self, fname):
        """Load a model saved by :meth:`save_model` or by xgboost (a file, or its bytes).

        Parameters
        ----------
        fname : str, path or bytearray

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            The file holds a regressor and this is a classifier, or the reverse.
        """
        xgboost = import_optional("xgboost")
        booster = xgboost.Booster()
        booster.load_model(fname if isinstance(fname, bytearray) else os.fspath(fname))
        meta = json.loads(booster.attr(_META) or "{}")
        booster.set_attr(**{_META: None})
        kind = meta.get("_estimator_type")
        if kind is not None and kind != self._kind:
            raise ValidationError(
                f"{fname!r} holds an XGBoost {kind}; load it into "
                f"XGB{'Classifier' if kind == 'classifier' else 'Regressor'} instead."
            )
        own = meta.get("dasktrain") or {}
        self.booster_ = booster
        self.n_features_in_ = int(own.get("n_features_in") or booster.num_features())
        if own.get("feature_names_in"):
            self.feature_names_in_ = np.asarray(own["feature_names_in"], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if self._kind == "classifier":
            config = json.loads(booster.save_config())
            n = max(2, int(config["learner"]["learner_model_param"]["num_class"]))
            classes = own.get("classes")
            self.classes_ = (
                np.asarray(classes, dtype=np.dtype(own["classes_dtype"]))
                if classes is not None
                else np.arange(n)  # a file of xgboost's: labels were 0..n-1
            )
            self.n_classes_ = len(self.classes_)
        best = booster.attr("best_iteration")
        self.best_iteration_ = int(best) if best is not None else None
        self.evals_result_ = {}
        return self

    # -- the booster's output ------------------------------------------------------------------
    def _iteration_range(self, iteration_range=None):
        """``iteration_range`` checked, or the rounds up to the best one after early stopping
        (all rounds otherwise), as xgboost's wrapper picks them."""
        if iteration_range is not None:
            ok = (
                isinstance(iteration_range, (tuple, list))
                and len(iteration_range) == 2
                and all(
                    isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
                    for v in iteration_range
                )
            )
            if not ok:
                raise ValidationError(
                    f"iteration_range={iteration_range!r} must be a (begin, end) pair of "
                    "rounds >= 0; (0, 0) means all of them."
                )
            return (int(iteration_range[0]), int(iteration_range[1]))
        if self.best_iteration_ is not None:
            return (0, int(self.best_iteration_) + 1)
        return (0, 0)

    def _raw_predict(self, X, iteration_range=None):
        """Booster output: probability of class 1, class probabilities, or the regression.

        Lazy for dask input (NaN is a missing value, so nothing needs computing first).
        """
        check_is_fitted(self)
        X_in = X
        X = validate_fitted_X(self, X, allow_nan=True, lengths=False)
        rng = self._iteration_range(iteration_range)
        if not is_dask_collection(X):
            return self.booster_.inplace_predict(X, iteration_range=rng)
        multi = self._kind == "classifier" and self.n_classes_ > 2
        client = maybe_client(self.client)
        if client is not None and not is_dask_frame(X_in):
            return predict_dask(self, client, row_chunked(X), rng)
        # A dask DataFrame (rows unknown) or no distributed client: one booster key in the
        # graph, applied blockwise.
        return apply_blockwise(
            BoosterPredictor(self.booster_, rng),
            "predict",
            X_in if is_dask_frame(X_in) else X,
            dtype=np.float32,
            n_columns=self.n_classes_ if multi else None,
            name="predict-xgboost",
            allow_nan=True,
        )

    def apply(self, X, iteration_range=None):
        """The leaf each sample reaches in every tree, as xgboost's ``apply``.

        Parameters
        ----------
        X : array-like, dask array or DataFrame of shape (n_samples, n_features)
        iteration_range : (int, int), optional
            Rounds to use; default: up to the best round after early stopping, else all.

        Returns
        -------
        ndarray or lazy dask array of shape (n_samples, n_trees), float32
            Lazy for dask input, one booster key in the graph.
        """
        check_is_fitted(self)
        X_in = X
        X = validate_fitted_X(self, X, allow_nan=True, lengths=False)
        leaves = BoosterPredictor(self.booster_, self._iteration_range(iteration_range))
        if not is_dask_collection(X):
            return leaves.apply(X)
        width = leaves.apply(np.zeros((1, self.n_features_in_), np.float32)).shape[1]
        return apply_blockwise(
            leaves,
            "apply",
            X_in if is_dask_frame(X_in) else X,
            dtype=np.float32,
            n_columns=width,
            name="apply-xgboost",
            allow_nan=True,
        )
