"""Helpers for testing dasktrain and code built on it: engine parity, small deterministic data."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dask import compute_if_dask

__all__ = ["to_numpy", "assert_engines_equal", "make_blobs"]


def to_numpy(x: Any) -> np.ndarray:
    """Compute a dask collection (or pass a numpy array) and return a numpy array."""
    return np.asarray(compute_if_dask(x))


def assert_engines_equal(
    local: Any, dask: Any, *, atol: float = 0.0, rtol: float = 0.0, err_msg: str = ""
) -> None:
    """Assert a local-engine result and a dask-engine result are equal (bit for bit by default).

    The dask side may be lazy: it is computed here. Shapes and dtypes must match too.
    """
    a, b = to_numpy(local), to_numpy(dask)
    assert a.shape == b.shape, f"shapes differ: local {a.shape} vs dask {b.shape}. {err_msg}"
    assert a.dtype == b.dtype, f"dtypes differ: local {a.dtype} vs dask {b.dtype}. {err_msg}"
    if atol == 0 and rtol == 0:
        np.testing.assert_array_equal(a, b, err_msg=err_msg)
    else:
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg=err_msg)


def make_blobs(
    n_samples: int = 1000,
    n_features: int = 8,
    centers: int = 3,
    *,
    chunks: int | None = None,
    random_state: int = 0,
) -> tuple[Any, Any]:
    """Deterministic Gaussian blobs as numpy, or as a dask array when ``chunks`` is given."""
    from sklearn.datasets import make_blobs as _blobs

    X, y = _blobs(
        n_samples=n_samples, n_features=n_features, centers=centers, random_state=random_state
    )
    X = X.astype(np.float64)
    if chunks is None:
        return X, y
    import dask.array as da

    return da.from_array(X, chunks=(chunks, n_features)), da.from_array(y, chunks=chunks)
