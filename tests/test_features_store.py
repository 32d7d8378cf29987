"""save_features / load_features: zarr round trips on both engines and refusals."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from dasktrain.exceptions import ValidationError  # noqa: E402
from dasktrain.features import HistogramFeatures, load_features, save_features  # noqa: E402


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    return rng.random((23, 6)).astype(np.float32), rng.integers(0, 3, 23)


def test_round_trip_numpy(tmp_path, data):
    X, y = data
    path = save_features(tmp_path / "f.zarr", X, y, ["cat", "dog", "cow"])
    X2, y2, classes = load_features(path)
    assert isinstance(X2, np.ndarray) and X2.dtype == np.float32
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert classes == ["cat", "dog", "cow"]
    Xd, yd, _ = load_features(path, engine="dask")
    assert isinstance(Xd, da.Array)
    np.testing.assert_array_equal(Xd.compute(), X)
    np.testing.assert_array_equal(yd.compute(), y)


def test_round_trip_dask_written_by_workers(tmp_path, client, data):
    X, y = data
    Xd = da.from_array(X, chunks=((5, 8, 10), (6,)))  # irregular chunks
    yd = da.from_array(y, chunks=((5, 8, 10),))
    with client.as_current():
        path = save_features(tmp_path / "d.zarr", Xd, yd)
        X2, y2, classes = load_features(path, engine="dask")
        assert X2.chunks[0][0] == 10  # chunked along samples, as written
        np.testing.assert_array_equal(X2.compute(), X)
        np.testing.assert_array_equal(y2.compute(), y)
    assert classes is None
    X3, y3, _ = load_features(path)
    np.testing.assert_array_equal(X3, X)


def test_features_to_store_lazily(tmp_path, as_default):
    imgs = np.random.default_rng(4).random((9, 8, 8), dtype=np.float32)
    feats = HistogramFeatures(bins=4).transform(da.from_array(imgs, chunks=(4, -1, -1)))
    path = save_features(tmp_path / "h.zarr", feats)
    X, y, classes = load_features(path)
    np.testing.assert_array_equal(X, HistogramFeatures(bins=4).transform(imgs))
    assert y is None and classes is None


def test_overwrite_and_refusals(tmp_path, data):
    X, y = data
    path = tmp_path / "f.zarr"
    save_features(path, X)
    with pytest.raises(ValidationError, match="already exists; pass overwrite=True"):
        save_features(path, X)
    save_features(path, X[:5], y[:5], overwrite=True)
    assert load_features(path)[0].shape == (5, 6)
    other = tmp_path / "notzarr"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(ValidationError, match="not a zarr store; refusing"):
        save_features(other, X, overwrite=True)
    assert (other / "keep.txt").exists()
    with pytest.raises(ValidationError, match="is not a zarr store"):
        load_features(other)
    with pytest.raises(ValidationError, match="engine='spark'"):
        load_features(path, engine="spark")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": np.zeros(3)}, "has 23 samples but y has 3"),
        ({"classes": "abc"}, "classes='abc'"),
        ({"X": np.zeros((2, 2, 2))}, "2-dimensional"),
        ({"X": np.full((2, 2), np.nan)}, "NaN"),
    ],
)
def test_bad_input(tmp_path, data, kwargs, match):
    args = {"X": data[0], **kwargs}
    with pytest.raises(ValidationError, match=match):
        save_features(tmp_path / "bad.zarr", args.pop("X"), **args)
