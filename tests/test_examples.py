"""Every script in ``examples/`` runs end to end on small built-in data (smoke tests).

Each example runs as a subprocess, as a user would run it, with its small-size flags and a
timeout; a new example without an entry in ``CASES`` fails the test that lists them, so
none is left untested.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SMALL = ["--n-per-class", "16", "--size", "32"]

# (example, small-size arguments, files expected under --out or None, text expected in stdout)
CASES = [
    (
        "chest_xray_pipeline.py",
        [*SMALL, "--engine", "dask", "--n-estimators", "10", "--chunk-size", "8"],
        None,
        "ROC AUC",
    ),
    (
        "chest_xray_pipeline.py",
        [*SMALL, "--engine", "local", "--n-estimators", "10"],
        None,
        "ROC AUC",
    ),
    ("kmeans_comparison.py", [*SMALL, "--repeat", "1"], ["report.html", "results.csv"], "kmeans"),
    (
        "xgboost_comparison.py",
        [*SMALL, "--repeat", "1", "--n-estimators", "10"],
        ["report.html", "results.csv"],
        "xgboost",
    ),
    (
        "custom_workload.py",
        [*SMALL, "--repeat", "1", "--components", "4"],
        ["report.html", "results.csv"],
        "pca_workload",
    ),
    ("ddp_cnn.py", [*SMALL, "--epochs", "1"], None, "2-rank acc"),
    ("ddp_mlp_features.py", [*SMALL, "--epochs", "1"], None, "2-rank acc"),
    ("keras_tf.py", [*SMALL, "--epochs", "1", "--path", "keras"], None, "2-rank acc"),
]
TIMEOUT = 120  # seconds per example; they take 10-30 s with the small flags on 2 cores


def test_every_example_has_smoke_arguments():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts, f"no examples found in {EXAMPLES}"
    listed = {case[0] for case in CASES}
    untested = scripts - listed
    missing = listed - scripts
    assert not untested, f"examples without smoke-test arguments in CASES: {sorted(untested)}"
    assert not missing, f"examples listed in CASES but missing: {sorted(missing)}"


@pytest.mark.parametrize(
    ("name", "args", "outputs", "expected"),
    CASES,
    ids=[
        next(
            (f"{c[0]}-{c[1][c[1].index(f) + 1]}" for f in ("--engine", "--path") if f in c[1]), c[0]
        )
        for c in CASES
    ],
)
def test_example_runs(name, args, outputs, expected, tmp_path):
    script = EXAMPLES / name
    if not script.is_file():
        pytest.fail(f"examples/{name} does not exist")
    if outputs is not None:
        args = [*args, "--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,  # anything an example writes by default lands in tmp_path
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        tail = exc.stdout or ""
        tail = (tail.decode(errors="replace") if isinstance(tail, bytes) else tail)[-3000:]
        pytest.fail(f"examples/{name} {' '.join(args)} ran past {TIMEOUT} s; output tail:\n{tail}")
    log = f"$ python examples/{name} {' '.join(args)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, log
    assert expected in proc.stdout, log
    for filename in outputs or []:
        assert (tmp_path / "out" / filename).is_file(), f"{filename} not written\n{log}"
    if outputs and "results.csv" in outputs:
        # A workload that raised or was unavailable still gets a row: the run must be real.
        with open(tmp_path / "out" / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows, f"results.csv is empty\n{log}"
        bad = [(r["workload"], r["engine"], r["status"], r.get("error")) for r in rows
               if r["status"] != "ok"]  # fmt: skip
        assert not bad, f"rows not ok: {bad}\n{log}"
        assert {r["engine"] for r in rows} == {"local", "dask"}, log
