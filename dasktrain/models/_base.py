"""What the model modules share besides the Dask plumbing: scikit-learn's data contract.

The Dask plumbing (which client, row blocks, persist, block runners) lives in
:mod:`dasktrain._dask`; the model modules import it from there. This module keeps the checks
every estimator runs the same way:

* ``fit_X`` / ``validate_fitted_X``: the feature matrix at fit and after, with scikit-learn's
  column-name contract (``feature_names_in_`` recorded from a pandas or dask DataFrame at fit,
  checked at predict with scikit-learn's own messages) and the number of features;
* ``validate_X``, ``validate_y``, ``computed_X``: values, shapes, labels;
* ``strip_client_state``: a client is never pickled with a model.

Input types (the same on both engines):

* numpy, lists, pandas DataFrame / Series: checked by scikit-learn (a DataFrame's columns are
  the feature names);
* dask array: chunk sizes must be known;
* dask DataFrame / Series: its column names are read without computing anything. At fit it
  becomes a dask array with ``to_dask_array(lengths=True)``: dask counts the rows of each
  partition (free for a frame made from pandas or a dask array, a pass over the data
  otherwise; persist the frame first to pay for it once). After fit (predict, transform) it
  stays lazy: ``to_dask_array()`` with unknown row chunks, nothing computed.
"""

from __future__ import annotations

import logging

import numpy as np

from .._dask import compute_if_dask, using_client
from .._validation import is_dask_collection
from ..exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = [
    "strip_client_state",
    "is_dask_frame",
    "check_feature_names",
    "fit_X",
    "validate_X",
    "validate_fitted_X",
    "validate_y",
    "computed_X",
    "check_no_inf",
]


def strip_client_state(state):
    """``__getstate__`` helper: a client is never pickled with a model."""
    state = dict(state)
    if "client" in state:
        state["client"] = None
    return state


def is_dask_frame(X):
    """True for a dask DataFrame or Series (not for a dask array)."""
    return is_dask_collection(X) and hasattr(X, "to_dask_array")


def _names_proxy(X):
    """What scikit-learn reads the column names from: an empty pandas frame for a dask one.

    Giving scikit-learn ``X`` itself would ask it to understand dask collections (versions
    differ); an empty pandas frame with the same columns costs nothing and reads the same.
    """
    if is_dask_frame(X):
        if not hasattr(X, "columns"):  # a dask Series: 1-d, no feature names
            return np.empty((0, 1))
        import pandas as pd

        return pd.DataFrame(columns=X.columns)
    if is_dask_collection(X):
        return np.empty((0, 0))
    return X


def check_feature_names(estimator, X, *, reset):
    """scikit-learn's column-name contract, for numpy, pandas and dask inputs alike.

    ``reset=True`` (fit) records ``feature_names_in_`` from a DataFrame's columns (all strings)
    or removes it; ``reset=False`` (predict) raises when the columns differ from those at fit
    (unseen, missing or reordered: scikit-learn's messages) and warns, as scikit-learn does,
    when names appear or disappear between fit and predict.
    """
    # The one private scikit-learn helper dasktrain uses: it owns the messages and warnings
    # users (and estimator_checks) expect; public since 1.6 as a function in this module.
    from sklearn.utils.validation import _check_feature_names

    try:
        _check_feature_names(estimator, _names_proxy(X), reset=reset)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(str(exc)) from exc


def _frame_as_array(X, name, *, lengths):
    """A dask DataFrame as a dask array: row chunks counted (``lengths``) or left unknown."""
    if X.ndim != 2:
        raise ValidationError(
            f"{name} is a dask Series; pass a 2-d dask DataFrame (`{name}.to_frame()`)."
        )
    A = X.to_dask_array(lengths=True if lengths else None)
    if A.dtype.kind not in "biuf":
        dtypes = sorted(set(map(str, X.dtypes)))
        raise ValidationError(
            f"{name} must be numeric, but its columns have dtypes {dtypes!r}; convert them "
            f"with `{name}.astype('float32')`."
        )
    return A


def validate_X(X, *, name="X", allow_nan=False, lengths=True):
    """Check a feature matrix: dasktrain's dask-aware check for dask, scikit-learn's for the rest.

    scikit-learn's messages for numpy and pandas input ("Reshape your data", "Input X
    contains NaN", sparse input not supported) are the ones users and ``estimator_checks``
    expect; its ValueErrors are re-raised as :class:`ValidationError` (a ValueError too). A
    dask DataFrame becomes a dask array (see the module docstring for ``lengths``); with
    unknown row chunks (``lengths=False``) only its dtype is checked here.
    """
    if is_dask_frame(X):
        X = _frame_as_array(X, name, lengths=lengths)
        if not lengths:
            return X
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


def fit_X(estimator, X, *, allow_nan=False):
    """``X`` at fit: column names recorded, values checked, ``n_features_in_`` set.

    A dask ``X`` is never computed here for its NaN check (``allow_nan`` is passed as True for
    it by the estimators, which check it where it is materialised: computing it twice would
    read and decode images twice).
    """
    check_feature_names(estimator, X, reset=True)
    X = validate_X(X, allow_nan=allow_nan)
    estimator.n_features_in_ = int(X.shape[1])
    return X


def computed_X(X, *, name="X", allow_nan=False):
    """``X`` as numpy for a local fit: a dask ``X`` is computed here and checked for NaN/inf.

    A dask ``X`` is checked where it is materialised, never by a pass of its own (for lazy
    features of images that pass would read and decode every file once more); a numpy ``X``
    was checked by :func:`validate_X` already.
    """
    if not is_dask_collection(X):
        return X
    return validate_X(compute_if_dask(X), name=name, allow_nan=allow_nan)


def validate_fitted_X(estimator, X, *, name="X", allow_nan=False, lengths=True):
    """``X`` after fit: column names as at fit, values checked, the same number of features.

    A dask ``X`` stays lazy with ``allow_nan=True``: the callers that return lazy results
    (predict, transform) check each block for NaN/inf when it is computed
    (:class:`~dasktrain.models._output.FiniteBlocks`). With ``allow_nan=False`` a dask ``X``
    is checked by one reduction, computed on the estimator's ``client`` when it has one (an
    array persisted on a client that is not the default is unknown to any other scheduler).
    ``lengths=False`` leaves a dask DataFrame's row chunks unknown (nothing computed).
    """
    check_feature_names(estimator, X, reset=False)
    with using_client(getattr(estimator, "client", None)):
        X = validate_X(X, name=name, allow_nan=allow_nan, lengths=lengths)
    if X.shape[1] != estimator.n_features_in_:
        raise ValidationError(
            f"{name} has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X


def check_no_inf(X, *, name="X"):
    """Raise for infinite values (NaN is allowed: a missing value); one reduction for dask."""
    if X.dtype.kind != "f":
        return
    if is_dask_collection(X):
        import dask.array as da

        bad = bool(compute_if_dask(da.isinf(X).any()))
    else:
        bad = bool(np.isinf(X).any())
    if bad:
        raise ValidationError(
            f"{name} contains infinite values; NaN is read as a missing value, but inf is "
            "refused. Replace them (for example with NaN) first."
        )


def _as_vector(y, name):
    """``y`` as a 1-d array-like: a dask Series (or one-column frame) becomes a dask array."""
    if is_dask_frame(y):
        if y.ndim == 2:
            if len(y.columns) != 1:
                raise ValidationError(
                    f"{name} is a dask DataFrame with {len(y.columns)} columns; pass one column."
                )
            y = y[y.columns[0]]
        y = y.to_dask_array(lengths=True)
    if is_dask_collection(y):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1:
            raise ValidationError(f"{name} must be 1-dimensional, got shape {tuple(y.shape)!r}.")
        return y
    from sklearn.utils.validation import column_or_1d

    try:
        return column_or_1d(y, warn=True)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def validate_y(y, X, *, estimator, classifier=True, name="y", x_name="X", min_classes=2):
    """Check targets: present, 1-d, same length as X and, for a classifier, >= ``min_classes``
    classes. ``name`` / ``x_name`` are the arguments the messages name (``eval_set[0][1]``).

    Accepts numpy, pandas Series, dask arrays and dask Series. Returns ``(y, classes)``
    (``classes`` is None for a regressor).
    """
    from .._validation import check_classification_targets, check_consistent_length

    if y is None:
        raise ValidationError(
            f"{estimator} requires {name} to be passed, but the target {name} is None."
        )
    y = _as_vector(y, name)
    check_consistent_length(X, y, x_name=x_name, y_name=name)
    if not classifier:
        from .._validation import check_array

        return check_array(y, name=name, ndim=1), None
    if not is_dask_collection(y):
        from sklearn.utils.multiclass import check_classification_targets as sk_targets

        try:
            sk_targets(y)
        except ValueError as exc:
            raise ValidationError(f"{name}: {exc}" if name != "y" else str(exc)) from exc
    return y, check_classification_targets(y, name=name, min_classes=min_classes)


def validate_sample_weight(sample_weight, X):
    """``sample_weight`` as a checked 1-d array of X's length (None stays None): no negative
    weight, not all of them 0 (one pass over a dask array's weights)."""
    if sample_weight is None:
        return None
    from .._validation import check_array, check_consistent_length, check_weights

    w = check_array(_as_vector(sample_weight, "sample_weight"), name="sample_weight", ndim=1)
    check_consistent_length(X, w, y_name="sample_weight")
    check_weights(w)
    return w


def scoring_inputs(X, y_pred, y, sample_weight):
    """``(y_pred, y, sample_weight)`` ready for :mod:`dasktrain.metrics`.

    A dask DataFrame ``X`` gives predictions with unknown row chunks, and dask Series labels
    have none either: then the three vectors (n values each) are computed here, in one call.
    Dask arrays with known chunks stay lazy (the metrics reduce them blockwise).
    """
    if not any(is_dask_frame(v) for v in (X, y, sample_weight)):
        return y_pred, y, sample_weight
    from .._dask import compute_all

    y, sample_weight = (v.to_dask_array() if is_dask_frame(v) else v for v in (y, sample_weight))
    return tuple(compute_all([y_pred, y, sample_weight]))
