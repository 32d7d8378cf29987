"""KerasFeatures (TensorFlow): engine parity, seeding, weights files. Kept small: TF is slow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
da = pytest.importorskip("dask.array")

from dasktrain.exceptions import ValidationError, WeightsError  # noqa: E402
from dasktrain.features import KerasFeatures  # noqa: E402
from dasktrain.testing import assert_engines_equal  # noqa: E402


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).random((6, 32, 32, 3), dtype=np.float32)


def test_import_dasktrain_stays_light():
    code = (
        "import sys, dasktrain, dasktrain.features, dasktrain.features._backbones; "
        "print(any(m in sys.modules for m in ('tensorflow', 'torch', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _close(a, b):
    """Within the issue's 1e-5 and within 1e-4 of the features' own scale (random weights
    can give small features, where 1e-5 alone would prove nothing)."""
    assert_engines_equal(a, b, atol=1e-5)
    assert_engines_equal(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))


def test_engines_equal_and_seeded(as_default, images):
    local = KerasFeatures("vgg19", batch_size=4).transform(images)
    assert local.shape == (6, 512) and local.dtype == np.float32
    assert np.abs(local).max() > 0
    lazy = KerasFeatures("vgg19").transform(da.from_array(images, chunks=(3, -1, -1, -1)))
    assert isinstance(lazy, da.Array)
    _close(local, lazy)
    eager = KerasFeatures("vgg19", engine="dask").transform(images)
    assert isinstance(eager, np.ndarray)
    _close(local, eager)
    np.testing.assert_array_equal(local, KerasFeatures("vgg19", batch_size=4).transform(images))
    a = KerasFeatures("mobilenetv2", seed=0).transform(images)
    b = KerasFeatures("mobilenetv2", seed=1).transform(images)
    assert a.shape == (6, 1280)
    assert not np.allclose(a, b, rtol=1e-2, atol=0)


def test_weights_file(tmp_path, images):
    import keras

    keras.utils.set_random_seed(7)
    model = keras.applications.VGG19(
        include_top=False, weights=None, pooling="avg", input_shape=(None, None, 3)
    )
    path = tmp_path / "vgg19.weights.h5"
    model.save_weights(str(path))
    feats = KerasFeatures("vgg19", weights=str(path)).transform(images)
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-3 * np.abs(expected).max())
    gray = KerasFeatures("vgg19", weights=str(path)).transform(images[..., :1])
    expected = model(np.repeat(images[..., :1], 3, -1), training=False).numpy()
    np.testing.assert_allclose(gray, expected, rtol=1e-5, atol=1e-3 * np.abs(expected).max())
    with pytest.raises(WeightsError, match=r"could not be loaded into Keras backbone 'resnet50'"):
        KerasFeatures("resnet50", weights=str(path)).fit()


def test_errors(tmp_path, monkeypatch, images):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache (env, not a mock)
    with pytest.raises(WeightsError, match=r"vgg19_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        KerasFeatures("vgg19", weights="imagenet").fit()
    with pytest.raises(WeightsError, match="does not exist"):
        KerasFeatures("vgg19", weights=tmp_path / "nope.h5").fit()
    with pytest.raises(ValidationError, match=r"'resnet18'.*'vgg19', 'resnet50', 'mobilenetv2'"):
        KerasFeatures("resnet18").fit()
    with pytest.raises(ValidationError, match=r"16x16 pixels are too small.*32x32"):
        KerasFeatures("vgg19").transform(images[:, :16, :16])
