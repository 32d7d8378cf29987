"""dasktrain.metrics: numpy and dask inputs give scikit-learn's results."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import sklearn.metrics as skm

from dasktrain import metrics
from dasktrain.exceptions import ValidationError
from dasktrain.testing import make_blobs


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    yt = rng.integers(0, 3, 500)
    yp = np.where(rng.random(500) < 0.7, yt, rng.integers(0, 3, 500))
    return yt, yp, rng.random(500)


def _d(a, chunks=97):
    return da.from_array(a, chunks=chunks if a.ndim == 1 else (chunks,) + a.shape[1:])


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("accuracy_score", {}),
        ("accuracy_score", {"normalize": False}),
        ("balanced_accuracy_score", {}),
        ("balanced_accuracy_score", {"adjusted": True}),
        ("precision_score", {"average": "macro"}),
        ("recall_score", {"average": None}),
        ("f1_score", {"average": "weighted"}),
        ("f1_score", {"average": "micro"}),
        ("confusion_matrix", {}),
        ("confusion_matrix", {"normalize": "true"}),
        ("precision_recall_fscore_support", {}),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_classification_equal_to_sklearn(name, kwargs, weighted, labels):
    yt, yp, w = labels
    sw = w if weighted else None
    ref = getattr(skm, name)(yt, yp, sample_weight=sw, **kwargs)
    on_numpy = getattr(metrics, name)(yt, yp, sample_weight=sw, **kwargs)
    on_dask = getattr(metrics, name)(
        _d(yt), _d(yp), sample_weight=None if sw is None else _d(sw), **kwargs
    )
    mixed = getattr(metrics, name)(yt, _d(yp, 150), sample_weight=sw, **kwargs)
    for got in (on_numpy, on_dask, mixed):
        if isinstance(ref, tuple):
            for a, b in zip(got, ref):
                np.testing.assert_allclose(a, b, rtol=1e-12)
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-12)
            assert np.asarray(got).dtype == np.asarray(ref).dtype


def test_binary_and_string_labels():
    rng = np.random.default_rng(1)
    yt = np.array(["no", "yes"])[rng.integers(0, 2, 300)]
    yp = np.where(rng.random(300) < 0.8, yt, "no")
    for name in ("f1_score", "precision_score", "recall_score"):
        ref = getattr(skm, name)(yt, yp, pos_label="yes")
        assert getattr(metrics, name)(_d(yt), _d(yp), pos_label="yes") == ref


def test_confusion_matrix_is_a_sum_of_block_tables(labels):
    # Without a cluster (sync scheduler) and with uneven blocks, one of which lacks a class.
    yt, yp, _ = labels
    yt = yt.copy()
    yt[:97][yt[:97] == 2] = 0
    with dask.config.set(scheduler="sync"):
        cm = metrics.confusion_matrix(_d(yt), _d(yp))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(yt, yp))


def test_roc_exact(labels, as_default):
    yt, _, score = labels
    yb = (yt == 1).astype(int)
    assert metrics.roc_auc_score(_d(yb), _d(score)) == skm.roc_auc_score(yb, score)
    for a, b in zip(metrics.roc_curve(_d(yb), _d(score)), skm.roc_curve(yb, score)):
        np.testing.assert_array_equal(a, b)
    proba = np.random.default_rng(0).dirichlet([1, 1, 1], 500)
    assert metrics.roc_auc_score(_d(yt), _d(proba), multi_class="ovr") == skm.roc_auc_score(
        yt, proba, multi_class="ovr"
    )


def test_r2(labels):
    _, _, y = labels
    pred = y + np.random.default_rng(2).normal(0, 0.1, len(y))
    assert metrics.r2_score(_d(y), _d(pred)) == pytest.approx(skm.r2_score(y, pred), rel=1e-12)


@pytest.fixture(scope="module")
def clusters():
    X, y = make_blobs(600, 4, centers=3, random_state=3)
    return X, y


@pytest.mark.parametrize("name", ["calinski_harabasz_score", "davies_bouldin_score"])
def test_cluster_metrics_equal_to_sklearn(name, clusters, as_default):
    X, y = clusters
    ref = getattr(skm, name)(X, y)
    assert getattr(metrics, name)(X, y) == ref
    assert getattr(metrics, name)(_d(X, 128), _d(y, 128)) == pytest.approx(ref, rel=1e-9)


def test_adjusted_rand(clusters):
    _, y = clusters
    pred = np.where(np.arange(len(y)) % 7 == 0, (y + 1) % 3, y)
    ref = skm.adjusted_rand_score(y, pred)
    assert metrics.adjusted_rand_score(y, pred) == ref
    assert metrics.adjusted_rand_score(_d(y), _d(pred)) == pytest.approx(ref, rel=1e-12)


def test_silhouette_exact_below_threshold_and_sampled_above(clusters):
    X, y = clusters
    res = metrics.silhouette(X, y)
    assert res.n_used == 600 and res.n_samples == 600
    assert res.score == skm.silhouette_score(X, y)
    with dask.config.set({"dasktrain.metrics.silhouette-sample-size": 200}):
        a = metrics.silhouette(X, y, random_state=1)
        b = metrics.silhouette(_d(X, 128), _d(y, 128), random_state=1)
        assert metrics.silhouette_score(X, y, random_state=1) == a.score
    assert a.n_used == b.n_used == 200 and a.n_samples == 600
    assert a.score == b.score  # the same rows on both engines
    assert a.score == pytest.approx(res.score, abs=0.05)
    assert metrics.silhouette(X, y, sample_size=100).n_used == 100


# ---------------------------------------------------------------------------- bad input


def test_wrong_length(labels):
    yt, yp, _ = labels
    with pytest.raises(ValidationError, match="499"):
        metrics.accuracy_score(yt, yp[:-1])
    with pytest.raises(ValidationError, match="499"):
        metrics.confusion_matrix(_d(yt), _d(yp[:-1]))
    with pytest.raises(ValidationError, match="499"):
        metrics.roc_auc_score(_d(yt), _d(yp[:-1].astype(float)))
    X, y = make_blobs(100, 2)
    with pytest.raises(ValidationError, match="99"):
        metrics.calinski_harabasz_score(X, y[:-1])


def test_one_cluster_and_nan(clusters):
    X, y = clusters
    with pytest.raises(ValidationError, match="1 distinct value"):
        metrics.davies_bouldin_score(_d(X, 128), _d(np.zeros(600, int), 128))
    with pytest.raises(ValidationError, match="1 distinct value"):
        metrics.silhouette_score(X, np.zeros(600, int))
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        metrics.calinski_harabasz_score(_d(Xn, 128), _d(y, 128))


def test_unknown_chunks(clusters):
    X, y = clusters
    yd = _d(y, 100)
    yd = yd[yd >= 0]
    with pytest.raises(ValidationError, match=r"compute_chunk_sizes\(\)"):
        metrics.accuracy_score(yd, y)
