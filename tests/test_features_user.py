"""A network of the user's in CNNFeatures / KerasFeatures (issue 15, item 4).

Before: ``CNNFeatures(my_torch_module)`` was a ValidationError; only four built-in CNNs.
"""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

from torch import nn  # noqa: E402

import dasktrain._cache  # noqa: E402
from dasktrain.exceptions import ValidationError, WeightsError  # noqa: E402
from dasktrain.features import CNNFeatures, _backbones  # noqa: E402
from dasktrain.testing import assert_engines_equal  # noqa: E402


class TinyNet(nn.Module):
    """A module of the user's own: two convs, feature maps out."""

    def __init__(self, width=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        )

    def forward(self, x):
        return self.body(x)


class Flat(nn.Module):
    """(n, d) features out (already pooled)."""

    def __init__(self):
        super().__init__()
        self.net = TinyNet()
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.net(x).mean(dim=(2, 3)))


class Broken(nn.Module):
    def forward(self, x):
        return x.mean(dim=1)  # (n, h, w): neither features nor maps


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).random((20, 32, 32, 3), dtype=np.float32)


def _by_hand(module, X, mean=0.0, std=1.0, pool="avg"):
    x = torch.from_numpy(np.ascontiguousarray(((X - mean) / std).transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        out = module.eval()(x)
    if out.ndim == 4:
        out = out.mean(dim=(2, 3)) if pool == "avg" else out.amax(dim=(2, 3))
    return out.numpy()


def test_module_instance_on_every_engine(images, as_default):
    torch.manual_seed(0)
    module = TinyNet().train()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    est = CNNFeatures(module, normalize=(mean, std), input_size=32, batch_size=6)
    local = est.fit(images).transform(images)
    assert module.training, "the local engine put the caller's module back in train mode"
    assert local.shape == (20, 16) and est.n_features_out_ == 16
    expected = _by_hand(module, images, np.float32(mean), np.float32(std))
    np.testing.assert_allclose(local, expected, rtol=1e-5, atol=1e-6)
    lazy = est.transform(da.from_array(images, chunks=(6, 32, 32, 3)))
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (6, 6, 6, 2)
    assert_engines_equal(local, lazy, atol=1e-5)
    eager = CNNFeatures(module, normalize=(mean, std), engine="dask").transform(images)
    assert_engines_equal(local, eager, atol=1e-5)
    flat = CNNFeatures(Flat(), pool="max").transform(images)  # (n, d) out: used as it is
    assert flat.shape == (20, 5)


def test_instance_enters_the_graph_once(images):
    module = TinyNet(width=64)  # ~80 kB of weights
    size = len(pickle.dumps(module))
    est = CNNFeatures(module)

    def graph_bytes(chunk):
        out = est.transform(da.from_array(images, chunks=(chunk, 32, 32, 3)))
        return len(pickle.dumps(dict(out.__dask_graph__())))

    few, many = graph_bytes(10), graph_bytes(2)  # 2 blocks vs 10 blocks
    # Eight more blocks add their image chunks, not eight more copies of the model.
    assert many - few < size, (few, many, size)


def test_builder_built_once_per_worker(images, client):
    build = functools.partial(TinyNet, width=4)
    est = CNNFeatures(build, seed=7, batch_size=4)
    local = est.transform(images)
    again = CNNFeatures(functools.partial(TinyNet, width=4), seed=7).transform(images)
    np.testing.assert_array_equal(local, again)  # the same seed: the same random weights
    other = CNNFeatures(build, seed=8).transform(images)
    assert not np.allclose(local, other)
    client.run(dasktrain._cache.clear)
    lazy = est.transform(da.from_array(images, chunks=(2, 32, 32, 3)))
    assert_engines_equal(local, lazy.compute(scheduler=client.get), atol=1e-5)
    spec = est._spec()
    builds = client.run(dasktrain._cache.build_count, spec)
    assert sum(builds.values()) <= len(builds), builds  # once per worker, not per block


def test_torchvision_style_state_dict(tmp_path, images):
    # A ResNet-18 with torchvision's keys and a 2-class head, as after fine-tuning.
    build = functools.partial(_backbones.build, "resnet18", num_classes=2)
    trained = build(seed=123).eval()
    path = tmp_path / "finetuned.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    est = CNNFeatures(build, weights=str(path), input_size=(32, 32))
    out = est.transform(images[:4])
    np.testing.assert_allclose(out, _by_hand(trained, images[:4]), rtol=1e-4, atol=1e-5)
    # a file of another architecture: the keys are named
    torch.save(TinyNet().state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not match your model.*missing keys"):
        CNNFeatures(build, weights=str(tmp_path / "other.pth")).fit(images)
    with pytest.raises(WeightsError, match="its own weights"):
        CNNFeatures(TinyNet(), weights=str(path)).fit(images)
    with pytest.raises(WeightsError, match="'imagenet' names the checkpoint"):
        CNNFeatures(build, weights="imagenet").fit(images)


def test_bad_user_models(images):
    with pytest.raises(ValidationError, match="input_size=\\(64, 64\\)"):
        CNNFeatures(TinyNet(), input_size=64).transform(images)
    with pytest.raises(ValidationError, match="not a known backbone name, a torch.nn.Module"):
        CNNFeatures(42).fit(images)
    with pytest.raises(ValidationError, match="returned a int, not a torch.nn.Module"):
        CNNFeatures(lambda: 3).transform(images)
    with pytest.raises(ValidationError, match="shape \\(1, 32, 32\\)"):
        CNNFeatures(Broken()).transform(images)
    with pytest.raises(ValidationError, match="normalize="):
        CNNFeatures(TinyNet(), normalize=((0.5,), (0.0,))).fit(images)


# ---------------------------------------------------------------------------------- Keras


def _keras_net(width=4):
    """A builder of a Keras model of the user's: feature maps out."""
    import keras

    return keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(width, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(2 * width, 3, strides=2),
        ]
    )


# Before the Shipped wrapper this hung: distributed's Keras-2 serializer failed when a worker
# fetched the model from another, and the fetch was retried for ever.
@pytest.mark.timeout(240)
def test_keras_model_and_builder(tmp_path, images, as_default):
    pytest.importorskip("tensorflow")
    from dasktrain.features import KerasFeatures

    X = images[:8]
    model = _keras_net()
    est = KerasFeatures(model, normalize=((0.5,), (0.25,)), pool="max", input_size=32)
    local = est.transform(X)
    maps = np.asarray(model((X - 0.5) / 0.25, training=False))
    np.testing.assert_allclose(local, maps.max(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    lazy = est.transform(da.from_array(X, chunks=(3, 32, 32, 3)))
    assert_engines_equal(local, lazy, atol=1e-5)
    eager = est.set_params(engine="dask").transform(X)  # scattered to every worker
    assert_engines_equal(local, eager, atol=1e-5)
    # A builder: built once per process under the seed, the same weights everywhere (with
    # keras.utils.set_random_seed alone the two workers drew different weights: Keras seeds
    # from Python's global `random`, which the worker's other threads use too).
    built = KerasFeatures(_keras_net, seed=3)
    a = built.transform(X)
    assert_engines_equal(a, built.transform(da.from_array(X, chunks=(4, 32, 32, 3))), atol=1e-5)
    assert not np.allclose(a, KerasFeatures(_keras_net, seed=4).transform(X))
    # A weights file saved from the user's model, loaded into every model built.
    path = str(tmp_path / "mine.weights.h5")
    model.save_weights(path)
    from_file = KerasFeatures(_keras_net, weights=path).transform(X)
    np.testing.assert_allclose(from_file, np.asarray(model(X)).mean(axis=(1, 2)), atol=1e-5)
    with pytest.raises(WeightsError, match="its own weights"):
        KerasFeatures(model, weights=path).fit(X)
    with pytest.raises(ValidationError, match="not a Keras backbone name"):
        KerasFeatures(3.5).fit(X)


# ----------------------------------------------------- a gray network (issue 26, item 3)


def _gray_net(channels=1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def _gray_builder():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())


def test_gray_network_gets_gray_images_on_every_engine(images, as_default):
    # Before: every image was repeated to 3 channels, and torch failed inside the forward pass
    # ("expected input[1, 3, 32, 32] to have 1 channels").
    gray = images[..., :1]
    net = _gray_net()
    est = CNNFeatures(net, batch_size=7)
    local = est.fit(gray).transform(gray)
    np.testing.assert_allclose(local, _by_hand(net, gray), rtol=1e-5, atol=1e-6)
    assert local.shape == (20, 4) and est.n_features_out_ == 4
    lazy = est.transform(da.from_array(gray, chunks=(6, 32, 32, 1)))
    assert_engines_equal(local, lazy, atol=1e-5)
    assert_engines_equal(local, CNNFeatures(net, engine="dask").transform(gray[..., 0]), atol=1e-5)
    # A builder's channels are read from the model it builds; in_channels= says it outright.
    built = CNNFeatures(_gray_builder).fit_transform(gray)
    stated = CNNFeatures(_gray_builder, in_channels=1).fit_transform(gray)
    np.testing.assert_array_equal(built, stated)


def test_channel_mismatch_is_refused_before_any_work(images):
    gray_net = CNNFeatures(_gray_net())
    with pytest.raises(ValidationError, match=r"X has 3 channels, but your model .* takes 1 "):
        gray_net.fit(images)
    with pytest.raises(ValidationError, match="color='gray'"):
        gray_net.transform(da.from_array(images, chunks=(5, 32, 32, 3)))  # nothing computed
    with pytest.raises(ValidationError, match="in_channels=2"):
        CNNFeatures(_gray_net(2), in_channels=2).fit(images)
    with pytest.raises(ValidationError, match="statistics of 3 channels"):
        CNNFeatures(_gray_net(), normalize="imagenet").fit(images[..., :1])
    # The built-in backbones keep RGB: gray images are repeated, in_channels is refused.
    assert CNNFeatures("smallcnn").fit_transform(images[..., :1]).shape == (20, 64)
    with pytest.raises(ValidationError, match="takes RGB"):
        CNNFeatures("smallcnn", in_channels=1).fit(images[..., :1])
    # An RGB model of the user's still gets gray images repeated to 3 channels.
    assert CNNFeatures(TinyNet()).fit_transform(images[..., :1]).shape == (20, 16)
