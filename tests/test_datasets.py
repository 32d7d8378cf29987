"""Built-in data: the Kaggle layout, 8- and 16-bit PNG, determinism, learnable but not trivial."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from dasktrain.datasets import XRAY_CLASSES, digits_folder, make_xray_like
from dasktrain.exceptions import ValidationError
from dasktrain.images import read_images


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    return make_xray_like(tmp_path_factory.mktemp("x") / "chest_xray", n_per_class=40, size=48)


def test_xray_layout_and_bit_depths(xray):
    assert sorted(p.name for p in xray.iterdir()) == ["test", "train"]
    for split in ("train", "test"):
        assert sorted(p.name for p in (xray / split).iterdir()) == list(XRAY_CLASSES)
    files = sorted(xray.rglob("*.png"))
    assert len(files) == 80
    assert len(list((xray / "test" / "NORMAL").iterdir())) == 10
    modes = {Image.open(p).mode for p in files}
    assert modes == {"L", "I;16"}
    n16 = sum(Image.open(p).mode == "I;16" for p in files)
    assert 0 < n16 < len(files) // 2
    assert {Image.open(p).size for p in files} == {(48, 48)}


def test_xray_is_deterministic(xray, tmp_path):
    again = make_xray_like(tmp_path / "again", n_per_class=40, size=48)
    assert _digest(again) == _digest(xray)
    other = make_xray_like(tmp_path / "other", n_per_class=40, size=48, seed=1)
    assert _digest(other) != _digest(xray)


def test_xray_is_learnable_but_not_trivial(xray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = read_images(xray / "train", size=24)
    test = read_images(xray / "test", size=24)
    assert train.classes == list(XRAY_CLASSES) and train.counts() == {"NORMAL": 30, "PNEUMONIA": 30}
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(train.X.reshape(len(train), -1), train.y)
    acc = model.score(test.X.reshape(len(test), -1), test.y)
    # The data are deterministic, so this is one fixed number (0.80 when written): a linear
    # model on raw pixels learns it, but not perfectly.
    assert 0.7 <= acc < 1.0
    # The mean brightness alone must not separate the classes.
    means = train.X.mean(axis=(1, 2, 3))
    assert means[train.y == 0].max() > means[train.y == 1].min()


def test_xray_arguments(tmp_path):
    with pytest.raises(ValidationError, match="n_per_class"):
        make_xray_like(tmp_path, n_per_class=1)
    with pytest.raises(ValidationError, match="test_size"):
        make_xray_like(tmp_path, n_per_class=4, test_size=1.0)
    with pytest.raises(ValidationError, match="size"):
        make_xray_like(tmp_path, n_per_class=4, size=4)


def test_digits_folder(tmp_path):
    from sklearn.datasets import load_digits

    root = digits_folder(tmp_path / "digits", n_per_class=5)
    ds = read_images(root, size=8)
    assert ds.classes == [str(i) for i in range(10)] and len(ds) == 50
    digits = load_digits()
    first0 = digits.images[digits.target == 0][0]
    np.testing.assert_allclose(ds.X[0, :, :, 0], np.round(first0 * 255 / 16) / 255, atol=1e-7)
    bmp = read_images(digits_folder(tmp_path / "bmp", n_per_class=2, fmt="bmp"), size=8)
    assert len(bmp) == 20
    with pytest.raises(ValidationError, match="fmt="):
        digits_folder(tmp_path / "x", fmt="gif")


# ------------------------------------------------------------------------- sizes (issue 10)


def test_xray_same_files_whatever_the_number_of_processes(tmp_path):
    # 600 images: three batches, so n_jobs=2 really writes from two spawned processes.
    one = make_xray_like(tmp_path / "one", n_per_class=300, size=16, n_jobs=1)
    two = make_xray_like(tmp_path / "two", n_per_class=300, size=16, n_jobs=2)
    assert len(list(one.rglob("*.png"))) == 600
    assert _digest(one) == _digest(two)


def test_xray_counts_per_class(tmp_path):
    root = make_xray_like(tmp_path / "x", n_per_class={"NORMAL": 6, "PNEUMONIA": 17}, size=16)
    counts = {
        (split, c): len(list((root / split / c).iterdir()))
        for split in ("train", "test")
        for c in XRAY_CLASSES
    }
    assert counts == {
        ("train", "NORMAL"): 4,
        ("test", "NORMAL"): 2,
        ("train", "PNEUMONIA"): 13,
        ("test", "PNEUMONIA"): 4,
    }
    # The same image whether its class has 6 or 300 siblings: each has its own generator.
    again = make_xray_like(tmp_path / "y", n_per_class=6, size=16)
    name = "train/NORMAL/normal_0005.png"
    assert (root / name).read_bytes() == (again / name).read_bytes()
    with pytest.raises(ValidationError, match="PNEUMONIA"):
        make_xray_like(tmp_path / "z", n_per_class={"NORMAL": 6})
    with pytest.raises(ValidationError, match="n_per_class"):
        make_xray_like(tmp_path / "z", n_per_class={"NORMAL": 6, "PNEUMONIA": 1})


def test_xray_names_sort_in_index_order_past_10000(tmp_path):
    from dasktrain.datasets import _xray_name

    names = [_xray_name("NORMAL", i, 12_000) for i in (5, 999, 9999, 10000, 11999)]
    assert names == sorted(names) and names[0] == "normal_00005.png"
    # the usual sizes keep their 4-digit names
    root = make_xray_like(tmp_path / "x", n_per_class=3, size=16)
    assert sorted(p.name for p in (root / "train" / "NORMAL").iterdir()) == [
        "normal_0001.png",
        "normal_0002.png",
    ]


# VmHWM, the peak RSS of this process's own memory: ru_maxrss would also count the peak of
# the (large) pytest process that forked it, which Linux keeps across exec.
_PEAK_RSS = """
import sys
from dasktrain.datasets import make_xray_like, digits_folder
n = int(sys.argv[2])
make_xray_like(sys.argv[1] + "/x", n_per_class=n, size=32, n_jobs=1)
digits_folder(sys.argv[1] + "/d", n_per_class=n)
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")))
"""


def _peak_rss(tmp_path, n):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(tmp_path / str(n)), str(n)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1])


@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
def test_xray_memory_does_not_grow_with_the_number_of_images(tmp_path):
    # The old generator held every image of a class and its intermediates in float64 at once
    # (23.6 GB for 20,000 per class at 128x128): here 30x more images must cost no more memory.
    small, large = _peak_rss(tmp_path, 100), _peak_rss(tmp_path, 3000)
    assert large < 1e9, (small, large)
    assert large - small < 40e6, (small, large)


def test_xray_into_a_file_is_a_clear_error(tmp_path):
    # Regression (issue 27, item 10): a bare NotADirectoryError naming train/NORMAL.
    f = tmp_path / "afile"
    f.write_text("keep")
    with pytest.raises(ValidationError, match=r"path=.*afile.*not a folder"):
        make_xray_like(f, n_per_class=2, size=16)
    with pytest.raises(ValidationError, match=r"afile.*not a folder"):
        make_xray_like(f / "sub", n_per_class=2, size=16)
    with pytest.raises(ValidationError, match=r"afile.*not a folder"):
        digits_folder(f, n_per_class=1)
    assert f.read_text() == "keep"


def test_make_xray_like_in_a_script_without_a_main_guard(tmp_path, run_script):
    # The pool's processes run the script again: each stops at once saying why, and the
    # images are written here (same files), not by pools started in the pool's processes.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from dasktrain.datasets import make_xray_like\n"
        f"make_xray_like({str(tmp_path / 'xr')!r}, n_per_class=1000, size=16)\n"
        "print('written')\n"
    )
    rc, out, took = run_script(script, timeout=180)
    assert rc == 0 and "written" in out, out[-2000:]
    assert "UnguardedScriptError" in out and 'if __name__ == "__main__":' in out
    assert len(list((tmp_path / "xr").rglob("*.png"))) == 2000
    assert took < 120, took
