"""Clustering metrics; dask inputs in one or two passes of per-cluster sums.

Calinski-Harabasz in one pass (task ``metrics-cluster-sums``); Davies-Bouldin in two
(centroids, then ``metrics-cluster-spread``); adjusted Rand from the label contingency table;
silhouette on a sample of at most ``dasktrain.metrics.silhouette-sample-size`` rows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np

from .. import _config
from .._dask import align_rows, map_row_blocks
from .._validation import check_array, check_consistent_length
from ..exceptions import ValidationError
from ._classification import pair_table
from ._common import any_dask, check_1d, check_same_length, small_vectors

if TYPE_CHECKING:
    from .._typing import ArrayLike, NDArray

    #: per cluster: (labels, sums of rows, counts, sums of squared norms)
    ClusterSums = tuple[NDArray, NDArray, NDArray, NDArray]

logger = logging.getLogger(__name__)

__all__ = [
    "silhouette",
    "silhouette_score",
    "SilhouetteResult",
    "davies_bouldin_score",
    "calinski_harabasz_score",
    "adjusted_rand_score",
]


class SilhouetteResult(NamedTuple):
    """Silhouette score and how many samples it was computed on."""

    score: float
    n_used: int
    n_samples: int


def _check_cluster_input(X: ArrayLike, labels: ArrayLike) -> tuple[Any, Any]:
    X = check_array(X, ndim=2)
    labels = check_1d(labels, "labels")
    check_consistent_length(X, labels, y_name="labels")
    return X, labels


def _check_n_labels(n_labels: int, n: int) -> None:
    if not 1 < n_labels < n:
        raise ValidationError(
            f"labels has {n_labels} distinct value(s) for {n} samples; clustering metrics need "
            f"2 to n_samples - 1 ({n - 1}) clusters."
        )


def silhouette(
    X: ArrayLike,
    labels: ArrayLike,
    *,
    sample_size: int | None = None,
    random_state: int | None = 0,
    metric: str = "euclidean",
) -> SilhouetteResult:
    """Silhouette score, on a random sample above a size, with the sample size reported.

    Parameters
    ----------
    X : array-like or dask array of shape (n_samples, n_features)
    labels : array-like or dask array of shape (n_samples,)
    sample_size : int or None
        Rows to use. None: all rows up to ``dasktrain.metrics.silhouette-sample-size``
        (10,000 by default; the exact score is quadratic in n), else a sample of that size.
    random_state : int
        Seed of the sample; the same rows are used for numpy and dask inputs.

    Returns
    -------
    SilhouetteResult
        ``(score, n_used, n_samples)``.
    """
    import sklearn.metrics as skm

    Xa, la = _check_cluster_input(X, labels)
    n = Xa.shape[0]
    limit = (
        sample_size if sample_size is not None else _config.get("metrics.silhouette-sample-size")
    )
    if limit is not None and (int(limit) < 2):
        raise ValidationError(f"sample_size={sample_size!r} must be an integer >= 2.")
    if limit is None or n <= int(limit):
        idx = None
    else:
        rng = np.random.default_rng(random_state)
        idx = np.sort(rng.choice(n, int(limit), replace=False))
    Xs = Xa if idx is None else Xa[idx]
    ls = la if idx is None else la[idx]
    Xs, ls = small_vectors(Xs, ls)
    _check_n_labels(len(np.unique(ls)), len(ls))
    score = float(skm.silhouette_score(Xs, ls, metric=metric))
    if idx is not None:
        logger.info("silhouette computed on a sample of %d of %d rows", len(ls), n)
    return SilhouetteResult(score, int(len(ls)), int(n))


def silhouette_score(
    X: ArrayLike,
    labels: ArrayLike,
    *,
    sample_size: int | None = None,
    random_state: int | None = 0,
    metric: str = "euclidean",
) -> float:
    """Silhouette score as a float; see :func:`silhouette` (which also reports the sample size)."""
    return silhouette(
        X, labels, sample_size=sample_size, random_state=random_state, metric=metric
    ).score


def _cluster_sums_block(X: NDArray, lab: NDArray) -> ClusterSums:
    u, inv = np.unique(lab, return_inverse=True)
    Xf = X.astype(np.float64, copy=False)
    sums = np.zeros((len(u), X.shape[1]))
    for i in range(len(u)):
        sums[i] = Xf[inv == i].sum(axis=0)
    counts = np.bincount(inv, minlength=len(u))
    sq = np.bincount(inv, weights=np.einsum("ij,ij->i", Xf, Xf), minlength=len(u))
    return u, sums, counts, sq


def _cluster_sums(X: Any, labels: Any) -> ClusterSums:
    """Per-cluster (labels, sums, counts, sums of squared norms) in one pass."""
    Xd, ld = align_rows(X, labels, names=["X", "labels"])
    parts = map_row_blocks(_cluster_sums_block, Xd, ld, name="metrics-cluster-sums")
    u = np.unique(np.concatenate([p[0] for p in parts]))
    sums = np.zeros((len(u), X.shape[1]))
    counts = np.zeros(len(u), dtype=np.int64)
    sq = np.zeros(len(u))
    for pu, ps, pc, psq in parts:
        i = np.searchsorted(u, pu)
        sums[i] += ps
        counts[i] += pc
        sq[i] += psq
    return u, sums, counts, sq


def calinski_harabasz_score(X: ArrayLike, labels: ArrayLike) -> float:
    """Calinski-Harabasz index; exact for dask inputs via one pass of per-cluster sums.

    See Also
    --------
    sklearn.metrics.calinski_harabasz_score
    """
    import sklearn.metrics as skm

    Xa, la = _check_cluster_input(X, labels)
    if not any_dask(Xa, la):
        _check_n_labels(len(np.unique(la)), Xa.shape[0])
        return float(skm.calinski_harabasz_score(Xa, la))
    u, sums, counts, sq = _cluster_sums(Xa, la)
    n, k = int(counts.sum()), len(u)
    _check_n_labels(k, n)
    centroids = sums / counts[:, None]
    mean = sums.sum(axis=0) / n
    extra = float((counts * ((centroids - mean) ** 2).sum(axis=1)).sum())
    intra = float((sq - counts * (centroids**2).sum(axis=1)).sum())
    return float(1.0 if intra == 0.0 else extra * (n - k) / (intra * (k - 1.0)))


def _intra_block(X: NDArray, lab: NDArray, u: NDArray, centroids: NDArray) -> NDArray:
    i = np.searchsorted(u, lab)
    d = np.sqrt(((X.astype(np.float64, copy=False) - centroids[i]) ** 2).sum(axis=1))
    return np.bincount(i, weights=d, minlength=len(u))


def davies_bouldin_score(X: ArrayLike, labels: ArrayLike) -> float:
    """Davies-Bouldin index; exact for dask inputs in two passes (centroids, distances).

    See Also
    --------
    sklearn.metrics.davies_bouldin_score
    """
    import sklearn.metrics as skm
    from sklearn.metrics import pairwise_distances

    Xa, la = _check_cluster_input(X, labels)
    if not any_dask(Xa, la):
        _check_n_labels(len(np.unique(la)), Xa.shape[0])
        return float(skm.davies_bouldin_score(Xa, la))
    u, sums, counts, _ = _cluster_sums(Xa, la)
    _check_n_labels(len(u), int(counts.sum()))
    centroids = sums / counts[:, None]
    Xd, ld = align_rows(Xa, la, names=["X", "labels"])
    spread = map_row_blocks(
        _intra_block, Xd, ld, name="metrics-cluster-spread", u=u, centroids=centroids
    )
    intra = np.sum(spread, axis=0) / counts
    cd = pairwise_distances(centroids)
    if np.allclose(intra, 0) or np.allclose(cd, 0):
        return 0.0
    cd[cd == 0] = np.inf
    combined = (intra[:, None] + intra) / cd
    return float(np.mean(np.max(combined, axis=1)))


def _contingency(labels_true: ArrayLike, labels_pred: ArrayLike) -> NDArray:
    if any_dask(labels_true, labels_pred):
        return pair_table(labels_true, labels_pred)[2]
    from sklearn.metrics.cluster import contingency_matrix

    return cast("NDArray", contingency_matrix(labels_true, labels_pred))


def adjusted_rand_score(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index; dask inputs via the blockwise contingency table.

    See Also
    --------
    sklearn.metrics.adjusted_rand_score
    """
    import sklearn.metrics as skm

    labels_true = check_1d(labels_true, "labels_true")
    labels_pred = check_1d(labels_pred, "labels_pred")
    if not any_dask(labels_true, labels_pred):
        check_same_length(labels_true, labels_pred, "labels_true", "labels_pred")
        return float(skm.adjusted_rand_score(labels_true, labels_pred))
    C = _contingency(labels_true, labels_pred).astype(np.int64)
    n = int(C.sum())
    sum_squares = int((C.astype(object) ** 2).sum())
    n_c, n_k = C.sum(axis=1), C.sum(axis=0)
    c01 = int((C @ n_k).sum()) - sum_squares
    c10 = int((C.T @ n_c).sum()) - sum_squares
    tp = sum_squares - n
    tn = n * n - c01 - c10 - sum_squares
    fp, fn = c01, c10
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))
