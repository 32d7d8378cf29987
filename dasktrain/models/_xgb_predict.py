"""What the XGBoost estimators do with a fitted booster: labels, probabilities, importances.

Module-level so that the lazy predictions of the dask engine reference them by name.
"""

from __future__ import annotations

import numpy as np

from .._validation import is_dask_collection
from ..exceptions import ValidationError

__all__ = [
    "encode_labels",
    "BoosterPredictor",
    "binary_proba",
    "argmax_labels",
    "feature_importances",
]


def _encode_block(y, classes, name="y"):
    idx = np.searchsorted(classes, y)
    idx = np.minimum(idx, len(classes) - 1)
    if not (classes[idx] == y).all():
        bad = np.unique(y[classes[idx] != y])[:5]
        raise ValidationError(
            f"{name}: labels {bad.tolist()!r} were not seen in y at fit time "
            f"(classes {classes.tolist()!r})."
        )
    return idx


def encode_labels(y, classes, name="y"):
    """Map labels to 0..n_classes-1 (lazily for dask); ``name`` is the argument in messages."""
    if is_dask_collection(y):
        return y.map_blocks(_encode_block, classes, name, dtype=np.intp)
    return _encode_block(np.asarray(y), classes, name)


class BoosterPredictor:
    """A booster and its iteration range, applied to one block (``predict``, ``apply``)."""

    def __init__(self, booster, iteration_range):
        self.booster = booster
        self.iteration_range = iteration_range

    def predict(self, X):
        return self.booster.inplace_predict(X, iteration_range=self.iteration_range)

    def apply(self, X):
        """Leaf indices, ``(n, n_trees)`` float32 (xgboost's ``pred_leaf``)."""
        import xgboost

        dm = xgboost.DMatrix(X, missing=np.nan, feature_names=self.booster.feature_names)
        out = self.booster.predict(dm, pred_leaf=True, iteration_range=self.iteration_range)
        return np.asarray(out, dtype=np.float32).reshape(len(X), -1)


def binary_proba(p):
    """``(1 - p, p)`` columns from the probability of class 1."""
    p = np.asarray(p, dtype=np.float32).reshape(-1)
    return np.column_stack([1.0 - p, p])


def argmax_labels(proba, classes):
    """Labels from class probabilities (class 1 above 0.5 for two classes, as xgboost)."""
    if proba.shape[1] == 2:
        # As xgboost: class 1 when its probability is above 0.5.
        return classes[(proba[:, 1] > 0.5).astype(np.intp)]
    return classes[np.argmax(proba, axis=1)]


def feature_importances(booster, n_features, importance_type):
    """xgboost's ``feature_importances_``: ``get_score`` per feature, normalised to sum to 1."""
    score = booster.get_score(importance_type=importance_type)
    names = booster.feature_names or [f"f{i}" for i in range(n_features)]
    values = np.array([score.get(f, 0.0) for f in names], dtype=np.float32)
    total = values.sum()
    return values / total if total > 0 else values
