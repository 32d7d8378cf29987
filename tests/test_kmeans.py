"""KMeans on both engines: parity with scikit-learn, dask-ml delegation, bad input."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.utils.estimator_checks import parametrize_with_checks

from dasktrain.exceptions import ValidationError
from dasktrain.models import KMeans
from dasktrain.testing import make_blobs, to_numpy


# Both engines (issue 26, item 4): all-zero weights raised nothing on the dask engine.
@parametrize_with_checks(
    [KMeans(n_clusters=3, engine=engine, random_state=0) for engine in ("local", "dask")],
    expected_failed_checks=lambda est: {
        # Same as scikit-learn's own KMeans: weights change the random draws of the init
        # (k-means++ locally, k-means|| on dask), so weighted and repeated-row fits start from
        # different centers.
        "check_sample_weight_equivalence_on_dense_data": "the init is random",
    },
)
def test_sklearn_estimator_checks(estimator, check, request):
    if estimator.engine == "dask":
        request.getfixturevalue("as_default")
    check(estimator)


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(3000, 5, centers=4, random_state=1)


def test_engines_agree(blobs, as_default):
    X, _ = blobs
    Xd = da.from_array(X, chunks=(700, 5))
    local = KMeans(4, random_state=0, engine="local").fit(X)
    dask_ = KMeans(4, random_state=0).fit(Xd)
    assert dask_.engine_ == "dask" and local.engine_ == "local"
    assert dask_.inertia_ == pytest.approx(local.inertia_, rel=1e-3)
    sk = SKKMeans(4, random_state=0, n_init=1).fit(X)
    assert local.inertia_ == pytest.approx(sk.inertia_, rel=1e-12)
    # Same clusters up to their order.
    np.testing.assert_allclose(
        np.sort(dask_.cluster_centers_, axis=0), np.sort(local.cluster_centers_, axis=0), rtol=1e-6
    )
    assert isinstance(dask_.labels_, da.Array) and dask_.labels_.chunks == Xd.chunks[:1]
    labels = dask_.labels_.compute()
    np.testing.assert_array_equal(labels, dask_.predict(X))
    pred = dask_.predict(Xd)
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), labels)
    tr = dask_.transform(Xd)
    assert tr.shape == (3000, 4)
    np.testing.assert_allclose(tr.compute(), dask_.transform(X))
    assert dask_.score(Xd) == pytest.approx(-dask_.inertia_, rel=1e-9)
    assert 1 <= dask_.n_iter_ <= 300


def test_forced_dask_engine_on_numpy_gives_numpy(blobs, as_default):
    X, _ = blobs
    km = KMeans(4, random_state=0, engine="dask").fit(X)
    assert km.engine_ == "dask"
    assert isinstance(km.labels_, np.ndarray)
    assert isinstance(km.predict(X), np.ndarray)


def test_dask_engine_without_distributed_client(blobs):
    # The session client is not the default one here: the local dask scheduler is used.
    X, _ = blobs
    km = KMeans(4, random_state=0).fit(da.from_array(X, chunks=1000))
    local = KMeans(4, random_state=0, engine="local").fit(X)
    assert km.inertia_ == pytest.approx(local.inertia_, rel=1e-3)


def test_sample_weight_both_engines(blobs, as_default):
    X, _ = blobs
    w = np.random.default_rng(0).integers(1, 4, len(X)).astype(float)
    local = KMeans(4, random_state=0, engine="local").fit(X, sample_weight=w)
    dask_ = KMeans(4, random_state=0).fit(
        da.from_array(X, chunks=1000), sample_weight=da.from_array(w, chunks=500)
    )
    assert dask_.inertia_ == pytest.approx(local.inertia_, rel=1e-3)
    # Weighted inertia really uses the weights: it is larger than the unweighted one.
    assert dask_.inertia_ > KMeans(4, random_state=0, engine="local").fit(X).inertia_


def test_random_init_and_explicit_centers(blobs, as_default):
    X, _ = blobs
    Xd = da.from_array(X, chunks=1000)
    ref = KMeans(4, random_state=0, engine="local").fit(X)
    rnd = KMeans(4, init="random", n_init=3, random_state=0).fit(Xd)
    assert rnd.inertia_ == pytest.approx(ref.inertia_, rel=1e-3)
    fixed = KMeans(4, init=ref.cluster_centers_, n_init=1).fit(Xd)
    np.testing.assert_allclose(fixed.cluster_centers_, ref.cluster_centers_, rtol=1e-6)


def test_dask_ml_algorithm(blobs, as_default):
    X, _ = blobs
    # Small and few k-means|| rounds: dask-ml's init is slow even on tiny data.
    Xd = da.from_array(X[:400], chunks=200)
    km = KMeans(4, algorithm="dask-ml", random_state=0, init_max_iter=2).fit(Xd)
    ref = KMeans(4, random_state=0, engine="local").fit(X[:400])
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-3)
    assert isinstance(km.labels_, da.Array)


def test_pickle_drops_client(blobs, client):
    X, _ = blobs
    km = KMeans(4, random_state=0, engine="local", client=client).fit(X)
    back = pickle.loads(pickle.dumps(km))
    assert back.client is None and km.client is client
    np.testing.assert_array_equal(back.predict(X), km.predict(X))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("engine", ["local", "dask"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_refused(engine, bad, as_default):
    X, _ = make_blobs(200, 3)
    X[17, 1] = bad
    Xin = da.from_array(X, chunks=50) if engine == "dask" else X
    with pytest.raises(ValidationError, match="(?i)nan|infinit"):
        KMeans(3, engine=engine).fit(Xin)


def test_n_clusters_larger_than_samples():
    X, _ = make_blobs(5, 2)
    with pytest.raises(ValidationError, match="n_clusters=8 is larger than the number of samples"):
        KMeans(8).fit(X)
    with pytest.raises(ValidationError, match="n_clusters=8 is larger"):
        KMeans(8).fit(da.from_array(X, chunks=2))


def test_unknown_chunks():
    X, _ = make_blobs(100, 3)
    Xd = da.from_array(X, chunks=25)
    Xd = Xd[Xd[:, 0] > -1e9]
    with pytest.raises(ValidationError, match=r"compute_chunk_sizes\(\)"):
        KMeans(3).fit(Xd)


def test_unknown_engine_and_algorithm():
    X, _ = make_blobs(100, 3)
    with pytest.raises(ValidationError, match="engine='spark' is not a known engine"):
        KMeans(3, engine="spark").fit(X)
    with pytest.raises(ValidationError, match="algorithm='elkan2'"):
        KMeans(3, algorithm="elkan2").fit(X)
    with pytest.raises(ValidationError, match="init='kmeans'"):
        KMeans(3, init="kmeans").fit(X)


def test_dask_ml_kmeans_plus_plus_refused():
    X, _ = make_blobs(100, 3, chunks=50)
    with pytest.raises(ValidationError, match="k-means\\+\\+.*dask-ml.*broken"):
        KMeans(3, algorithm="dask-ml", init="k-means++").fit(X)


def test_sample_weight_wrong_length_and_negative():
    X, _ = make_blobs(100, 3)
    with pytest.raises(ValidationError, match="sample_weight has 99"):
        KMeans(3).fit(X, sample_weight=np.ones(99))
    with pytest.raises(ValidationError, match="negative"):
        KMeans(3).fit(X, sample_weight=-np.ones(100))


def test_predict_wrong_features():
    X, _ = make_blobs(100, 3)
    km = KMeans(3, random_state=0).fit(X)
    with pytest.raises(ValidationError, match="X has 2 features, but KMeans is expecting 3"):
        km.predict(X[:, :2])
    assert to_numpy(km.predict(X)).shape == (100,)


def test_explicit_client_that_is_not_the_default(blobs, client):
    X, _ = blobs
    Xd = client.persist(da.from_array(X, chunks=(1000, 5)))
    km = KMeans(4, random_state=0, client=client).fit(Xd)
    local = KMeans(4, random_state=0, engine="local").fit(X)
    assert km.inertia_ == pytest.approx(local.inertia_, rel=1e-3)


def test_empty_chunks_are_fine(as_default):
    # Regression: an empty row chunk (common after boolean filtering) raised IndexError.
    X, _ = make_blobs(300, 2, 3, random_state=0)
    Xd = da.from_array(X, chunks=((150, 0, 150), (2,)))
    km = KMeans(3, engine="dask", random_state=0).fit(Xd)
    ref = SKKMeans(3, random_state=0, n_init=3).fit(X)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-3)
    first_empty = da.from_array(X, chunks=((0, 300), (2,)))
    assert KMeans(3, engine="dask", random_state=0).fit(first_empty).inertia_ == pytest.approx(
        ref.inertia_, rel=1e-3
    )


def test_refit_on_dask_replaces_the_local_model(blobs, as_default):
    # Regression: the scikit-learn model of an earlier local fit kept answering predict().
    X, _ = blobs
    km = KMeans(2, engine="local", random_state=0).fit(X)
    km.set_params(
        engine="dask", init=np.array([[0.0] * X.shape[1], [1.0] * X.shape[1]]), n_init=1
    ).fit(X)
    np.testing.assert_array_equal(km.predict(X), km.labels_)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_pass_in_sklearns_kernel_gives_the_sums_of_the_slow_way(dtype, weighted):
    # One Lloyd pass over a block: scikit-learn's kernel (labels and sums together) against
    # the labels and one-hot sums it replaced; a block where a cluster has no member takes
    # the slow way (the kernel would move that center to a far point).
    from dasktrain.models import _kmeans_blocks as kd

    rng = np.random.default_rng(0)
    X = rng.normal(size=(25_000, 20)).astype(dtype)
    w = rng.uniform(0.5, 2.0, len(X)) if weighted else None
    C = X[rng.choice(len(X), 8, replace=False)].astype(np.float64)
    fused = kd._lloyd_sklearn(X, w, C)
    assert fused is not None
    labels = kd._nearest(X, w, C)
    slow_counts = np.bincount(labels, weights=w, minlength=8)
    slow_sums = kd._member_sums(X, w, labels, 8)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(fused[1], slow_counts, rtol=rtol)
    np.testing.assert_allclose(fused[0], slow_sums, rtol=rtol, atol=rtol * np.abs(slow_sums).max())
    far = np.vstack([C[:7], np.full((1, 20), 1e6)])  # nothing is nearest to it
    assert kd._lloyd_sklearn(X, w, far) is None
    sums, counts, _ = kd.assign_block(X, w, block_index=0, row_offset=0, C=far)
    assert (
        counts[7] == 0
        and np.all(sums[7] == 0)
        and counts.sum() == pytest.approx(len(X) if w is None else w.sum())
    )
