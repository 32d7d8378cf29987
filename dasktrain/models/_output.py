"""What a fitted estimator gives back: lazy blockwise results and scikit-learn's ``set_output``.

Output type follows input type (dask-ml's ``ParallelPostFit``), on both engines:

================================  =========================================================
input                             ``predict`` / ``predict_proba`` / ``transform``
================================  =========================================================
numpy, pandas                     numpy (``transform``: a pandas / polars DataFrame under
                                  ``set_output``, with the input's index)
dask array                        lazy dask array, the same row chunks
dask DataFrame                    lazy dask array with unknown row chunks (nothing is
                                  computed; ``.compute_chunk_sizes()`` when they are needed)
================================  =========================================================

``set_output(transform="pandas")`` on dask input gives a **lazy dask DataFrame**, never a
computed one: for a dask DataFrame input it keeps the input's index and partitions, for a dask
array input it has the array's row chunks as partitions. ``"polars"`` has no lazy dask form and
is refused for dask input (compute ``X`` first).

NaN and inf in a dask input are found when a block is computed
(:class:`FiniteBlocks`), never by a pass of their own.
"""

from __future__ import annotations

import numpy as np

from .._dask import blockwise_apply
from ..exceptions import ValidationError
from ._base import is_dask_frame

__all__ = ["FiniteBlocks", "apply_blockwise", "LazySetOutputMixin", "OUTPUTS"]

#: the containers ``set_output(transform=...)`` takes, as in scikit-learn
OUTPUTS = ("default", "pandas", "polars")


class FiniteBlocks:
    """A fitted model whose methods first refuse a block holding NaN or inf.

    The lazy dask results check their input where it is computed, block by block; a pass of
    its own would compute (for features of images: read and decode) the input twice.
    """

    def __init__(self, model, allow_nan=False):
        self.model = model
        self.allow_nan = allow_nan

    def _call(self, method, block):
        block = np.asarray(block)
        if not self.allow_nan and block.dtype.kind == "f" and not np.isfinite(block).all():
            rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
            raise ValidationError(
                f"X contains NaN or infinite values ({len(rows)} row(s) of this block, local "
                f"rows {rows[:5].tolist()!r}); drop or impute them first (for example "
                "sklearn.impute.SimpleImputer)."
            )
        # np.asarray: an estimator under scikit-learn's global set_output returns a frame.
        return np.asarray(getattr(self.model, method)(block))

    def predict(self, block):
        return self._call("predict", block)

    def predict_proba(self, block):
        return self._call("predict_proba", block)

    def predict_log_proba(self, block):
        return self._call("predict_log_proba", block)

    def decision_function(self, block):
        return self._call("decision_function", block)

    def transform(self, block):
        return self._call("transform", block)

    def score_samples(self, block):
        return self._call("score_samples", block)

    def apply(self, block):
        return self._call("apply", block)


def _partition(part, model, method, columns):
    """One partition of a dask DataFrame: numpy out, or a frame with the partition's index."""
    out = getattr(model, method)(part.to_numpy())
    if columns is None:
        return out
    import pandas as pd

    return pd.DataFrame(out, index=part.index, columns=columns)


def apply_blockwise(
    model, method, X, *, dtype, n_columns=None, name, allow_nan=False, columns=None
):
    """``getattr(model, method)`` lazily on each row block of a dask array or DataFrame.

    The model enters the graph once (dask-ml #842); every block is checked for NaN/inf when it
    is computed unless ``allow_nan``.

    Parameters
    ----------
    model : fitted estimator (or anything with ``method``)
    method : str
    X : dask array (known row chunks) or dask DataFrame, validated
    dtype : numpy dtype of the output
    n_columns : int or None
        None for a 1-d output, else the number of output columns.
    name : str
        Key prefix on the dashboard (``predict-logisticregression``).
    allow_nan : bool
    columns : array of str, optional
        Return a lazy dask DataFrame with these columns (``set_output(transform="pandas")``).

    Returns
    -------
    dask array, or dask DataFrame with ``columns``
    """
    guarded = FiniteBlocks(model, allow_nan)
    if is_dask_frame(X):
        import dask

        meta = np.empty((0,) if n_columns is None else (0, n_columns), dtype=dtype)
        if columns is not None:
            import pandas as pd

            meta = pd.DataFrame(meta, columns=columns)
        delayed_model = dask.delayed(guarded, pure=True, traverse=False)
        return X.map_partitions(_partition, delayed_model, method, columns, meta=meta, token=name)
    out = blockwise_apply(guarded, method, X, dtype=dtype, n_columns=n_columns, name=name)
    if columns is None:
        return out
    import dask.dataframe as dd

    return dd.from_dask_array(out, columns=list(columns))


def output_config(estimator, method="transform"):
    """The container ``set_output`` asked for: the estimator's own, else scikit-learn's global."""
    own = getattr(estimator, "_sklearn_output_config", {}).get(method)
    if own is not None:
        return own
    from sklearn import get_config

    return get_config()["transform_output"]


def wrap_numpy(estimator, out, X_in, method="transform"):
    """A numpy result in the container ``set_output`` asked for (index of a pandas ``X_in``)."""
    if hasattr(out, "columns"):
        # A wrapped scikit-learn estimator follows scikit-learn's global set_output too; the
        # container is chosen here, with the input's index.
        out = out.to_numpy()
    config = output_config(estimator, method)
    if config == "default":
        return out
    names = list(estimator.get_feature_names_out())
    if config == "pandas":
        import pandas as pd

        index = X_in.index if isinstance(X_in, pd.DataFrame) else None
        return pd.DataFrame(out, index=index, columns=names)
    import polars as pl

    return pl.DataFrame(np.asarray(out), schema=names, orient="row")


def dask_columns(estimator, method="transform"):
    """The columns of a lazy dask DataFrame result, or None for a dask array result."""
    config = output_config(estimator, method)
    if config == "default":
        return None
    if config != "pandas":
        raise ValidationError(
            f"set_output(transform={config!r}) has no lazy form for dask input: dasktrain "
            "never computes a dask result to fill a container. Use set_output(transform="
            "'pandas') for a lazy dask DataFrame, or compute X first."
        )
    return np.asarray(estimator.get_feature_names_out(), dtype=object)


class LazySetOutputMixin:
    """scikit-learn's ``set_output``, for estimators whose ``transform`` may be lazy.

    scikit-learn's own wrapper would build a pandas DataFrame from a dask result, computing
    it. Classes using this mixin are created with ``auto_wrap_output_keys=None`` (no wrapper)
    and wrap their results themselves (:func:`wrap_numpy`, ``columns=`` of
    :func:`apply_blockwise`).
    """

    def set_output(self, *, transform=None):
        """Choose the container of ``transform`` and ``fit_transform``.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None
            ``"pandas"``: a pandas DataFrame for numpy or pandas input and a lazy dask
            DataFrame for dask input. ``"polars"``: numpy or pandas input only. None: keep
            the current setting.

        Returns
        -------
        self
        """
        if transform is None:
            return self
        if transform not in OUTPUTS:
            raise ValidationError(f"set_output(transform={transform!r}): use one of {OUTPUTS!r}.")
        if not hasattr(self, "_sklearn_output_config"):
            self._sklearn_output_config = {}
        self._sklearn_output_config["transform"] = transform
        return self
