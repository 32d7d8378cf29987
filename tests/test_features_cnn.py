"""CNNFeatures on both engines: parity, determinism, per-worker cache, weights files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

import dasktrain._cache  # noqa: E402
from dasktrain.exceptions import ValidationError, WeightsError  # noqa: E402
from dasktrain.features import (  # noqa: E402
    CNNFeatures,
    _backbones,  # noqa: E402
)
from dasktrain.testing import assert_engines_equal  # noqa: E402


class FakeImageSet:
    """Duck-typed ImageSet: X, y, classes."""

    def __init__(self, X, y, classes):
        self.X, self.y, self.classes = X, y, classes


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((24, 32, 32, 3), dtype=np.float32)


@pytest.mark.parametrize("backbone", ["smallcnn", "resnet18"])
def test_engines_equal(as_default, images, backbone):
    est = CNNFeatures(backbone, batch_size=8)
    local = est.transform(images)
    assert isinstance(local, np.ndarray) and local.dtype == np.float32
    assert local.shape == (24, _backbones.get_backbone(backbone).feature_dim)
    lazy = est.transform(da.from_array(images, chunks=(5, -1, -1, -1)))
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == ((5, 5, 5, 5, 4), (local.shape[1],))
    assert_engines_equal(local, lazy, atol=1e-5)
    # engine="dask" on numpy: scattered to the cluster, numpy back.
    eager = CNNFeatures(backbone, batch_size=8, engine="dask").transform(images)
    assert isinstance(eager, np.ndarray)
    assert_engines_equal(local, eager, atol=1e-5)
    # engine="local" on dask: computed here, numpy back.
    forced = CNNFeatures(backbone, batch_size=8, engine="local").transform(
        da.from_array(images, chunks=(7, -1, -1, -1))
    )
    assert isinstance(forced, np.ndarray)
    assert_engines_equal(local, forced, atol=1e-5)


def test_vgg19_engines_equal_tiny(client, images):
    local = CNNFeatures("vgg19", pool="max").transform(images[:4])
    assert local.shape == (4, 512)
    X = da.from_array(images[:4], chunks=(2, -1, -1, -1))
    dask_out = CNNFeatures("vgg19", pool="max").transform(X)
    assert_engines_equal(local, dask_out.compute(scheduler=client.get), atol=1e-5)


def test_imageset_and_gray(images):
    gray = images[..., :1]
    ims = FakeImageSet(gray, np.zeros(len(gray), int), ["a"])
    est = CNNFeatures("smallcnn")
    out = est.transform(ims)
    np.testing.assert_array_equal(out, est.transform(np.repeat(gray, 3, axis=-1)))
    np.testing.assert_array_equal(out, est.transform(gray[..., 0]))  # (n, h, w)
    assert est.fit(ims).n_features_out_ == 64
    assert est.get_feature_names_out()[-1] == "cnnfeatures63"


def test_determinism_and_pool(images):
    a = CNNFeatures("smallcnn", seed=0).transform(images)
    b = CNNFeatures("smallcnn", seed=0).fit_transform(images)
    c = CNNFeatures("smallcnn", seed=1).transform(images)
    m = CNNFeatures("smallcnn", pool="max").transform(images)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert np.all(m >= a - 1e-6) and not np.allclose(m, a)
    # batch size does not change the numbers beyond float noise
    np.testing.assert_allclose(
        a, CNNFeatures("smallcnn", batch_size=5).transform(images), atol=1e-5
    )


def test_model_built_once_per_worker(client, images):
    from distributed import get_task_stream

    est = CNNFeatures("smallcnn", seed=4242)  # a spec no other test uses
    spec = est._block_kwargs(images.shape)["spec"]
    X = da.from_array(images, chunks=(3, -1, -1, -1))  # 8 chunks
    with get_task_stream(client) as ts:
        est.transform(X).compute(scheduler=client.get)
        est.transform(X[::-1]).compute(scheduler=client.get)
        est.set_params(engine="dask").transform(images, client=client)
    ran = {t["worker"] for t in ts.data if "cnnfeatures" in t["key"] or "cnn_block" in t["key"]}
    assert ran, "no feature task ran on the cluster"
    counts = client.run(lambda: dasktrain._cache.build_count(spec))
    assert {w: counts[w] for w in ran} == {w: 1 for w in ran}
    assert all(counts[w] == 0 for w in set(counts) - ran)


def test_weights_file_round_trip(tmp_path, images):
    trained = _backbones.build("resnet18", num_classes=3, seed=11)
    # give the BatchNorm running stats non-default values, as a trained checkpoint has
    with torch.no_grad():
        for name, buf in trained.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    path = tmp_path / "resnet18.pth"
    torch.save(trained.state_dict(), path)
    feats = CNNFeatures("resnet18", weights=str(path)).transform(images[:6])
    trunk = _backbones.build("resnet18", seed=99)
    trunk.load_state_dict(
        {k: v for k, v in trained.state_dict().items() if not k.startswith("fc.")}
    )
    with torch.no_grad():
        x = torch.from_numpy(images[:6].transpose(0, 3, 1, 2).copy())
        expected = trunk.eval()(x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(feats, expected, atol=1e-5)
    assert np.abs(feats - CNNFeatures("resnet18").transform(images[:6])).max() > 1e-3
    # normalize="imagenet" is applied on request (for ImageNet weights kept in a file)
    normed = CNNFeatures("resnet18", weights=path, normalize="imagenet").transform(images[:6])
    assert np.abs(normed - feats).max() > 1e-3
    # A DDP-style checkpoint ("module." prefix, wrapped in {"state_dict": ...}) loads too.
    wrapped = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, wrapped)
    np.testing.assert_array_equal(
        CNNFeatures("resnet18", weights=wrapped).transform(images[:6]), feats
    )


def test_weights_mismatch_names_keys(tmp_path):
    p18 = tmp_path / "r18.pth"
    torch.save(_backbones.build("resnet18").state_dict(), p18)
    with pytest.raises(WeightsError, match=r"missing keys \(\d+\): 'layer1\.2\.conv1\.weight'"):
        CNNFeatures("resnet34", weights=p18).fit()
    extra = tmp_path / "extra.pth"
    sd = _backbones.build("smallcnn").state_dict()
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, extra)
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): 'extra\.weight'"):
        CNNFeatures("smallcnn", weights=extra).fit()
    gray = tmp_path / "gray.pth"
    torch.save(_backbones.build("smallcnn", in_channels=1).state_dict(), gray)
    with pytest.raises(WeightsError, match=r"features\.0\.weight: file \(16, 1, 3, 3\)"):
        CNNFeatures("smallcnn", weights=gray).fit()
    # A file that changes after a successful check is checked again (and fails).
    reused = tmp_path / "reused.pth"
    torch.save(_backbones.build("smallcnn").state_dict(), reused)
    CNNFeatures("smallcnn", weights=reused).fit()
    torch.save(_backbones.build("smallcnn", in_channels=1).state_dict(), reused)
    with pytest.raises(WeightsError, match="shape mismatches"):
        CNNFeatures("smallcnn", weights=reused).fit()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="weights_only=True"):
        CNNFeatures("smallcnn", weights=junk).fit()
    with pytest.raises(WeightsError, match="does not exist"):
        CNNFeatures("smallcnn", weights=tmp_path / "missing.pth").fit()


def test_imagenet_weights_explain_how_to_pass_a_file(tmp_path, monkeypatch):
    # TORCH_HOME points the hub cache at an empty folder (an env var, not a mock of torch).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth.*weights='/path/to/"):
        CNNFeatures("resnet18", weights="imagenet").fit()
    with pytest.raises(WeightsError, match="not available for backbone='smallcnn'"):
        CNNFeatures("smallcnn", weights="imagenet").fit()


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((2, 32), np.float32), r"3 or 4-dimensional, got shape \(2, 32\)"),
        (np.zeros((2, 32, 32, 3, 1), np.float32), "3 or 4-dimensional"),
        (np.zeros((2, 32, 32, 3), np.uint8), r"dtype uint8.*astype\('float32'\) / 255"),
        (np.zeros((2, 32, 32, 2), np.float32), "2 channels"),
        (np.zeros((2, 16, 40, 3), np.float32), r"16x40 pixels are too small.*at least 32x32"),
        (np.zeros((0, 32, 32, 3), np.float32), "0 samples"),
        (np.full((2, 32, 32, 3), "a"), "numeric"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises(ValidationError, match=match):
        CNNFeatures("resnet18").transform(X)


def test_nan_input_both_engines(client):
    X = np.random.default_rng(1).random((6, 16, 16, 3), dtype=np.float32)
    X[4, 2, 2, 0] = np.nan
    with pytest.raises(ValidationError, match="NaN or infinite"):
        CNNFeatures("smallcnn").transform(X)
    lazy = CNNFeatures("smallcnn").transform(da.from_array(X, chunks=(3, -1, -1, -1)))  # stays lazy
    with pytest.raises(ValidationError, match=r"local indices \[1\]"):
        lazy.compute(scheduler=client.get)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"backbone": "alexnet"}, r"'alexnet'.*'vgg19', 'resnet18', 'resnet34', 'smallcnn'"),
        ({"pool": "mean"}, "pool='mean'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"engine": "spark"}, "engine='spark'"),
        ({"normalize": True}, "normalize=True"),
        ({"n_threads": 0}, "n_threads=0"),
        ({"weights": 3}, "weights=3"),
    ],
)
def test_bad_params(params, match):
    kwargs = {"backbone": "smallcnn", **params}
    with pytest.raises(ValidationError, match=match):
        CNNFeatures(kwargs.pop("backbone"), **kwargs).fit()


def test_dask_engine_without_cluster_says_how(images):
    from distributed import Client

    try:
        Client.current()
    except ValueError:
        pass
    else:  # pragma: no cover - a default client leaked from elsewhere
        pytest.skip("a default client is active")
    with pytest.raises(ValidationError, match=r"dasktrain\.connect\(\)"):
        CNNFeatures("smallcnn", engine="dask").transform(images[:2])


def test_progress_both_engines(as_default, images, capsys):
    out = CNNFeatures("smallcnn", batch_size=8, progress=True).transform(images)
    assert "3/3" in capsys.readouterr().err  # tqdm: 24 images / batch 8
    X = da.from_array(images, chunks=(12, -1, -1, -1))
    lazy = CNNFeatures("smallcnn", progress=True).transform(X)
    assert isinstance(lazy, da.Array)  # persisted on the cluster, still a dask array
    assert_engines_equal(out, lazy, atol=1e-5)
    eager = CNNFeatures("smallcnn", engine="dask", progress=True).transform(images)
    assert "Completed" in capsys.readouterr().out  # distributed's text progress bar
    assert_engines_equal(out, eager, atol=1e-5)


def test_sklearn_pipeline(images):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    y = np.arange(len(images)) % 2
    pipe = make_pipeline(CNNFeatures("smallcnn"), LogisticRegression(max_iter=50)).fit(images, y)
    assert pipe.predict(images).shape == (len(images),)


@pytest.mark.gpu
def test_gpu_matches_cpu(images):
    cpu = CNNFeatures("resnet18", device="cpu").transform(images[:8])
    gpu = CNNFeatures("resnet18", device="cuda").transform(images[:8])
    auto = CNNFeatures("resnet18", device="auto").transform(images[:8])
    np.testing.assert_allclose(gpu, cpu, atol=1e-3, rtol=1e-3)
    np.testing.assert_array_equal(auto, gpu)


class _Recorder(torch.nn.Module):
    """Global average pooling that notes which thread ran each batch, and when."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, x):
        import threading
        import time

        start = time.perf_counter()
        time.sleep(0.05)  # long enough for two batches to overlap when they run at once
        if len(x) > 1:  # not the one-image probe of the output width
            self.log.append((threading.current_thread().name, start, time.perf_counter()))
        return x.mean(dim=(2, 3))


def test_local_engine_runs_batches_side_by_side_one_thread_each():
    # Regression: the local engine ran every batch in the caller's thread with torch's own
    # threads inside it, which on 2 cores gave smallcnn 0.92x of one thread (issue "Every
    # core at full work"); now n_threads batches run at once.
    log = []
    X = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    out = CNNFeatures(_Recorder(log), engine="local", n_threads=2, batch_size=2).fit_transform(X)
    np.testing.assert_allclose(out, X.mean(axis=(1, 2)), rtol=1e-6)
    threads = {name for name, _, _ in log}
    assert len(threads) == 2 and all(t.startswith("dasktrain-local") for t in threads), threads
    spans = sorted((s, e) for _, s, e in log)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two batches overlapped"


@pytest.mark.parametrize("backbone", ["smallcnn", "resnet18"])
def test_local_engine_threads_give_the_one_thread_features(images, backbone):
    previous = torch.get_num_threads()
    one = CNNFeatures(backbone, engine="local", n_threads=1, batch_size=4).fit_transform(images)
    two = CNNFeatures(backbone, engine="local", n_threads=2, batch_size=4).fit_transform(images)
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    assert torch.get_num_threads() == previous  # the caller's torch threads are put back
