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
local dask scheduler. Each reduction's tasks are named for the dashboard
(``metrics-pair-counts``, ``metrics-r2-moments``, ``metrics-cluster-sums``,
``metrics-cluster-spread``).
"""

from ._classification import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from ._clustering import (
    SilhouetteResult,
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette,
    silhouette_score,
)

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
