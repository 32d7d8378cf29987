"""read_images / ImageSet: every format and mode, both engines bit for bit, every bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dasktrain.exceptions import (
    DatasetLayoutError,
    ImageReadError,
    SkippedFilesWarning,
    ValidationError,
)
from dasktrain.images import ImageSet, decode_image, read_images, scan_images
from dasktrain.testing import assert_engines_equal

# An 8x8 gradient: every pixel value distinct, so a wrong scale or orientation shows.
GRAD8 = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4 + 1).astype(np.uint8)


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _write_two_classes(root, n=3, ext=".png", side=12):
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        for i in range(n):
            _save(root / c / f"{i}{ext}", rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return root


@pytest.fixture
def mixed(tmp_path):
    """A folder that mixes every supported format, mode and size, plus non-images to ignore."""
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    a, b = root / "train" / "A", root / "test" / "B"
    big = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    _save(a / "rgb.jpg", big, quality=90)  # big enough for JPEG draft mode to kick in
    _save(a / "gray.jpeg", big[..., 0])
    _save(a / "l8.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    _save(a / "l16.png", rng.integers(0, 65536, (30, 20), dtype=np.uint16))
    _save(a / "rgba.png", rng.integers(0, 256, (17, 17, 4), dtype=np.uint8))
    _save(b / "rgb.bmp", rng.integers(0, 256, (9, 40, 3), dtype=np.uint8))
    _save(b / "l.tif", rng.integers(0, 256, (33, 33), dtype=np.uint8))
    _save(b / "l16.tiff", rng.integers(0, 65536, (33, 31), dtype=np.uint16))
    p = Image.fromarray(rng.integers(0, 256, (15, 15, 3), dtype=np.uint8)).quantize(8)
    p.save(b / "pal.PNG")  # upper-case extension counts too
    # Ignored: other extensions, hidden files, hidden folders.
    (a / "notes.txt").write_text("not an image")
    (a / "Thumbs.db").write_bytes(b"\x00" * 10)
    _save(a / ".hidden.png", GRAD8)
    _save(root / ".ipynb_checkpoints" / "A" / "x.png", GRAD8)
    return root


# --------------------------------------------------------------------------- formats and modes


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("l.png", lambda: Image.fromarray(GRAD8), GRAD8 / np.float32(255)),
        ("l.bmp", lambda: Image.fromarray(GRAD8), GRAD8 / np.float32(255)),
        ("l.tif", lambda: Image.fromarray(GRAD8), GRAD8 / np.float32(255)),
        (
            "rgb.png",
            lambda: Image.fromarray(np.repeat(GRAD8[..., None], 3, axis=2)),
            GRAD8 / np.float32(255),
        ),
        (
            "rgba.png",  # alpha dropped, colour kept
            lambda: Image.fromarray(np.dstack([GRAD8, GRAD8, GRAD8, np.zeros_like(GRAD8)])),
            GRAD8 / np.float32(255),
        ),
        (
            "p.png",
            lambda: _palette_image(),
            np.tile(np.array([0, 255, 10], np.float32), 22)[:64].reshape(8, 8) / np.float32(255),
        ),
        (
            "i16.png",
            lambda: Image.fromarray(GRAD8.astype(np.uint16) * 250),
            (GRAD8.astype(np.float32) * 250) / np.float32(65535),
        ),
        (
            "i16.tif",
            lambda: Image.fromarray(GRAD8.astype(np.uint16) * 250),
            (GRAD8.astype(np.float32) * 250) / np.float32(65535),
        ),
    ],
)
def test_formats_and_modes_exact_values(tmp_path, name, make, expected):
    # Same size as the file: no resampling, so the values are exactly the file's / its depth.
    path = tmp_path / name
    make().save(path)
    gray = decode_image(str(path), (8, 8), "gray")
    rgb = decode_image(str(path), (8, 8), "rgb")
    assert gray.dtype == np.float32 and gray.shape == (8, 8, 1)
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(gray[..., 0], expected.astype(np.float32))
    np.testing.assert_array_equal(rgb[..., 1], expected.astype(np.float32))


def _palette_image():
    p = Image.new("P", (8, 8))
    p.putpalette([0, 0, 0, 255, 255, 255, 10, 10, 10])
    p.putdata([0, 1, 2] * 21 + [0])
    return p


def test_sixteen_bit_is_scaled_by_65535_not_255(tmp_path):
    a = np.full((8, 8), 1000, dtype=np.uint16)
    _save(tmp_path / "a.png", a)
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    x = decode_image(str(tmp_path / "a.png"), (4, 4))
    np.testing.assert_allclose(x, 1000 / 65535, rtol=1e-6)  # /255 would clip to 1.0


def test_big_endian_and_32bit_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    a = GRAD8.astype(np.uint16) * 1000
    tifffile.imwrite(tmp_path / "b.tif", a, byteorder=">")
    tifffile.imwrite(tmp_path / "i.tif", a.astype(np.int32) * 2)  # mode "I", above 16 bits
    assert Image.open(tmp_path / "b.tif").mode == "I;16B"
    assert Image.open(tmp_path / "i.tif").mode == "I"
    np.testing.assert_array_equal(
        decode_image(str(tmp_path / "b.tif"), (8, 8))[..., 0],
        a.astype(np.float32) / np.float32(65535),
    )
    x = decode_image(str(tmp_path / "i.tif"), (8, 8))[..., 0]
    assert x.max() == 1.0 and x.min() >= 0.0  # clipped to the 16-bit range


def test_jpeg_exif_orientation_is_applied(tmp_path):
    # A wide image, black on the left, white on the right, stored with orientation 6 (the
    # viewer rotates it 90 degrees clockwise): upright it is tall, black on top.
    a = np.zeros((32, 64), dtype=np.uint8)
    a[:, 32:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(tmp_path / "rot.jpg", a, exif=exif, quality=95)
    _save(tmp_path / "plain.jpg", a, quality=95)
    x = decode_image(str(tmp_path / "rot.jpg"), (64, 32))[..., 0]
    assert x[:24].mean() < 0.1 and x[-24:].mean() > 0.9
    plain = decode_image(str(tmp_path / "plain.jpg"), (32, 64))[..., 0]
    assert plain[:, :24].mean() < 0.1 and plain[:, -24:].mean() > 0.9


def test_resize_is_antialiased(tmp_path):
    # A one-pixel checkerboard shrunk 8x must come out mid-gray, not aliased to black or white.
    a = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    _save(tmp_path / "c.png", a)
    x = decode_image(str(tmp_path / "c.png"), (8, 8))
    assert np.all(np.abs(x - 0.5) < 0.05)


# --------------------------------------------------------------------------- engines


def test_engines_identical_bit_for_bit(mixed, client):
    for color in ("gray", "rgb"):
        local = read_images(mixed, size=(24, 16), color=color)
        lazy = read_images(mixed, size=(24, 16), color=color, engine="dask", chunk_size=4)
        assert local.engine == "local" and lazy.engine == "dask"
        assert isinstance(local.X, np.ndarray) and local.y.dtype == np.int64
        assert lazy.X.chunks == ((4, 4, 1), (24,), (16,), (3 if color == "rgb" else 1,))
        assert lazy.paths == local.paths and lazy.classes == local.classes == ["A", "B"]
        computed = lazy.to_numpy(client=client)
        assert_engines_equal(local.X, computed.X)
        assert_engines_equal(local.y, computed.y)
        assert 0.0 <= local.X.min() and local.X.max() <= 1.0
    # Hidden files/folders and non-image extensions were ignored; every image was kept.
    names = sorted(os.path.basename(p) for p in local.paths)
    assert names == sorted(
        ["rgb.jpg", "gray.jpeg", "l8.png", "l16.png", "rgba.png"]
        + ["rgb.bmp", "l.tif", "l16.tiff", "pal.PNG"]
    )
    assert local.counts() == {"A": 5, "B": 4}
    assert local.skipped == []


def test_dask_engine_is_lazy_and_raises_at_compute(tmp_path, client):
    root = _write_two_classes(tmp_path / "d")
    good = (root / "cats" / "0.png").read_bytes()
    (root / "dogs" / "trunc.png").write_bytes(good[: len(good) // 2])  # header fine, pixels not
    ds = read_images(root, size=8, engine="dask", chunk_size=2)  # nothing decoded yet
    assert len(ds) == 7 and ds.X.shape == (7, 8, 8, 1)
    with pytest.raises(ImageReadError, match="trunc.png"):
        client.compute(ds.X).result()
    with pytest.raises(ImageReadError, match="trunc.png"):
        ds.to_numpy(client=client)
    with pytest.raises(ImageReadError, match="trunc.png"):
        read_images(root, size=8, engine="local")


def test_persist_and_to_numpy(tmp_path, client):
    root = _write_two_classes(tmp_path / "d")
    ds = read_images(root, size=8, engine="dask", chunk_size=4)
    p = ds.persist(client=client)
    assert p.engine == "dask" and p.X.chunks == ds.X.chunks
    local = p.to_numpy(client=client)
    assert local.engine == "local" and isinstance(local.y, np.ndarray)
    assert_engines_equal(read_images(root, size=8).X, local.X)
    # Chunked along other axes too (a user rechunked X): still computed right.
    ds.X = ds.X.rechunk((4, 4, 4, 1))
    assert_engines_equal(local.X, ds.to_numpy(client=client).X)
    plain = read_images(root, size=8)
    assert plain.persist() is plain
    copy = plain.to_numpy()
    assert copy.X is not plain.X and np.array_equal(copy.X, plain.X)


def test_chunk_size_default_is_the_setting(tmp_path):
    # Regression: the dasktrain.images.chunk-size setting was ignored by read_images.
    import dask.config

    root = _write_two_classes(tmp_path / "d", n=5)
    with dask.config.set({"dasktrain.images.chunk-size": 3}):
        ds = read_images(root, size=8, engine="dask")
        assert ds.X.chunks[0] == (3, 3, 3, 1)
        assert read_images(root, size=8, engine="dask", chunk_size=4).X.chunks[0] == (4, 4, 2)
    with dask.config.set({"dasktrain.images.chunk-size": 0}):
        with pytest.raises(ValidationError, match="chunk_size=0"):
            read_images(root, size=8, engine="dask")


# --------------------------------------------------------------------------- other inputs


def test_pairs_and_dataframes(tmp_path, client):
    root = _write_two_classes(tmp_path / "d")
    ref = read_images(root, size=8)
    pairs = [(p, os.path.basename(os.path.dirname(p))) for p in ref.paths]
    from_pairs = read_images(pairs, size=8)
    assert_engines_equal(ref.X, from_pairs.X)
    assert from_pairs.classes == ["cats", "dogs"]
    np.testing.assert_array_equal(ref.y, from_pairs.y)

    df = pd.DataFrame({"path": [p for p, _ in pairs], "label": [lab for _, lab in pairs]})
    assert_engines_equal(ref.X, read_images(df, size=8).X)
    import dask.dataframe as dd

    ddf = dd.from_pandas(df, npartitions=2)
    lazy = read_images(ddf, size=8, engine="dask")
    assert_engines_equal(ref.X, lazy.to_numpy(client=client).X)
    # Integer labels keep their numeric order: 2 before 10.
    ints = read_images([(p, 10 if lab == "cats" else 2) for p, lab in pairs], size=8)
    assert ints.classes == ["2", "10"]
    assert ints.counts() == {"2": 3, "10": 3}
    with pytest.raises(ValidationError, match="'path' and 'label'"):
        read_images(df.rename(columns={"label": "y"}))
    with pytest.raises(ValidationError, match="pairs"):
        read_images([("a.png",)])
    with pytest.raises(DatasetLayoutError, match="empty"):
        read_images([])


def test_symlinked_class_folder_is_read_and_link_loops_end(tmp_path):
    # Regression: os.walk did not follow symlinks, so a linked class folder vanished silently.
    root = _write_two_classes(tmp_path / "data", n=2)
    _write_two_classes(tmp_path / "elsewhere", n=3)
    (root / "birds").symlink_to(tmp_path / "elsewhere" / "cats", target_is_directory=True)
    (root / "cats" / "loop").symlink_to(root, target_is_directory=True)  # must not recurse
    ds = read_images(root, size=(8, 8))
    assert ds.classes == ["birds", "cats", "dogs"]
    assert ds.counts() == {"birds": 3, "cats": 2, "dogs": 2}


def test_classes_order_and_subset(tmp_path):
    root = _write_two_classes(tmp_path / "d")
    _save(root / "birds" / "0.png", GRAD8)
    default = read_images(root, size=8)
    assert default.classes == ["birds", "cats", "dogs"]
    flipped = read_images(root, size=8, classes=["dogs", "cats"])
    assert flipped.classes == ["dogs", "cats"] and len(flipped) == 6
    assert all(
        flipped.classes[k] == os.path.basename(os.path.dirname(p))
        for k, p in zip(flipped.y, flipped.paths)
    )
    with pytest.raises(DatasetLayoutError, match="'fish'"):
        read_images(root, classes=["cats", "fish"])
    with pytest.raises(DatasetLayoutError, match="one class"):
        read_images(root, classes=["cats"])
    with pytest.raises(ValidationError, match="more than once"):
        read_images(root, classes=["cats", "cats"])
    with pytest.raises(ValidationError, match="list of class names"):
        read_images(root, classes="cats")


# --------------------------------------------------------------------------- bad input


def test_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no image files"):
        read_images(tmp_path / "empty")
    (tmp_path / "only_text" / "a").mkdir(parents=True)
    (tmp_path / "only_text" / "a" / "x.txt").write_text("x")
    with pytest.raises(DatasetLayoutError, match="no image files"):
        read_images(tmp_path / "only_text")
    _save(tmp_path / "flat" / "x.png", GRAD8)
    with pytest.raises(DatasetLayoutError, match="no class sub-folders"):
        read_images(tmp_path / "flat")
    _save(tmp_path / "one" / "NORMAL" / "x.png", GRAD8)
    with pytest.raises(DatasetLayoutError, match="only one class"):
        read_images(tmp_path / "one")
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        read_images(tmp_path / "missing")
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        read_images(tmp_path / "flat" / "x.png")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"color": "grey"}, "color='grey'"),
        ({"color": None}, "color=None"),
        ({"size": 0}, "size=0"),
        ({"size": (8, 8, 3)}, "size="),
        ({"size": (8.0, 8)}, "size="),
        ({"size": "big"}, "size='big'"),
        ({"size": True}, "size=True"),
        ({"errors": "ignore"}, "errors='ignore'"),
        ({"engine": "spark"}, "engine='spark'"),
        ({"chunk_size": 0}, "chunk_size=0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    root = _write_two_classes(tmp_path / "d", n=1)
    with pytest.raises(ValidationError, match=match.replace("(", r"\(")):
        read_images(root, **kwargs)


def _add_bad_files(root):
    (root / "cats" / "text.png").write_text("this is not a png")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    good = (root / "dogs" / "0.png").read_bytes()
    (root / "dogs" / "trunc.png").write_bytes(good[: len(good) // 2])


def test_errors_raise_names_every_bad_file_up_front(tmp_path):
    root = _write_two_classes(tmp_path / "d")
    _add_bad_files(root)
    for engine in ("local", "dask"):  # the dask engine raises before anything is computed
        with pytest.raises(ImageReadError) as info:
            read_images(root, size=8, engine=engine)
        msg = str(info.value)
        assert "text.png" in msg and "empty.jpg" in msg and "errors='skip'" in msg
        assert isinstance(info.value, OSError)


def test_errors_skip_keeps_every_valid_image(tmp_path, as_default):
    root = _write_two_classes(tmp_path / "d")
    _add_bad_files(root)
    with pytest.warns(SkippedFilesWarning, match="3 unreadable"):
        local = read_images(root, size=8, errors="skip")
    with pytest.warns(SkippedFilesWarning, match="3 unreadable"):
        lazy = read_images(root, size=8, errors="skip", engine="dask", chunk_size=2)
    for ds in (local, lazy):
        assert len(ds) == 6 and ds.counts() == {"cats": 3, "dogs": 3}
        assert sorted(os.path.basename(p) for p, _ in ds.skipped) == [
            "empty.jpg",
            "text.png",
            "trunc.png",
        ]
        assert all(reason for _, reason in ds.skipped)
        assert "skipped: 3" in repr(ds)
    assert lazy.X.chunks[0] == (2, 2, 2)
    assert_engines_equal(local.X, lazy.X)


def test_local_threads_decode_the_same_rows_in_the_same_order(tmp_path):
    # Thousands of files, bad ones among them: threads side by side must give the serial
    # read's array bit for bit, the same labels and paths, and the same skipped files.
    from dasktrain import _threads

    root = _write_two_classes(tmp_path / "d", n=600, side=16)
    good = (root / "dogs" / "0.png").read_bytes()
    for name in ("cats/0100_trunc.png", "dogs/0450_trunc.png", "dogs/0599_trunc.png"):
        (root / name).write_bytes(good[: len(good) // 2])  # header fine, pixels not
    with pytest.warns(SkippedFilesWarning, match="3 unreadable"):
        one = read_images(root, size=12, errors="skip", n_threads=1)
    with pytest.warns(SkippedFilesWarning, match="3 unreadable"):
        three = read_images(root, size=12, errors="skip", n_threads=3)
    assert 3 in _threads._POOLS  # the threaded path ran
    assert len(one) == 1200
    np.testing.assert_array_equal(one.X, three.X)
    np.testing.assert_array_equal(one.y, three.y)
    assert one.paths == three.paths and one.skipped == three.skipped
    with pytest.raises(ImageReadError, match="0100_trunc.png") as info:
        read_images(root, size=12, n_threads=3)
    assert "0450_trunc.png" in str(info.value) and "0599_trunc.png" in str(info.value)
    with pytest.raises(ValidationError, match="n_threads=0"):
        read_images(root, size=12, n_threads=0)


def test_all_files_unreadable(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.png").write_text("nope")
    for engine in ("local", "dask"):
        with pytest.raises(ImageReadError, match="none of the files"):
            read_images(tmp_path, errors="skip", engine=engine)


def test_missing_file_in_pairs(tmp_path):
    root = _write_two_classes(tmp_path / "d", n=1)
    pairs = [(root / "cats" / "0.png", "cats"), (root / "dogs" / "0.png", "dogs")]
    with pytest.raises(ImageReadError, match="gone.png"):
        read_images(pairs + [(root / "gone.png", "dogs")], size=8)


# --------------------------------------------------------------------------- ImageSet


def test_train_test_split_stratified_and_engine_parity(tmp_path, client):
    rng = np.random.default_rng(0)
    root = tmp_path / "s"
    for c, n in (("a", 30), ("b", 10)):
        for i in range(n):
            _save(root / c / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    local = read_images(root, size=6)
    tr, te = local.train_test_split(test_size=0.25, seed=3)
    assert len(tr) == 30 and len(te) == 10
    assert te.counts() == {"a": 8, "b": 2} and tr.counts() == {"a": 22, "b": 8}
    assert not set(tr.paths) & set(te.paths)
    assert tr.paths == sorted(tr.paths, key=local.paths.index)  # original order kept
    # Same seed, same split on the dask engine, still lazy with known chunks.
    lazy = read_images(root, size=6, engine="dask", chunk_size=16)
    ltr, lte = lazy.train_test_split(test_size=0.25, seed=3)
    assert ltr.engine == "dask" and not any(np.isnan(c) for c in ltr.X.chunks[0])
    assert ltr.paths == tr.paths
    assert_engines_equal(tr.X, ltr.to_numpy(client=client).X)
    assert_engines_equal(te.y, lte.to_numpy(client=client).y)
    other, _ = local.train_test_split(test_size=0.25, seed=4)
    assert other.paths != tr.paths
    unstrat = [
        local.train_test_split(0.25, stratify=False, seed=s)[1].counts()["b"] for s in range(8)
    ]
    assert len(set(unstrat)) > 1  # without stratification the class mix varies
    with pytest.raises(ValidationError, match="test_size"):
        local.train_test_split(test_size=1.5)


def test_repr_and_len(tmp_path):
    root = _write_two_classes(tmp_path / "d")
    ds = read_images(root, size=8)
    r = repr(ds)
    assert "engine='local'" in r and "n=6" in r and "cats" in r and "dogs" in r
    assert "in memory" in r and len(ds) == 6
    lazy = read_images(root, size=8, engine="dask", chunk_size=4)
    r = repr(lazy)
    assert "engine='dask'" in r and "2 along samples" in r and "sizes known" in r
    assert isinstance(lazy, ImageSet)


def test_scan_images(mixed, tmp_path):
    (mixed / "train" / "A" / "bad.png").write_text("nope")
    s = scan_images(mixed)
    assert s["counts"] == {"A": 5, "B": 4}
    assert [os.path.basename(p) for p, _ in s["unreadable"]] == ["bad.png"]
    assert s["formats"]["PNG"] == 4 and s["formats"]["JPEG"] == 2
    assert s["modes"]["I;16"] == 2 and s["modes"]["P"] == 1
    assert s["sizes"][(256, 256)] == 2


# --------------------------------------------------------------------------- unreadable input
# Regressions of issue 11: folders that cannot be listed vanished silently, a class folder
# linked to a sibling relabelled its images, float images were clipped or kept NaN, and a named
# pipe called pipe.png blocked every reader forever.

ENGINES = ("local", "dask")


@pytest.mark.timeout(60)  # the old code blocked forever on the pipe
@pytest.mark.parametrize("engine", ENGINES)
def test_non_regular_files_are_refused_not_opened(tmp_path, engine):
    import socket

    root = _write_two_classes(tmp_path / "d", n=2, side=8)
    os.mkfifo(root / "cats" / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "dogs" / "sock.jpg"))
    (root / "dogs" / "zero.png").symlink_to("/dev/zero")  # a character device
    try:
        with pytest.raises(ImageReadError) as info:
            read_images(root, size=8, engine=engine)
        msg = str(info.value)
        assert "pipe.png is a named pipe, not a regular file" in msg
        assert "sock.jpg is a socket" in msg and "zero.png is a character device" in msg
        with pytest.warns(SkippedFilesWarning, match="3 unreadable"):
            ds = read_images(root, size=8, engine=engine, errors="skip")
        assert ds.counts() == {"cats": 2, "dogs": 2}
        assert sorted(os.path.basename(p) for p, _ in ds.skipped) == [
            "pipe.png",
            "sock.jpg",
            "zero.png",
        ]
        assert np.asarray(ds.X).shape == (4, 8, 8, 1)
        s = scan_images(root, decode=True)
        assert len(s["unreadable"]) == 3 and s["counts"] == {"cats": 2, "dogs": 2}
        # explicit pairs go through the same check
        with pytest.raises(ImageReadError, match="named pipe"):
            read_images([(root / "cats" / "pipe.png", "a"), (root / "cats" / "0.png", "b")])
    finally:
        sock.close()


@pytest.mark.timeout(60)
def test_cli_images_lists_a_named_pipe(tmp_path, capsys):
    from dasktrain import cli

    root = _write_two_classes(tmp_path / "d", n=2, side=8)
    os.mkfifo(root / "cats" / "pipe.png")
    assert cli.main(["images", str(root)]) == 1
    out = capsys.readouterr().out
    assert "pipe.png" in out and "named pipe" in out


_UNPRIVILEGED = """
import os, pickle, sys, warnings
import numpy as np, PIL.Image, PIL.ImageOps, dask, dask.array, dask.threaded, distributed
PIL.Image.init()  # Pillow imports its format plugins lazily
from dasktrain.images import list_images, read_images, scan_images
root, engine = sys.argv[1], sys.argv[2]
if os.geteuid() == 0:  # drop root only now: the interpreter lives in a folder nobody can read
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = %s
    out = ("ok", value, [str(w.message) for w in caught])
except Exception as exc:
    out = ("err", type(exc).__name__, str(exc))
sys.stdout.buffer.write(pickle.dumps(out))
"""


def _unprivileged(expr, root, engine="local"):
    """Evaluate ``expr`` (with ``root`` and ``engine`` bound) in a fresh interpreter that cannot
    read what a user cannot: ``("ok", value, warnings)`` or ``("err", type name, message)``.

    Tests run as root in CI containers, where chmod 000 does not stop a listing: the child then
    drops to the ``nobody`` user once its imports are done (a real permission failure, no
    mock). A fork of the test process is not used: it deadlocks on the cluster's threads.
    """
    import pickle
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED % expr, str(root), engine],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return pickle.loads(proc.stdout)


@pytest.fixture
def world_readable(tmp_path):
    """A data folder the ``nobody`` user can reach (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="dasktrain-perm-")
    os.chmod(base, 0o755)
    root = _write_two_classes(__import__("pathlib").Path(base) / "d", n=2, side=8)
    _save(root / "birds" / "0.png", GRAD8)
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    yield root
    for dirpath, dirnames, _ in os.walk(base):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    os.chmod(root / "dogs", 0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("engine", ENGINES)
def test_unreadable_class_folder_is_reported_not_dropped(world_readable, engine):
    root = world_readable
    os.chmod(root / "dogs", 0o000)
    out = _unprivileged("read_images(root, size=8, engine=engine).counts()", root, engine)
    assert out[0] == "err" and out[1] == "ImageReadError", out
    assert str(root / "dogs") in out[2] and "could not be listed" in out[2]
    assert "PermissionError" in out[2] and "errors='skip'" in out[2]

    skip = (
        "(lambda ds: (ds.counts(), [p for p, _ in ds.skipped], np.asarray(ds.X).shape))("
        "read_images(root, size=8, engine=engine, errors='skip'))"
    )
    out = _unprivileged(skip, root, engine)
    assert out[0] == "ok", out
    (counts, skipped, shape), warned = out[1], out[2]
    assert counts == {"birds": 1, "cats": 2} and shape == (3, 8, 8, 1)
    assert skipped == [str(root / "dogs")]
    assert any("1 unreadable" in w for w in warned)
    # list_images has no skip mode: it raises too; scan_images reports the folder.
    assert _unprivileged("list_images(root)", root)[:2] == ("err", "ImageReadError")
    out = _unprivileged("[p for p, _ in scan_images(root)['unreadable']]", root)
    assert out[1] == [str(root / "dogs")]


def test_unreadable_root_and_lone_class_left(world_readable):
    root = world_readable
    os.chmod(root / "dogs", 0o000)
    os.chmod(root / "birds", 0o000)
    # With one readable class left, the error says which folders were unlisted (not just
    # "only one class").
    out = _unprivileged("read_images(root, size=8, errors='skip')", root)
    assert out[:2] == ("err", "ImageReadError") and "birds" in out[2] and "dogs" in out[2]
    os.chmod(root, 0o000)
    out = _unprivileged("read_images(root, size=8)", root)
    assert out[:2] == ("err", "ImageReadError") and str(root) in out[2]


@pytest.mark.parametrize("engine", ENGINES)
def test_class_folder_linked_to_a_sibling_is_refused(tmp_path, engine):
    root = _write_two_classes(tmp_path / "d", n=2)
    (root / "birds").symlink_to(root / "cats", target_is_directory=True)
    with pytest.raises(DatasetLayoutError) as info:
        read_images(root, size=8, engine=engine)
    msg = str(info.value)
    assert str(root / "birds") in msg and str(root / "cats") in msg and "read twice" in msg
    with pytest.raises(DatasetLayoutError, match="same folder"):
        scan_images(root)


def test_same_folder_linked_from_two_splits_is_refused(tmp_path):
    data = _write_two_classes(tmp_path / "elsewhere", n=2)
    root = tmp_path / "d"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        (root / split / "cats").symlink_to(data / "cats", target_is_directory=True)
        (root / split / "dogs").symlink_to(data / "dogs", target_is_directory=True)
    with pytest.raises(DatasetLayoutError, match="read twice"):
        read_images(root, size=8)
    ds = read_images(root / "train", size=8)  # one split alone is fine
    assert ds.counts() == {"cats": 2, "dogs": 2}


def _float_tiffs(root):
    tifffile = pytest.importorskip("tifffile")
    good = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        tifffile.imwrite(root / c / "good.tif", good)
    nan = good.copy()
    nan[3, 3] = np.nan
    tifffile.imwrite(root / "a" / "nan.tif", nan)
    inf = good.copy()
    inf[0, 0] = np.inf
    tifffile.imwrite(root / "b" / "inf.tif", inf)
    tifffile.imwrite(root / "b" / "byte_range.tif", good * 255)
    return good


@pytest.mark.parametrize("engine", ENGINES)
def test_float_images_nan_inf_and_out_of_range_are_refused(tmp_path, engine, as_default):
    root = tmp_path / "f"
    good = _float_tiffs(root)
    with pytest.raises(ImageReadError) as info:  # dask: lazy, raises at compute time
        read_images(root, size=8, engine=engine).to_numpy()
    msg = str(info.value)
    assert "nan.tif" in msg or "inf.tif" in msg or "byte_range.tif" in msg
    if engine == "local":  # every bad file of the read is named at once
        assert "nan.tif: ValueError: float image holds 1 NaN or infinite" in msg
        assert "inf.tif" in msg
        assert "byte_range.tif: ValueError: float image has values in [0, 255]" in msg
    with pytest.warns(SkippedFilesWarning, match="3 unreadable"):
        ds = read_images(root, size=8, engine=engine, errors="skip")
    assert sorted(os.path.basename(p) for p, _ in ds.skipped) == [
        "byte_range.tif",
        "inf.tif",
        "nan.tif",
    ]
    X = ds.to_numpy().X
    assert X.shape == (2, 8, 8, 1) and np.isfinite(X).all()
    np.testing.assert_array_equal(X[0, ..., 0], good)  # a float image in [0, 1] is kept as is


def test_decode_image_refuses_float_out_of_range(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "x.tif", np.full((4, 4), 2.5, np.float32))
    with pytest.raises(ValueError, match=r"values in \[2.5, 2.5\], outside \[0, 1\]"):
        decode_image(str(tmp_path / "x.tif"), (4, 4))


def test_the_dask_engine_checks_headers_on_the_workers(tmp_path, as_default):
    # The header check was a serial pass on this machine before any task ran (a fifth of a
    # 2-worker read of JPEGs); the workers, which read the files anyway, now do it in parallel.
    from distributed import get_task_stream

    root = _write_two_classes(tmp_path / "d", n=6)
    _add_bad_files(root)
    with get_task_stream(as_default) as ts:
        with pytest.raises(ImageReadError) as info:
            read_images(root, size=8, engine="dask", chunk_size=4)
    assert any(t["key"].startswith("probe-images") for t in ts.data)
    assert "text.png" in str(info.value) and "empty.jpg" in str(info.value)  # still up front


def test_a_file_the_workers_cannot_see_says_so(tmp_path):
    from dasktrain.images._workers import not_seen_by_workers

    here = tmp_path / "here.png"
    here.write_bytes(b"x")
    bad = [
        (str(here), "FileNotFoundError: [Errno 2] No such file or directory"),
        (str(tmp_path / "gone.png"), "FileNotFoundError: [Errno 2] No such file or directory"),
    ]
    out = dict(not_seen_by_workers(bad))
    assert "exists on this machine but not on the worker" in out[str(here)]
    assert out[str(tmp_path / "gone.png")] == bad[1][1]
