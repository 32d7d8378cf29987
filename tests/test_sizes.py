"""The sizes users have: realistic feature widths, the lazy image chain, memory-limited workers.

Few rows, many columns: every cell here runs at the width the chest X-ray study works with
(512-d ResNet features, 8100-d HOG, 8192-d flattened VGG19 features) on a handful of rows, so
the whole matrix stays within CI's time while a size cliff (the scheduler crash that a large
keyword argument to ``client.map`` caused) fails it.
"""

from __future__ import annotations

import os
import time

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import dasktrain
from dasktrain._dask import BlockRunner
from dasktrain.exceptions import InsufficientMemoryError
from dasktrain.models import (
    GaussianNB,
    KMeans,
    LogisticRegression,
    MLPClassifier,
    XGBClassifier,
    cross_validate,
)

ROWS_PER_BLOCK = 60
N_BLOCKS = 4
WIDTHS = [64, 512, 4096, 8192]
KS = [2, 8, 16]


# --------------------------------------------------------------------------------------------
# data: well-separated blobs, generated block by block so the "lazy" input is a real graph
# (computed on the workers), not a numpy array embedded in it
# --------------------------------------------------------------------------------------------
def _centers(k, d):
    return np.random.default_rng([k, d]).normal(0.0, 10.0, size=(k, d)).astype(np.float32)


def _blob_block(centers, seed, rows, block_info=None):
    i = block_info[None]["chunk-location"][0] if block_info else 0
    k, d = centers.shape
    labels = (np.arange(rows) + i * rows) % k
    noise = np.random.default_rng([seed, i]).standard_normal((rows, d), dtype=np.float32)
    return centers[labels] + noise


def _blobs_numpy(k, d, seed=0):
    C = _centers(k, d)
    blocks = [
        _blob_block(C, seed, ROWS_PER_BLOCK, {None: {"chunk-location": (i, 0)}})
        for i in range(N_BLOCKS)
    ]
    y = np.arange(N_BLOCKS * ROWS_PER_BLOCK) % k
    return np.concatenate(blocks), y


def _blobs_lazy(k, d, seed=0):
    C = _centers(k, d)
    return da.map_blocks(
        _blob_block,
        C,
        seed,
        ROWS_PER_BLOCK,
        chunks=((ROWS_PER_BLOCK,) * N_BLOCKS, (d,)),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
    )


def _key_name(key):
    """The name part of a task key: ``"x-<token>"`` or ``("x-<token>", i, j)``."""
    return key[0] if isinstance(key, tuple) else key


def _true_inertia(X, y):
    return float(sum(((X[y == j] - X[y == j].mean(axis=0)) ** 2).sum() for j in np.unique(y)))


@pytest.fixture(scope="module")
def blobs():
    cache = {}

    def get(k, d):
        if (k, d) not in cache:
            X, y = _blobs_numpy(k, d)
            cache[k, d] = (X, y, _true_inertia(X.astype(np.float64), y))
        return cache[k, d]

    return get


# --------------------------------------------------------------------------------------------
# 1. no size cliff: the issue's repro, and a failure on the cluster raises instead of hanging
# --------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_issue_repro_kmeans_512d_then_the_client_still_works(own_client):
    # Before the fix the first fit killed the scheduler's state ("AssertionError: <TaskState
    # 'C' processing>": the centres, a keyword of client.map, became a graph node keyed 'C')
    # and the second fit hung forever.
    X = own_client.persist(da.random.random((2000, 512), chunks=(500, 512)))
    with own_client.as_current():
        first = dasktrain.KMeans(n_clusters=8, random_state=0).fit(X)
        second = dasktrain.KMeans(n_clusters=8, random_state=1).fit(X)
    assert first.cluster_centers_.shape == second.cluster_centers_.shape == (8, 512)
    assert np.isfinite(first.inertia_) and np.isfinite(second.inertia_)
    assert own_client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3


def _fail_on_block(X, *, block_index, row_offset, bad, C):
    if block_index == bad:
        raise ValueError(f"block {block_index} is bad (C has shape {C.shape})")
    return float(X.sum() + C[0, 0])


@pytest.mark.timeout(120)
def test_a_failing_block_task_raises_promptly_and_the_client_recovers(client):
    X = client.persist(da.ones((400, 64), chunks=(100, 64)))
    runner = BlockRunner([X], client=client)
    big = np.ones((64, 8192))  # 4 MB: scattered, not sent with every task
    for _attempt in range(2):  # twice: a second call must neither hang nor see the first's keys
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="block 2 is bad"):
            runner.map(_fail_on_block, name="test-fail", bad=2, C=big)
        assert time.perf_counter() - t0 < 30
    assert runner.map(_fail_on_block, bad=-1, C=big) == [6401.0] * 4
    small = np.ones((2, 2))  # small keywords are bound to the function, not scattered
    assert runner.map(_fail_on_block, bad=-1, C=small) == [6401.0] * 4


@pytest.mark.timeout(120)
def test_kmeans_on_a_chunk_that_fails_raises_the_chunks_error(as_default):
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise OSError("chunk 1 could not be read")
        return block

    X = da.ones((300, 512), chunks=(100, 512)).map_blocks(boom, dtype=np.float64)
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="chunk 1 could not be read"):
        KMeans(8, random_state=0).fit(X)
    assert time.perf_counter() - t0 < 60
    # The same client goes on working.
    good = da.from_array(np.random.default_rng(0).random((300, 512)), chunks=(100, 512))
    assert KMeans(2, random_state=0).fit(good).cluster_centers_.shape == (2, 512)


def test_task_keys_read_well_on_the_dashboard(blobs, client):
    from distributed import get_task_stream

    X, _, _ = blobs(8, 512)
    Xd = client.persist(da.from_array(X, chunks=(ROWS_PER_BLOCK, 512)))
    import dask

    # Passes through the scheduler (a direct pass leaves no task behind; its one task per
    # worker is named kmeans-direct-<uuid>-<i>, tests/test_dask.py).
    with dask.config.set({"dasktrain.direct-passes": False}), get_task_stream(client) as ts:
        KMeans(8, random_state=0, client=client).fit(Xd)
    names = [_key_name(t["key"]) for t in ts.data]
    prefixes = {n.rsplit("-", 2)[0] for n in names if n.startswith("kmeans-")}
    assert {"kmeans-stats", "kmeans-init-sample", "kmeans-lloyd"} <= prefixes
    assert not any("call-block" in n or "_call_block" in n for n in names)


# --------------------------------------------------------------------------------------------
# 2. KMeans at realistic widths: k x d x engine x (persisted, lazy) dask input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", WIDTHS)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("data", ["persisted", "lazy"])
@pytest.mark.parametrize("engine", ["dask", "local"])
@pytest.mark.timeout(120)
def test_kmeans_matrix(engine, data, k, d, blobs, client):
    X, y, inertia = blobs(k, d)
    Xd = _blobs_lazy(k, d)
    if data == "persisted":
        Xd = client.persist(Xd)
    km = KMeans(k, random_state=0, engine=engine, client=client).fit(Xd)
    assert km.engine_ == engine and km.cluster_centers_.shape == (k, d)
    assert isinstance(km.labels_, da.Array)  # output type follows the input
    labels = client.compute(km.labels_).result()
    # The blobs are far apart: both engines find exactly the generating clusters.
    assert adjusted_rand_score(y, labels) == 1.0
    assert km.inertia_ == pytest.approx(inertia, rel=1e-4)
    pred = client.compute(km.predict(Xd)).result()
    np.testing.assert_array_equal(pred, labels)


# --------------------------------------------------------------------------------------------
# 2. classifiers and cross-validation on 8192-d features (VGG19 at 128x128, flattened)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wide():
    """160 rows x 8192 float32 features, two classes that differ on 40 of the columns."""
    rng = np.random.default_rng(0)
    n, d = 160, 8192
    y = np.arange(n) % 2
    X = rng.standard_normal((n, d), dtype=np.float32)
    X[y == 1, :40] += 1.0
    return X, y


def _wide_dask(client, X, y):
    Xd = client.persist(da.from_array(X, chunks=(40, X.shape[1])))
    yd = client.persist(da.from_array(y, chunks=40))
    return Xd, yd


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda e: LogisticRegression(max_iter=300, engine=e), id="logreg"),
        pytest.param(lambda e: GaussianNB(engine=e), id="naive_bayes"),
        pytest.param(
            lambda e: MLPClassifier((32,), max_iter=40, random_state=0, engine=e), id="mlp"
        ),
    ],
)
@pytest.mark.timeout(120)
def test_classic_models_at_8192_features_both_engines(make, wide, as_default):
    client = as_default
    import warnings

    X, y = wide
    Xd, yd = _wide_dask(client, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short MLP
        local = make("local").fit(X, y)
        dask_ = make("dask").fit(Xd, yd)
    assert dask_.engine_ == "dask" and dask_.n_features_in_ == 8192
    # Same scikit-learn model on the same rows: the same predictions.
    pred = client.compute(dask_.predict(Xd)).result()
    np.testing.assert_array_equal(pred, local.predict(X))
    assert (pred == y).mean() > 0.9


@pytest.mark.timeout(180)
def test_xgboost_at_8192_features_both_engines(wide, client):
    X, y = wide
    Xd, yd = _wide_dask(client, X, y)
    local = XGBClassifier(n_estimators=10, max_depth=3, engine="local", client=client).fit(X, y)
    dask_ = XGBClassifier(n_estimators=10, max_depth=3, client=client).fit(Xd, yd)
    assert dask_.engine_ == "dask" and dask_.n_features_in_ == 8192
    proba = client.compute(dask_.predict_proba(Xd)).result()
    assert proba.shape == (len(X), 2)
    assert abs(local.score(X, y) - (proba.argmax(axis=1) == y).mean()) <= 0.05
    assert local.score(X, y) > 0.9


@pytest.mark.parametrize("engine", ["local", "dask"])
@pytest.mark.timeout(120)
def test_cross_validate_at_8192_features(engine, wide, client):
    from sklearn.model_selection import cross_validate as sk_cross_validate

    X, y = wide
    est = LogisticRegression(max_iter=300, engine="local")
    Xin = _wide_dask(client, X, y)[0] if engine == "dask" else X
    res = cross_validate(est, Xin, y, cv=3, engine=engine, client=client)
    ref = sk_cross_validate(est, X, y, cv=3)
    np.testing.assert_array_equal(res["test_score"], ref["test_score"])


# --------------------------------------------------------------------------------------------
# 2. the lazy image chain, with no persist() by the user, on memory-limited workers
# --------------------------------------------------------------------------------------------
N_PER_CLASS = 48
CHUNK = 16


@pytest.fixture(scope="module")
def xray_folder(tmp_path_factory):
    from dasktrain.datasets import make_xray_like

    root = tmp_path_factory.mktemp("sizes") / "xray"
    return make_xray_like(root, n_per_class=N_PER_CLASS, size=128, n_jobs=1) / "train"


@pytest.fixture(scope="module")
def small_memory_client():
    """2 workers x 1 thread with 1.5 GB each.

    bench_scale runs read -> features -> KMeans on 1 GB workers; here a worker also holds
    torch, resnet18 and xgboost at once (about 770 MiB at rest), and at 1 GB it crossed
    Dask's 80% pause threshold under load: a paused worker stalls xgboost's fit for good.
    """
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="1.5GB",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _extractor(name):
    from dasktrain.features import CNNFeatures, HOGFeatures

    return HOGFeatures() if name == "hog" else CNNFeatures("resnet18", batch_size=16)


@pytest.mark.parametrize("features", ["hog", "resnet18"])
@pytest.mark.parametrize("model", ["kmeans", "xgboost"])
@pytest.mark.timeout(240)
def test_lazy_image_chain_on_memory_limited_workers(
    features, model, xray_folder, small_memory_client
):
    from distributed import get_task_stream
    from distributed.diagnostics import MemorySampler

    from dasktrain.images import read_images

    client = small_memory_client
    pids = client.run(os.getpid)
    ms = MemorySampler()
    with (
        client.as_current(),
        get_task_stream(client) as ts,
        ms.sample("chain", client=client, measure="process"),
    ):
        ds = read_images(xray_folder, size=128, engine="dask", chunk_size=CHUNK)
        F = _extractor(features).fit_transform(ds)
        assert isinstance(F, da.Array)  # nothing computed yet, and nothing persisted by us
        width = F.shape[1]
        if model == "kmeans":
            est = KMeans(n_clusters=8, random_state=0).fit(F)
            out = client.compute(est.labels_).result()
            assert set(np.unique(out)) <= set(range(8)) and len(np.unique(out)) >= 2
        else:
            est = XGBClassifier(n_estimators=10, max_depth=3).fit(F, ds.y)
            assert est.engine_ == "dask"
    assert width == (8100 if features == "hog" else 512)
    assert est.n_features_in_ == width
    # The fit persisted the features once: every chunk of images was decoded exactly once
    # (labels_ above reuses the persisted features, it does not read the files again).
    # (dask fuses the decode into the feature task: its name then holds "read-images")
    reads = [t for t in ts.data if "read-images" in _key_name(t["key"])]
    assert len(reads) == len(ds.X.chunks[0]) == -(-len(ds) // CHUNK)
    # Within the workers' memory limits: no worker was restarted, the cluster stayed under 2 GB.
    assert client.run(os.getpid) == pids
    assert ms.to_pandas()["chain"].max() < 2 * 0.95e9


# --------------------------------------------------------------------------------------------
# 6. VGG19 flattened: the 8192-d features of the chest X-ray study
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["vgg19", "resnet18", "smallcnn"])
@pytest.mark.parametrize("hw", [(32, 32), (45, 77)])
def test_flattened_cnn_features_have_the_announced_width(backbone, hw):
    from dasktrain.features import CNNFeatures

    X = np.random.default_rng(0).random((2, *hw, 1), dtype=np.float32)
    ext = CNNFeatures(backbone, pool="flatten", engine="local").fit(X)
    F = ext.transform(X)
    assert F.shape == (2, ext.n_features_out_)
    pooled = CNNFeatures(backbone, pool="avg", engine="local").fit(X)
    assert ext.n_features_out_ % pooled.n_features_out_ == 0


@pytest.mark.timeout(120)
def test_vgg19_flattened_on_128x128_is_8192_wide_on_both_engines(client):
    from dasktrain.features import CNNFeatures

    X = np.random.default_rng(0).random((2, 128, 128, 1), dtype=np.float32)
    local = CNNFeatures("vgg19", pool="flatten", engine="local").fit_transform(X)
    lazy = CNNFeatures("vgg19", pool="flatten").transform(da.from_array(X, chunks=(1, 128, 128, 1)))
    assert local.shape == (2, 8192) and lazy.shape == (2, 8192)
    np.testing.assert_allclose(client.compute(lazy).result(), local, rtol=1e-4, atol=1e-5)


def test_unknown_pool_names_the_choices():
    from dasktrain.exceptions import ValidationError
    from dasktrain.features import CNNFeatures

    with pytest.raises(ValidationError, match="flatten"):
        CNNFeatures("smallcnn", pool="sum").fit(np.zeros((1, 16, 16, 1), np.float32))


# --------------------------------------------------------------------------------------------
# 4. the local engine says it will not fit before it starts
# --------------------------------------------------------------------------------------------
def test_local_read_that_cannot_fit_refuses_before_decoding(xray_folder):
    import psutil

    from dasktrain.images import read_images

    n = 2 * (N_PER_CLASS - round(N_PER_CLASS * 0.25))  # images in train/
    available = psutil.virtual_memory().available
    side = int(np.sqrt(available / (n * 4))) + 64  # n float32 images of side^2 > available
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    with pytest.raises(InsufficientMemoryError, match="engine='dask'") as err:
        read_images(xray_folder, size=side, engine="local")
    assert time.perf_counter() - t0 < 30  # refused up front, not after decoding
    msg = str(err.value)
    assert f"{n} images of {side}x{side}x1" in msg and "GiB is available" in msg
    assert isinstance(err.value, MemoryError) and isinstance(err.value, dasktrain.DasktrainError)
    assert psutil.Process().memory_info().rss - rss0 < 500e6  # nothing was allocated
    # The suggested engine reads the same request lazily, chunk by chunk.
    lazy = read_images(xray_folder, size=side, engine="dask", chunk_size=1)
    assert lazy.X.shape == (n, side, side, 1) and lazy.X.chunks[0] == (1,) * n
