"""Metrics for numpy or dask inputs, equal to scikit-learn's.

numpy inputs go straight to :mod:`sklearn.metrics`. Dask inputs are reduced block by block and
only small summaries travel to the client:

* classification metrics (accuracy, balanced accuracy, precision / recall / F1, confusion
  matrix) need nothing but the table of (true label, predicted label) pair counts. Each block
  returns its own table, the client adds them up, and scikit-learn then runs on the
  *compressed* problem: one sample per non-empty cell, weighted by the cell's count (or summed
  ``sample_weight``). Every count-based metric is a function of that table, so the result is
  scikit-learn's own, including ``average=``, ``zero_division=`` and ``pos_label=``;
* ROC AUC and ROC curve points are exact: only the 1-d label and score vectors (and weights)
  are computed to the client, never X (say 8 bytes per sample per vector);
* clustering: Calinski-Harabasz in one pass of per-cluster sums; Davies-Bouldin in two passes
  (centroids, then mean distances); adjusted Rand from the label contingency table; silhouette
  on a sample of at most ``dasktrain.metrics.silhouette-sample-size`` rows (the sample size
  used is reported by :func:`silhouette`).

With a default ``distributed`` client the reductions run on the cluster; otherwise on the
local dask scheduler.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from . import _config
from ._validation import (
    check_array,
    check_consistent_length,
    check_known_chunks,
    is_dask_collection,
    n_samples,
)
from .exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = [
    "accuracy_score",
    "balanced_accuracy_score",
    "precision_recall_fscore_support",
    "precision_score",
    "recall_score",
    "f1_score",
    "roc_auc_score",
    "roc_curve",
    "confusion_matrix",
    "r2_score",
    "silhouette",
    "silhouette_score",
    "SilhouetteResult",
    "davies_bouldin_score",
    "calinski_harabasz_score",
    "adjusted_rand_score",
]


# ----------------------------------------------------------------------------- plumbing


def _any_dask(*xs):
    return any(is_dask_collection(x) for x in xs if x is not None)


def _align(*arrays, names):
    """Return dask arrays with the same row chunks (numpy ones are wrapped to match)."""
    import dask.array as da

    i_ref = next(i for i, a in enumerate(arrays) if a is not None and is_dask_collection(a))
    ref = arrays[i_ref]
    n = n_samples(ref, names[i_ref])
    out = []
    for a, name in zip(arrays, names):
        if a is None:
            out.append(None)
            continue
        if is_dask_collection(a):
            check_known_chunks(a, name)
        else:
            a = np.asarray(a)
        if a.shape[0] != n:
            raise ValidationError(
                f"{names[0]} has {n} samples but {name} has {a.shape[0]}; "
                "they must have the same length."
            )
        chunks = (ref.chunks[0],) + tuple((s,) for s in a.shape[1:])
        a = a.rechunk(chunks) if is_dask_collection(a) else da.from_array(a, chunks=chunks)
        out.append(a)
    return out


def _block_map(fn, *arrays, **kwargs):
    """Call ``fn(*blocks, **kwargs)`` for every row block; return the list of results."""
    import dask

    blocks = [
        [None] * arrays[0].numblocks[0]
        if a is None
        else list(a.to_delayed().ravel())
        if a.ndim == 1
        else [row[0] for row in a.to_delayed()]
        for a in arrays
    ]
    tasks = [dask.delayed(fn)(*parts, **kwargs) for parts in zip(*blocks)]
    return list(dask.compute(*tasks))


def _check_1d(y, name):
    if not is_dask_collection(y):
        y = np.asarray(y)
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise ValidationError(f"{name} must be 1-dimensional, got shape {tuple(y.shape)!r}.")
    return y.reshape(-1) if y.ndim == 2 else y


# ----------------------------------------------------------------------------- pair tables


def _pair_block(yt, yp, w):
    ut, it = np.unique(yt, return_inverse=True)
    up, ip = np.unique(yp, return_inverse=True)
    flat = it.ravel() * len(up) + ip.ravel()
    counts = np.bincount(flat, minlength=len(ut) * len(up)).reshape(len(ut), len(up))
    weights = None
    if w is not None:
        weights = np.bincount(flat, weights=w, minlength=len(ut) * len(up)).reshape(counts.shape)
    return ut, up, counts, weights


def _pair_table(y_true, y_pred, sample_weight=None):
    """Pair-count table of two dask label vectors: (true labels, pred labels, counts, weights)."""
    yt, yp, w = _align(
        _check_1d(y_true, "y_true"),
        _check_1d(y_pred, "y_pred"),
        None if sample_weight is None else _check_1d(sample_weight, "sample_weight"),
        names=["y_true", "y_pred", "sample_weight"],
    )
    parts = _block_map(_pair_block, yt, yp, w)
    ut = np.unique(np.concatenate([p[0] for p in parts]))
    up = np.unique(np.concatenate([p[1] for p in parts]))
    counts = np.zeros((len(ut), len(up)), dtype=np.int64)
    weights = None if w is None else np.zeros(counts.shape, dtype=np.float64)
    for a, b, c, cw in parts:
        ia, ib = np.searchsorted(ut, a), np.searchsorted(up, b)
        counts[np.ix_(ia, ib)] += c
        if weights is not None:
            weights[np.ix_(ia, ib)] += cw
    return ut, up, counts, weights


def _compressed(y_true, y_pred, sample_weight=None):
    """One sample per non-empty (true, pred) cell, weighted by its count or summed weight."""
    ut, up, counts, weights = _pair_table(y_true, y_pred, sample_weight)
    i, j = np.nonzero(counts)
    sw = (counts if weights is None else weights)[i, j].astype(np.float64)
    return ut[i], up[j], sw


def _classification(name, y_true, y_pred, sample_weight, **kwargs):
    import sklearn.metrics as skm

    fn = getattr(skm, name)
    if not _any_dask(y_true, y_pred, sample_weight):
        y_true, y_pred = _check_1d(y_true, "y_true"), _check_1d(y_pred, "y_pred")
        if len(y_true) != len(y_pred):
            raise ValidationError(
                f"y_true has {len(y_true)} samples but y_pred has {len(y_pred)}; "
                "they must have the same length."
            )
        return fn(y_true, y_pred, sample_weight=sample_weight, **kwargs)
    yt, yp, sw = _compressed(y_true, y_pred, sample_weight)
    return fn(yt, yp, sample_weight=sw, **kwargs)


def accuracy_score(y_true, y_pred, *, normalize=True, sample_weight=None):
    """Accuracy; for dask inputs from the blockwise pair-count table (see module docstring).

    See Also
    --------
    sklearn.metrics.accuracy_score
    """
    return _classification("accuracy_score", y_true, y_pred, sample_weight, normalize=normalize)


def balanced_accuracy_score(y_true, y_pred, *, sample_weight=None, adjusted=False):
    """Balanced accuracy (mean recall per class); dask inputs reduced blockwise.

    See Also
    --------
    sklearn.metrics.balanced_accuracy_score
    """
    return _classification(
        "balanced_accuracy_score", y_true, y_pred, sample_weight, adjusted=adjusted
    )


def precision_recall_fscore_support(y_true, y_pred, *, sample_weight=None, **kwargs):
    """Precision, recall, F-beta and support; keyword arguments as in scikit-learn.

    For dask inputs ``support`` is the (weighted) count from the pair table, equal to
    scikit-learn's.

    See Also
    --------
    sklearn.metrics.precision_recall_fscore_support
    """
    if _any_dask(y_true, y_pred, sample_weight) and sample_weight is None:
        # The compressed problem carries counts as weights; support must stay an integer count.
        yt, yp, sw = _compressed(y_true, y_pred)
        import sklearn.metrics as skm

        out = skm.precision_recall_fscore_support(yt, yp, sample_weight=sw, **kwargs)
        if out[3] is not None:
            out = out[:3] + (np.rint(out[3]).astype(np.int64),)
        return out
    return _classification(
        "precision_recall_fscore_support", y_true, y_pred, sample_weight, **kwargs
    )


def precision_score(y_true, y_pred, *, sample_weight=None, **kwargs):
    """Precision; see :func:`sklearn.metrics.precision_score` for the keyword arguments."""
    return _classification("precision_score", y_true, y_pred, sample_weight, **kwargs)


def recall_score(y_true, y_pred, *, sample_weight=None, **kwargs):
    """Recall; see :func:`sklearn.metrics.recall_score` for the keyword arguments."""
    return _classification("recall_score", y_true, y_pred, sample_weight, **kwargs)


def f1_score(y_true, y_pred, *, sample_weight=None, **kwargs):
    """F1; see :func:`sklearn.metrics.f1_score` for the keyword arguments."""
    return _classification("f1_score", y_true, y_pred, sample_weight, **kwargs)


def confusion_matrix(y_true, y_pred, *, labels=None, sample_weight=None, normalize=None):
    """Confusion matrix; for dask inputs a sum of per-block pair counts.

    Returns
    -------
    ndarray of shape (n_classes, n_classes)
        int64 without ``sample_weight`` (as scikit-learn), float with it.

    See Also
    --------
    sklearn.metrics.confusion_matrix
    """
    import sklearn.metrics as skm

    if not _any_dask(y_true, y_pred, sample_weight):
        return skm.confusion_matrix(
            _check_1d(y_true, "y_true"),
            _check_1d(y_pred, "y_pred"),
            labels=labels,
            sample_weight=sample_weight,
            normalize=normalize,
        )
    yt, yp, sw = _compressed(y_true, y_pred, sample_weight)
    cm = skm.confusion_matrix(yt, yp, labels=labels, sample_weight=sw, normalize=normalize)
    if sample_weight is None and normalize is None:
        cm = np.rint(cm).astype(np.int64)
    return cm


def _small_vectors(*xs):
    """Compute 1-d (or thin 2-d) dask vectors to numpy in one call (never X itself)."""
    import dask

    if not _any_dask(*xs):
        return [None if x is None else np.asarray(x) for x in xs]
    live = [x for x in xs if x is not None and is_dask_collection(x)]
    for x in live:
        check_known_chunks(x, "y")
    done = iter(dask.compute(*live))
    return [
        None if x is None else (next(done) if is_dask_collection(x) else np.asarray(x)) for x in xs
    ]


def roc_auc_score(y_true, y_score, *, sample_weight=None, **kwargs):
    """Area under the ROC curve, exact: for dask inputs only the label and score vectors are
    computed (not X). Keyword arguments as in :func:`sklearn.metrics.roc_auc_score`."""
    import sklearn.metrics as skm

    yt, ys, sw = _small_vectors(y_true, y_score, sample_weight)
    if len(yt) != len(ys):
        raise ValidationError(
            f"y_true has {len(yt)} samples but y_score has {len(ys)}; they must have the same "
            "length."
        )
    return skm.roc_auc_score(yt, ys, sample_weight=sw, **kwargs)


def roc_curve(y_true, y_score, *, sample_weight=None, **kwargs):
    """ROC curve points (fpr, tpr, thresholds), exact; dask inputs as in :func:`roc_auc_score`."""
    import sklearn.metrics as skm

    yt, ys, sw = _small_vectors(y_true, y_score, sample_weight)
    if len(yt) != len(ys):
        raise ValidationError(
            f"y_true has {len(yt)} samples but y_score has {len(ys)}; they must have the same "
            "length."
        )
    return skm.roc_curve(yt, ys, sample_weight=sw, **kwargs)


def _r2_block(yt, yp, w):
    wf = np.ones(len(yt)) if w is None else w
    yt = yt.astype(np.float64)
    return np.array([wf.sum(), wf @ yt, wf @ (yt * yt), wf @ ((yt - yp) ** 2)])


def r2_score(y_true, y_pred, *, sample_weight=None):
    """Coefficient of determination; for dask inputs from per-block moments (one pass)."""
    import sklearn.metrics as skm

    if not _any_dask(y_true, y_pred, sample_weight):
        return skm.r2_score(y_true, y_pred, sample_weight=sample_weight)
    yt, yp, w = _align(
        _check_1d(y_true, "y_true"),
        _check_1d(y_pred, "y_pred"),
        None if sample_weight is None else _check_1d(sample_weight, "sample_weight"),
        names=["y_true", "y_pred", "sample_weight"],
    )
    W, s1, s2, res = np.sum(_block_map(_r2_block, yt, yp, w), axis=0)
    tot = s2 - s1 * s1 / W
    if tot == 0:
        return 1.0 if res == 0 else 0.0
    return float(1.0 - res / tot)


# ----------------------------------------------------------------------------- clustering


class SilhouetteResult(NamedTuple):
    """Silhouette score and how many samples it was computed on."""

    score: float
    n_used: int
    n_samples: int


def _check_cluster_input(X, labels):
    X = check_array(X, ndim=2)
    labels = _check_1d(labels, "labels")
    check_consistent_length(X, labels, y_name="labels")
    return X, labels


def _check_n_labels(n_labels, n):
    if not 1 < n_labels < n:
        raise ValidationError(
            f"labels has {n_labels} distinct value(s) for {n} samples; clustering metrics need "
            f"2 to n_samples - 1 ({n - 1}) clusters."
        )


def silhouette(X, labels, *, sample_size=None, random_state=0, metric="euclidean"):
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

    X, labels = _check_cluster_input(X, labels)
    n = X.shape[0]
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
    Xs = X if idx is None else X[idx]
    ls = labels if idx is None else labels[idx]
    Xs, ls = _small_vectors(Xs, ls)
    _check_n_labels(len(np.unique(ls)), len(ls))
    score = float(skm.silhouette_score(Xs, ls, metric=metric))
    if idx is not None:
        logger.info("silhouette computed on a sample of %d of %d rows", len(ls), n)
    return SilhouetteResult(score, int(len(ls)), int(n))


def silhouette_score(X, labels, *, sample_size=None, random_state=0, metric="euclidean"):
    """Silhouette score as a float; see :func:`silhouette` (which also reports the sample size)."""
    return silhouette(
        X, labels, sample_size=sample_size, random_state=random_state, metric=metric
    ).score


def _cluster_sums_block(X, lab):
    u, inv = np.unique(lab, return_inverse=True)
    Xf = X.astype(np.float64, copy=False)
    sums = np.zeros((len(u), X.shape[1]))
    for i in range(len(u)):
        sums[i] = Xf[inv == i].sum(axis=0)
    counts = np.bincount(inv, minlength=len(u))
    sq = np.bincount(inv, weights=np.einsum("ij,ij->i", Xf, Xf), minlength=len(u))
    return u, sums, counts, sq


def _cluster_sums(X, labels):
    """Per-cluster (labels, sums, counts, sums of squared norms) in one pass."""
    Xd, ld = _align(X, labels, names=["X", "labels"])
    parts = _block_map(_cluster_sums_block, Xd, ld)
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


def calinski_harabasz_score(X, labels):
    """Calinski-Harabasz index; exact for dask inputs via one pass of per-cluster sums.

    See Also
    --------
    sklearn.metrics.calinski_harabasz_score
    """
    import sklearn.metrics as skm

    X, labels = _check_cluster_input(X, labels)
    if not _any_dask(X, labels):
        _check_n_labels(len(np.unique(labels)), X.shape[0])
        return float(skm.calinski_harabasz_score(X, labels))
    u, sums, counts, sq = _cluster_sums(X, labels)
    n, k = int(counts.sum()), len(u)
    _check_n_labels(k, n)
    centroids = sums / counts[:, None]
    mean = sums.sum(axis=0) / n
    extra = float((counts * ((centroids - mean) ** 2).sum(axis=1)).sum())
    intra = float((sq - counts * (centroids**2).sum(axis=1)).sum())
    return float(1.0 if intra == 0.0 else extra * (n - k) / (intra * (k - 1.0)))


def _intra_block(X, lab, u, centroids):
    i = np.searchsorted(u, lab)
    d = np.sqrt(((X.astype(np.float64, copy=False) - centroids[i]) ** 2).sum(axis=1))
    return np.bincount(i, weights=d, minlength=len(u))


def davies_bouldin_score(X, labels):
    """Davies-Bouldin index; exact for dask inputs in two passes (centroids, distances).

    See Also
    --------
    sklearn.metrics.davies_bouldin_score
    """
    import sklearn.metrics as skm
    from sklearn.metrics import pairwise_distances

    X, labels = _check_cluster_input(X, labels)
    if not _any_dask(X, labels):
        _check_n_labels(len(np.unique(labels)), X.shape[0])
        return float(skm.davies_bouldin_score(X, labels))
    u, sums, counts, _ = _cluster_sums(X, labels)
    _check_n_labels(len(u), int(counts.sum()))
    centroids = sums / counts[:, None]
    Xd, ld = _align(X, labels, names=["X", "labels"])
    intra = np.sum(_block_map(_intra_block, Xd, ld, u=u, centroids=centroids), axis=0) / counts
    cd = pairwise_distances(centroids)
    if np.allclose(intra, 0) or np.allclose(cd, 0):
        return 0.0
    cd[cd == 0] = np.inf
    combined = (intra[:, None] + intra) / cd
    return float(np.mean(np.max(combined, axis=1)))


def _contingency(labels_true, labels_pred):
    if _any_dask(labels_true, labels_pred):
        return _pair_table(labels_true, labels_pred)[2]
    from sklearn.metrics.cluster import contingency_matrix

    return contingency_matrix(labels_true, labels_pred)


def adjusted_rand_score(labels_true, labels_pred):
    """Adjusted Rand index; dask inputs via the blockwise contingency table.

    See Also
    --------
    sklearn.metrics.adjusted_rand_score
    """
    import sklearn.metrics as skm

    labels_true = _check_1d(labels_true, "labels_true")
    labels_pred = _check_1d(labels_pred, "labels_pred")
    if not _any_dask(labels_true, labels_pred):
        if len(labels_true) != len(labels_pred):
            raise ValidationError(
                f"labels_true has {len(labels_true)} samples but labels_pred has "
                f"{len(labels_pred)}; they must have the same length."
            )
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
