"""HOG and histogram features: reference values, engine parity, bad input."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from dasktrain.exceptions import ValidationError  # noqa: E402
from dasktrain.features import HistogramFeatures, HOGFeatures  # noqa: E402
from dasktrain.testing import assert_engines_equal  # noqa: E402


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).random((10, 32, 40, 3), dtype=np.float32)


def test_hog_matches_skimage(images):
    from skimage.color import rgb2gray
    from skimage.feature import hog

    out = HOGFeatures().transform(images)
    ref = np.stack(
        [hog(rgb2gray(im), pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for im in images]
    )
    assert out.shape == ref.shape == (10, HOGFeatures().fit(images).n_features_out_)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    colour = HOGFeatures(gray=False, orientations=6, pixels_per_cell=8).transform(images)
    ref = np.stack(
        [hog(im, orientations=6, cells_per_block=(2, 2), channel_axis=-1) for im in images]
    )
    np.testing.assert_allclose(colour, ref, atol=1e-5)


def test_histogram_matches_numpy(images):
    out = HistogramFeatures(bins=8).transform(images)
    ref = np.stack(
        [
            np.concatenate([np.histogram(im[..., c], bins=8, range=(0, 1))[0] for c in range(3)])
            for im in images
        ]
    ) / (32 * 40)
    np.testing.assert_allclose(out, ref, atol=1e-7)
    gray = HistogramFeatures(bins=4, value_range=(0.25, 0.75)).transform(images[..., 0])
    assert gray.shape == (10, 4)
    np.testing.assert_allclose(gray.sum(axis=1), 1.0, rtol=1e-6)  # out-of-range in edge bins


@pytest.mark.parametrize("make", [lambda: HOGFeatures(), lambda: HistogramFeatures(bins=16)])
def test_engines_equal(as_default, images, make):
    local = make().transform(images)
    lazy = make().transform(da.from_array(images, chunks=(4, -1, -1, -1)))
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (4, 4, 2)
    assert_engines_equal(local, lazy)
    eager = make().set_params(engine="dask").transform(images)
    assert isinstance(eager, np.ndarray)
    assert_engines_equal(local, eager)
    # an image-axis-chunked dask input is rechunked to whole images
    odd = da.from_array(images, chunks=(3, 16, 20, 3))
    assert_engines_equal(local, make().set_params(engine="local").transform(odd))


@pytest.mark.parametrize(
    "est, X, match",
    [
        (HOGFeatures(), np.zeros((2, 12, 12), np.float32), r"12x12 pixels are too small.*16x16"),
        (HOGFeatures(), np.zeros((2, 32, 32, 4), np.float32), "4 channels"),
        (HOGFeatures(block_norm="L3"), np.zeros((2, 32, 32), np.float32), "block_norm='L3'"),
        (
            HOGFeatures(pixels_per_cell=(8, 0)),
            np.zeros((2, 32, 32), np.float32),
            r"pixels_per_cell=\(8, 0\)",
        ),
        (HistogramFeatures(bins=0), np.zeros((2, 8, 8), np.float32), "bins=0"),
        (HistogramFeatures(value_range=(1, 0)), np.zeros((2, 8, 8), np.float32), "low < high"),
        (HistogramFeatures(), np.zeros((2, 8), np.float32), "3 or 4-dimensional"),
        (HistogramFeatures(), np.zeros((2, 8, 8), np.int32), "dtype int32"),
        (HistogramFeatures(engine="gpu"), np.zeros((2, 8, 8), np.float32), "engine='gpu'"),
    ],
)
def test_bad_input(est, X, match):
    with pytest.raises(ValidationError, match=match):
        est.transform(X)


def test_nan_rejected():
    X = np.zeros((3, 16, 16), np.float32)
    X[1, 0, 0] = np.inf
    for est in (HOGFeatures(), HistogramFeatures()):
        with pytest.raises(ValidationError, match="NaN or infinite"):
            est.transform(X)


@pytest.mark.parametrize("make", [HOGFeatures, lambda **kw: HistogramFeatures(bins=16, **kw)])
def test_local_threads_give_the_one_thread_features(make):
    # n_threads used to be ignored by the classic extractors (one thread, whatever it said).
    X = np.random.default_rng(1).random((600, 32, 32, 1), dtype=np.float32)
    one = make(engine="local", n_threads=1).fit_transform(X)
    two = make(engine="local", n_threads=2).fit_transform(X)
    np.testing.assert_array_equal(two, one)


@pytest.mark.parametrize("make", [HOGFeatures, HistogramFeatures, "CNNFeatures"])
def test_tags_say_the_dtype_the_features_have(make):
    # Issue 26, item 9: the tags claimed preserves_dtype=['float64'] (scikit-learn's default
    # for a transformer) while every extractor returns float32.
    if make == "CNNFeatures":
        pytest.importorskip("torch")
        from dasktrain.features import CNNFeatures

        make = lambda: CNNFeatures("smallcnn")  # noqa: E731
    est = make()
    assert est.__sklearn_tags__().transformer_tags.preserves_dtype == ["float32"]
    X = np.random.default_rng(0).random((3, 32, 32, 1))  # float64 in
    for dtype in (np.float64, np.float32):
        assert est.fit_transform(X.astype(dtype)).dtype == np.float32
