"""What the model modules share besides the Dask plumbing: input checks and pickling.

The Dask plumbing (which client, row blocks, persist, block runners) lives in
:mod:`dasktrain._dask`; the model modules import it from there. This module keeps the checks
every estimator runs the same way (``validate_X``, ``validate_fitted_X``, ``validate_y``,
``computed_X``) and the rule that a client is never pickled with a model.
"""

from __future__ import annotations

import logging

from .._dask import compute_if_dask, using_client
from .._validation import is_dask_collection
from ..exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = [
    "strip_client_state",
    "validate_X",
    "validate_fitted_X",
    "validate_y",
    "computed_X",
]


def strip_client_state(state):
    """``__getstate__`` helper: a client is never pickled with a model."""
    state = dict(state)
    if "client" in state:
        state["client"] = None
    return state


def validate_X(X, *, name="X", allow_nan=False):
    """Check a feature matrix: dasktrain's dask-aware check for dask, scikit-learn's for the rest.

    scikit-learn's messages for numpy input ("Reshape your data", "Input X contains NaN",
    sparse input not supported) are the ones users and ``estimator_checks`` expect; its
    ValueErrors are re-raised as :class:`ValidationError` (a ValueError too).
    """
    if is_dask_collection(X):
        from .._validation import check_array

        return check_array(X, name=name, ndim=2, allow_nan=allow_nan)
    from sklearn.utils.validation import check_array as sk_check_array

    try:
        return sk_check_array(
            X, ensure_all_finite="allow-nan" if allow_nan else True, input_name=name
        )
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(str(exc)) from exc


def computed_X(X, *, name="X"):
    """``X`` as numpy for a local fit: a dask ``X`` is computed here and checked for NaN/inf.

    A dask ``X`` is checked where it is materialised, never by a pass of its own (for lazy
    features of images that pass would read and decode every file once more); a numpy ``X``
    was checked by :func:`validate_X` already.
    """
    if not is_dask_collection(X):
        return X
    return validate_X(compute_if_dask(X), name=name)


def validate_fitted_X(estimator, X, *, name="X"):
    """``validate_X`` for a fitted estimator: also checks the number of features it was fit on.

    The NaN check of a dask ``X`` runs on the estimator's ``client`` when it has one: a
    client that is not the default must also compute the checks of ``predict`` (an array
    persisted on it is unknown to any other scheduler).
    """
    with using_client(estimator.client):
        X = validate_X(X, name=name)
    if X.shape[1] != estimator.n_features_in_:
        raise ValidationError(
            f"{name} has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X


def validate_y(y, X, *, estimator, classifier=True):
    """Check targets: present, 1-d, same length as X and, for a classifier, >= 2 classes.

    Returns ``(y, classes)`` (``classes`` is None for a regressor).
    """
    from .._validation import check_classification_targets, check_consistent_length

    if y is None:
        raise ValidationError(f"{estimator} requires y to be passed, but the target y is None.")
    if is_dask_collection(y):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1:
            raise ValidationError(f"y must be 1-dimensional, got shape {tuple(y.shape)!r}.")
    else:
        from sklearn.utils.validation import column_or_1d

        try:
            y = column_or_1d(y, warn=True)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
    check_consistent_length(X, y)
    if not classifier:
        from .._validation import check_array

        return check_array(y, name="y", ndim=1), None
    if not is_dask_collection(y):
        from sklearn.utils.multiclass import check_classification_targets as sk_targets

        try:
            sk_targets(y)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
    return y, check_classification_targets(y)
