"""save_features / load_features: zarr round trips on both engines and refusals."""

from __future__ import annotations

import os

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
    with pytest.raises(
        ValidationError, match="not a zarr store written by save_features; refusing"
    ):
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


# --------------------------------------------------------------------------- data safety
# Regressions: save_features(X, "") deleted the current folder; overwrite=True deleted foreign
# files kept beside a store; a link to a store gave a raw OSError. Nothing may be deleted that
# save_features did not write, and every check runs before anything is touched.


def _user_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "raw.csv").write_text("1,2,3")
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("where", ["", ".", "./", "cwd", "parent_of_cwd", "home", "root"])
def test_protected_paths_are_refused_and_untouched(tmp_path, monkeypatch, data, where, overwrite):
    cwd = tmp_path / "project" / "work"
    before = _user_files(cwd)
    home = tmp_path / "home"
    home_before = _user_files(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    path = {"cwd": str(cwd), "parent_of_cwd": str(cwd.parent), "home": "~", "root": "/"}.get(
        where, where
    )
    path = os.path.expanduser(path)
    with pytest.raises(ValidationError, match="path=|already exists"):
        save_features(path, data[0], overwrite=overwrite)
    assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == before
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == home_before
    assert (cwd / "thesis.tex").read_text() == "years of work"


def test_empty_path_message_says_what_to_pass(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ValidationError, match="path='' is empty"):
        save_features("", data[0])
    assert (tmp_path / "keep.txt").exists()


def test_overwrite_refuses_a_store_with_foreign_files(tmp_path, data):
    X, y = data
    path = tmp_path / "f.zarr"
    save_features(path, X, y)
    (path / "notes.txt").write_text("my notes")
    with pytest.raises(ValidationError, match=r"also holds \['notes.txt'\]"):
        save_features(path, X[:3], overwrite=True)
    assert (path / "notes.txt").read_text() == "my notes"
    np.testing.assert_array_equal(load_features(path)[0], X)  # the store is intact too


def test_overwrite_refuses_a_zarr_store_of_another_origin(tmp_path, data):
    import zarr

    path = tmp_path / "theirs.zarr"
    g = zarr.open_group(str(path), mode="w")
    g.create_array("weights", shape=(5,), dtype="f8")[...] = np.arange(5.0)  # any zarr 3
    with pytest.raises(ValidationError, match="not a zarr store written by save_features"):
        save_features(path, data[0], overwrite=True)
    np.testing.assert_array_equal(
        zarr.open_group(str(path), mode="r")["weights"][...], np.arange(5.0)
    )


def test_overwrite_refuses_a_file(tmp_path, data):
    f = tmp_path / "f.zarr"
    f.write_text("a file")
    with pytest.raises(ValidationError, match="not a folder"):
        save_features(f, data[0], overwrite=True)
    assert f.read_text() == "a file"


def test_symlink_to_a_store_is_refused_clearly(tmp_path, data):
    X, _ = data
    real = tmp_path / "real.zarr"
    save_features(real, X)
    link = tmp_path / "link.zarr"
    link.symlink_to(real, target_is_directory=True)
    for overwrite in (False, True):
        with pytest.raises(ValidationError, match="symbolic link"):
            save_features(link, X[:2], overwrite=overwrite)
    assert link.is_symlink()
    np.testing.assert_array_equal(load_features(link)[0], X)  # reading through it is fine


def test_inner_symlink_makes_a_store_foreign(tmp_path, data):
    X, _ = data
    path = tmp_path / "f.zarr"
    save_features(path, X)
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    os.rename(path / "X", tmp_path / "X-moved")
    (path / "X").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValidationError, match="also holds"):
        save_features(path, X, overwrite=True)
    assert (elsewhere / "keep.txt").read_text() == "keep"


def _failing_block(block):
    raise RuntimeError("extraction failed half-way")


def test_failed_overwrite_keeps_the_old_store_and_leaves_no_temporary(tmp_path, data):
    X, y = data
    path = tmp_path / "f.zarr"
    save_features(path, X, y, ["a", "b", "c"])
    bad = da.from_array(X, chunks=(5, -1)).map_blocks(_failing_block, dtype=X.dtype)
    with pytest.raises(RuntimeError, match="half-way"):
        save_features(path, bad, overwrite=True)
    X2, y2, classes = load_features(path)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert classes == ["a", "b", "c"]
    assert sorted(os.listdir(tmp_path)) == ["f.zarr"]  # no temporary or old copy left
    save_features(path, X[:4], overwrite=True)  # a good overwrite replaces it
    assert load_features(path)[0].shape == (4, 6)
    assert sorted(os.listdir(tmp_path)) == ["f.zarr"]


def test_empty_folder_can_be_used_with_overwrite(tmp_path, data):
    path = tmp_path / "empty"
    path.mkdir()
    with pytest.raises(ValidationError, match="already exists"):
        save_features(path, data[0])
    save_features(path, data[0], overwrite=True)
    np.testing.assert_array_equal(load_features(path)[0], data[0])


# --------------------------------------------------------------------------- stores that lie
# Regressions (issue 27, item 9): a store whose arrays and metadata do not hold together loaded
# anyway (y of 3 rows beside X of 10, a dict of classes turned into its keys, a 1-D string X)
# or failed with a bare MemoryError/ValueError (a 2^40 x 2^40 X). Each is built the way it
# happens: a real store, then one part rewritten with zarr.


def _store(tmp_path, data):
    X, y = data
    return save_features(tmp_path / "s.zarr", X[:10], y[:10] % 2, ["a", "b"])


def _replace(path, name, shape, dtype, fill=None, **attrs):
    import zarr

    g = zarr.open_group(str(path), mode="a")
    if name is not None:
        del g[name]
        a = g.create_array(name, shape=shape, dtype=dtype, chunks=tuple(min(s, 256) for s in shape))
        if fill is not None:
            a[...] = fill
    g.attrs.update(attrs)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_load_refuses_y_of_another_length(tmp_path, data, engine):
    path = _store(tmp_path, data)
    _replace(path, "y", (3,), "i8", 0)
    with pytest.raises(ValidationError, match=r"s\.zarr.*y has 3 rows but X has 10"):
        load_features(path, engine=engine)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_load_refuses_classes_that_are_not_a_list_of_names(tmp_path, data, engine):
    path = _store(tmp_path, data)
    _replace(path, None, None, None, classes={"0": "a", "1": "b"})
    with pytest.raises(ValidationError, match=r"s\.zarr.*classes .*\{'0': 'a', '1': 'b'\}"):
        load_features(path, engine=engine)


def test_load_refuses_labels_outside_the_classes(tmp_path, data):
    path = _store(tmp_path, data)
    _replace(path, "y", (10,), "i8", np.arange(10))
    with pytest.raises(ValidationError, match=r"s\.zarr.*labels.*9.*2 classes"):
        load_features(path)
    _, y, _ = load_features(path, engine="dask")  # lazy: checked when computed
    with pytest.raises(ValidationError, match=r"s\.zarr.*labels.*9.*2 classes"):
        y.compute()


@pytest.mark.filterwarnings("ignore:The data type")  # zarr: no v3 spec for str yet
@pytest.mark.parametrize("engine", ["local", "dask"])
def test_load_refuses_a_1d_string_X(tmp_path, data, engine):
    path = _store(tmp_path, data)
    _replace(path, "X", (10,), "<U5", np.array(["abcde"] * 10))
    with pytest.raises(ValidationError, match=r"s\.zarr.*X .*1-d.*str|s\.zarr.*X .*1-d"):
        load_features(path, engine=engine)


def test_load_refuses_metadata_that_disagrees_with_X(tmp_path, data):
    path = _store(tmp_path, data)
    _replace(path, None, None, None, n_samples=11)
    with pytest.raises(ValidationError, match=r"s\.zarr.*n_samples=11.*X has 10"):
        load_features(path)


def test_load_of_a_huge_X_says_it_does_not_fit(tmp_path, data):
    from dasktrain.exceptions import InsufficientMemoryError

    path = _store(tmp_path, data)
    _replace(path, "X", (2**40, 2**40), "f4", n_samples=2**40, n_features=2**40)
    _replace(path, "y", (2**40,), "i8")
    with pytest.raises(InsufficientMemoryError, match=r"s\.zarr.*engine='dask'"):
        load_features(path)
    with pytest.raises(InsufficientMemoryError, match=r"s\.zarr.*chunks"):
        load_features(path, engine="dask")


def test_overwrite_keeps_a_user_file_inside_X(tmp_path, data):
    X, _ = data
    path = tmp_path / "f.zarr"
    save_features(path, X)
    (path / "X" / "README.txt").write_text("my notes on these features")
    with pytest.raises(ValidationError, match=r"X/README\.txt.*save_features did not write"):
        save_features(path, X[:3], overwrite=True)
    assert (path / "X" / "README.txt").read_text() == "my notes on these features"
    np.testing.assert_array_equal(load_features(path)[0], X)


def test_overwrite_keeps_a_user_file_posing_as_a_chunk(tmp_path, data):
    X, _ = data
    path = tmp_path / "f.zarr"
    save_features(path, X)
    (path / "y").mkdir()  # no y was saved: a y folder is the user's
    (path / "y" / "zarr.json").write_text("{}")
    (path / "X" / "c" / "99").mkdir()
    (path / "X" / "c" / "99" / "0").write_text("not a chunk of a 23-row X")
    with pytest.raises(ValidationError, match="save_features did not write"):
        save_features(path, X[:3], overwrite=True)
    assert (path / "X" / "c" / "99" / "0").exists() and (path / "y" / "zarr.json").exists()


# ------------------------------------------------------------- paths the OS cannot follow
def test_save_refuses_dotdot_after_a_missing_folder(tmp_path, data):
    # Regression (issue 27, item 10): a FileNotFoundError naming a hidden .tmp folder, after
    # the whole store had been written.
    bad = f"{tmp_path}/missing/../x.zarr"
    with pytest.raises(ValidationError, match=r"missing/\.\./x\.zarr.*'\.\.'.*does not exist"):
        save_features(bad, data[0])
    assert os.listdir(tmp_path) == []


def test_save_refuses_a_parent_that_is_a_file(tmp_path, data):
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(ValidationError, match=r"afile.*not a folder"):
        save_features(tmp_path / "afile" / "x.zarr", data[0])
    assert (tmp_path / "afile").read_text() == "keep"
