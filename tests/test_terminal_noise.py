"""What reaches a user's terminal from a dask XGBoost fit and from compare() (issue 26, items 1
and 6).

Each test runs a script in a subprocess that starts its own LocalCluster (processes), as a
user's script does: the workers inherit its stdout and stderr, so what they print (xgboost's
C++ warnings, distributed's log records) lands in the captured streams too. Python is
unbuffered there, so the markers the script writes between the steps are in order with the
workers' lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import numpy as np
import dask.array as da


def mark(text):
    print(f"=== {text}", flush=True)


if __name__ == "__main__":
    import dasktrain
    from dasktrain.datasets import make_xray_like
    from dasktrain.models import XGBClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)).astype("float32")
    y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int)
    # As the README does: the user's own cluster, from dasktrain.connect().
    with dasktrain.connect(n_workers=2, threads_per_worker=1) as client:
        mark("fit")
        Xd, yd = da.from_array(X, chunks=100), da.from_array(y, chunks=100)
        XGBClassifier(engine="dask", n_estimators=5).fit(Xd, yd)
        mark("compare")
        # As the README and examples/kmeans_comparison.py do: images, features, models.
        root = make_xray_like(sys.argv[2], n_per_class=40, size=32)
        images = dasktrain.read_images(root / "train", size=(32, 32), color="gray")
        res = dasktrain.compare(["kmeans", "xgboost"], data=images, client=client, repeat=1,
                                progress=False, options={"n_estimators": 5, "image_size": 32})
        assert set(res.runs["status"]) == {"ok"}, res.runs[["workload", "status", "error"]]
        mark("compare with log")
        dasktrain.compare(["xgboost"], data=(X, y), client=client, repeat=1, progress=False,
                          options={"n_estimators": 5}, log=sys.argv[1])
        mark("end")
        XGBClassifier(engine="dask", n_estimators=5).fit(Xd, yd)
        mark("after")
"""


def _run(tmp_path, script, *args, timeout=240):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(path), *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order it was written
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc


def _noise(lines):
    """The lines that warn: a warning, xgboost's unused parameters, a log record's level."""
    words = ("warning", "are not used", " - info - ", " - error - ")
    return [ln for ln in lines if any(w in ln.lower() for w in words)]


def test_dask_fit_and_compare_on_my_client_print_no_warning(tmp_path):
    log = tmp_path / "libraries.log"
    proc = _run(tmp_path, SCRIPT, log, tmp_path / "xray")
    out = proc.stdout.splitlines()
    assert "=== after" in out, proc.stdout
    # xgboost's tracker lines ("Task [xgboost.dask-0]:tcp://... got rank 0") are not warnings:
    # plain xgboost.dask prints them too.
    noise = _noise(out)
    assert not noise, "\n".join(noise)
    # With log=..., what the libraries print goes to the log, also from the workers of the
    # user's own cluster (for the comparison's time only): nothing between the two markers.
    between = out[out.index("=== compare with log") + 1 : out.index("=== end")]
    assert between == [], between
    assert "got rank" in log.read_text()
    # ... for the comparison only: the workers write to the terminal again afterwards.
    after = out[out.index("=== end") + 1 : out.index("=== after")]
    assert any("got rank" in line for line in after), after


def test_kmeans_example_prints_no_warning(tmp_path):
    # Before: two "distributed.sizeof - WARNING - Sizeof calculation for object of type 'dict'
    # failed" lines from the workers (their profile, fetched for the performance report).
    example = ROOT / "examples" / "kmeans_comparison.py"
    args = ["--n-per-class", 40, "--repeat", 1, "--out", tmp_path / "report"]
    proc = _run(tmp_path, example.read_text(), *args)
    assert "report written to" in proc.stdout
    noise = _noise(proc.stdout.splitlines())
    assert not noise, "\n".join(noise)


KERAS = """
import numpy as np
import dask.array as da
from distributed import Client, LocalCluster

if __name__ == "__main__":
    from dasktrain.features import KerasFeatures

    X = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        F = KerasFeatures("vgg19").fit_transform(da.from_array(X, chunks=4)).compute()
        print("=== features", F.shape)
"""


def test_keras_on_dask_prints_no_tensorflow_banner(tmp_path):
    pytest.importorskip("tensorflow")
    # Before: "WARNING: All log messages before absl::InitializeLog() ...", "oneDNN custom
    # operations are on ..." and "This TensorFlow binary is optimized ..." from this process
    # and twice from every worker.
    proc = _run(tmp_path, KERAS)
    assert "=== features (8, 512)" in proc.stdout
    # A loaded machine may keep a TensorFlow worker past the nanny's 4 s at close
    # ("Worker process still alive after 4.0 seconds, killing"): distributed's shutdown,
    # which plain TensorFlow on a LocalCluster prints too, not a banner (1 full suite in 3).
    lines = [
        ln
        for ln in proc.stdout.splitlines()
        if not ln.startswith("=== ") and "Worker process still alive after" not in ln
    ]
    assert lines == [], "\n".join(lines)
