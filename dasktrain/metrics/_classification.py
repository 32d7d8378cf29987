"""Classification and regression metrics; dask inputs reduced block by block.

Count-based metrics need nothing but the table of (true label, predicted label) pair counts:
each block returns its own table (task ``metrics-pair-counts``), the client adds them up, and
scikit-learn then runs on the *compressed* problem. ROC metrics compute only the label and
score vectors; R^2 adds per-block moments (task ``metrics-r2-moments``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .._dask import align_rows, map_row_blocks
from ._common import any_dask, check_1d, check_same_length, small_vectors

if TYPE_CHECKING:
    from .._typing import ArrayLike, NDArray

    #: (true labels, predicted labels, counts, summed weights or None)
    PairTable = tuple[NDArray, NDArray, NDArray, NDArray | None]

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
]


def _pair_block(yt: NDArray, yp: NDArray, w: NDArray | None) -> PairTable:
    ut, it = np.unique(yt, return_inverse=True)
    up, ip = np.unique(yp, return_inverse=True)
    flat = it.ravel() * len(up) + ip.ravel()
    counts = np.bincount(flat, minlength=len(ut) * len(up)).reshape(len(ut), len(up))
    weights = None
    if w is not None:
        weights = np.bincount(flat, weights=w, minlength=len(ut) * len(up)).reshape(counts.shape)
    return ut, up, counts, weights


def _aligned(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None) -> list[Any]:
    """The 1-d label (and weight) vectors as dask arrays with the same row chunks."""
    return align_rows(
        check_1d(y_true, "y_true"),
        check_1d(y_pred, "y_pred"),
        None if sample_weight is None else check_1d(sample_weight, "sample_weight"),
        names=["y_true", "y_pred", "sample_weight"],
    )


def pair_table(
    y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
) -> PairTable:
    """Pair-count table of two dask label vectors: (true labels, pred labels, counts, weights)."""
    yt, yp, w = _aligned(y_true, y_pred, sample_weight)
    parts = map_row_blocks(_pair_block, yt, yp, w, name="metrics-pair-counts")
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


def _compressed(
    y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
) -> tuple[NDArray, NDArray, NDArray]:
    """One sample per non-empty (true, pred) cell, weighted by its count or summed weight."""
    ut, up, counts, weights = pair_table(y_true, y_pred, sample_weight)
    i, j = np.nonzero(counts)
    sw = (counts if weights is None else weights)[i, j].astype(np.float64)
    return ut[i], up[j], sw


def _classification(
    name: str,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None,
    **kwargs: Any,
) -> Any:
    import sklearn.metrics as skm

    fn = getattr(skm, name)
    if not any_dask(y_true, y_pred, sample_weight):
        y_true, y_pred = check_1d(y_true, "y_true"), check_1d(y_pred, "y_pred")
        check_same_length(y_true, y_pred, "y_true", "y_pred")
        return fn(y_true, y_pred, sample_weight=sample_weight, **kwargs)
    yt, yp, sw = _compressed(y_true, y_pred, sample_weight)
    return fn(yt, yp, sample_weight=sw, **kwargs)


def accuracy_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    normalize: bool = True,
    sample_weight: ArrayLike | None = None,
) -> float:
    """Accuracy; for dask inputs from the blockwise pair-count table (see module docstring).

    See Also
    --------
    sklearn.metrics.accuracy_score
    """
    return cast(
        "float",
        _classification("accuracy_score", y_true, y_pred, sample_weight, normalize=normalize),
    )


def balanced_accuracy_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    adjusted: bool = False,
) -> float:
    """Balanced accuracy (mean recall per class); dask inputs reduced blockwise.

    See Also
    --------
    sklearn.metrics.balanced_accuracy_score
    """
    return cast(
        "float",
        _classification(
            "balanced_accuracy_score", y_true, y_pred, sample_weight, adjusted=adjusted
        ),
    )


def precision_recall_fscore_support(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None, **kwargs: Any
) -> tuple[Any, Any, Any, Any]:
    """Precision, recall, F-beta and support; keyword arguments as in scikit-learn.

    For dask inputs ``support`` is the (weighted) count from the pair table, equal to
    scikit-learn's.

    See Also
    --------
    sklearn.metrics.precision_recall_fscore_support
    """
    if any_dask(y_true, y_pred, sample_weight) and sample_weight is None:
        # The compressed problem carries counts as weights; support must stay an integer count.
        yt, yp, sw = _compressed(y_true, y_pred)
        import sklearn.metrics as skm

        out = skm.precision_recall_fscore_support(yt, yp, sample_weight=sw, **kwargs)
        if out[3] is not None:
            out = out[:3] + (np.rint(out[3]).astype(np.int64),)
        return cast("tuple[Any, Any, Any, Any]", out)
    return cast(
        "tuple[Any, Any, Any, Any]",
        _classification("precision_recall_fscore_support", y_true, y_pred, sample_weight, **kwargs),
    )


def precision_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None, **kwargs: Any
) -> float | NDArray:
    """Precision; see :func:`sklearn.metrics.precision_score` for the keyword arguments."""
    return cast(
        "float | NDArray",
        _classification("precision_score", y_true, y_pred, sample_weight, **kwargs),
    )


def recall_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None, **kwargs: Any
) -> float | NDArray:
    """Recall; see :func:`sklearn.metrics.recall_score` for the keyword arguments."""
    return cast(
        "float | NDArray", _classification("recall_score", y_true, y_pred, sample_weight, **kwargs)
    )


def f1_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None, **kwargs: Any
) -> float | NDArray:
    """F1; see :func:`sklearn.metrics.f1_score` for the keyword arguments."""
    return cast(
        "float | NDArray", _classification("f1_score", y_true, y_pred, sample_weight, **kwargs)
    )


def confusion_matrix(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    normalize: str | None = None,
) -> NDArray:
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

    if not any_dask(y_true, y_pred, sample_weight):
        return cast(
            "NDArray",
            skm.confusion_matrix(
                check_1d(y_true, "y_true"),
                check_1d(y_pred, "y_pred"),
                labels=labels,
                sample_weight=sample_weight,
                normalize=normalize,
            ),
        )
    yt, yp, sw = _compressed(y_true, y_pred, sample_weight)
    cm: NDArray = skm.confusion_matrix(yt, yp, labels=labels, sample_weight=sw, normalize=normalize)
    if sample_weight is None and normalize is None:
        cm = np.rint(cm).astype(np.int64)
    return cm


def roc_auc_score(
    y_true: ArrayLike, y_score: ArrayLike, *, sample_weight: ArrayLike | None = None, **kwargs: Any
) -> float:
    """Area under the ROC curve, exact: for dask inputs only the label and score vectors are
    computed (not X). Keyword arguments as in :func:`sklearn.metrics.roc_auc_score`."""
    import sklearn.metrics as skm

    yt, ys, sw = small_vectors(y_true, y_score, sample_weight)
    check_same_length(yt, ys, "y_true", "y_score")
    return cast("float", skm.roc_auc_score(yt, ys, sample_weight=sw, **kwargs))


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike, *, sample_weight: ArrayLike | None = None, **kwargs: Any
) -> tuple[NDArray, NDArray, NDArray]:
    """ROC curve points (fpr, tpr, thresholds), exact; dask inputs as in :func:`roc_auc_score`."""
    import sklearn.metrics as skm

    yt, ys, sw = small_vectors(y_true, y_score, sample_weight)
    check_same_length(yt, ys, "y_true", "y_score")
    return cast(
        "tuple[NDArray, NDArray, NDArray]", skm.roc_curve(yt, ys, sample_weight=sw, **kwargs)
    )


def _r2_block(yt: NDArray, yp: NDArray, w: NDArray | None) -> NDArray:
    wf = np.ones(len(yt)) if w is None else w
    yt = yt.astype(np.float64)
    return np.array([wf.sum(), wf @ yt, wf @ (yt * yt), wf @ ((yt - yp) ** 2)])


def r2_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None
) -> float:
    """Coefficient of determination; for dask inputs from per-block moments (one pass)."""
    import sklearn.metrics as skm

    if not any_dask(y_true, y_pred, sample_weight):
        return cast("float", skm.r2_score(y_true, y_pred, sample_weight=sample_weight))
    yt, yp, w = _aligned(y_true, y_pred, sample_weight)
    moments = map_row_blocks(_r2_block, yt, yp, w, name="metrics-r2-moments")
    W, s1, s2, res = np.sum(moments, axis=0)
    tot = s2 - s1 * s1 / W
    if tot == 0:
        return 1.0 if res == 0 else 0.0
    return float(1.0 - res / tot)
