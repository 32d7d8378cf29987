#!/usr/bin/env bash
# Minimum versions: pyproject.toml's lower bounds are a claim; this tests it (.ci/run runs it
# after `make test`; it also runs alone: `.ci/minimums.sh`). A throw-away venv gets every core
# dependency pinned to its bound (.ci/minimums.py), the test extra at its newest, and no torch
# or TensorFlow (so this is also the "core install alone" check of the torch-free paths).
# It cannot touch the main venv: it lives in a fresh temporary folder (a stale one could keep
# packages that are not at their bounds, torch among them), deleted on exit, and only its own
# interpreter is called, with the caller's venv, PYTHONPATH and user site-packages left out.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN_VENV="$(mktemp -d "${TMPDIR:-/tmp}/dasktrain-min.XXXXXX")"
trap 'rm -rf "$MIN_VENV"' EXIT
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
export PYTHONNOUSERSITE=1
PY="$MIN_VENV/bin/python"
SECONDS=0

python3 -m venv "$MIN_VENV"
# XGBoost is an extra: its CPU-only wheel (the same API, without nvidia-nccl-cu12's 469 MB).
"$PY" .ci/minimums.py xgboost-cpu > "$MIN_VENV/constraints.txt"
# uv (installed into this venv only) resolves and installs the same pins as pip in about 40 s
# where pip takes about 3 minutes (measured on the 2-core dev machine); pip if uv is unavailable.
if "$PY" -m pip install -q --only-binary=:all: uv; then
    INSTALL=("$MIN_VENV/bin/uv" pip install -q --python "$PY")
else
    INSTALL=("$PY" -m pip install -q)
fi
"${INSTALL[@]}" --only-binary=:all: -c "$MIN_VENV/constraints.txt" -e ".[test,xgboost-cpu]"
"$PY" -m pip list --format=freeze | grep -i -E \
    '^(numpy|pandas|dask|distributed|dask-ml|scikit-learn|scikit-image|xgboost|xgboost-cpu|pillow|zarr|pyarrow|fsspec|s3fs|bokeh|psutil|tqdm)=='
# The step checks what it claims: its own interpreter, and neither torch nor TensorFlow there.
"$PY" - "$MIN_VENV" <<'PY'
import importlib.util, os, sys
assert os.path.realpath(sys.prefix) == os.path.realpath(sys.argv[1]), sys.prefix
found = [m for m in ("torch", "tensorflow") if importlib.util.find_spec(m) is not None]
assert not found, f"the minimum-versions venv must not hold {found}"
PY
echo "minimum-versions venv built in ${SECONDS}s"

# The tests that exercise the version-sensitive APIs (test files named after what they
# check: scikit-learn's estimator contract, dask DataFrames, xgboost, dask-ml, zarr, pillow,
# scikit-image, bokeh, fsspec/s3fs), not the whole suite: the step has about 4 minutes. Left
# out: test_no_torch (its blocker is moot here, where torch is truly absent, and the code it
# runs is what the files below test) and the two unreadable-folder tests of test_images
# (file permissions, not versions; 25 s).
"$PY" -m pytest -q -p no:cacheprovider \
    tests/test_packaging.py tests/test_data_contract.py tests/test_classic.py tests/test_xgb.py \
    tests/test_kmeans.py tests/test_metrics.py tests/test_features_classic.py \
    tests/test_features_store.py tests/test_images.py tests/test_images_remote.py \
    tests/test_harness_report.py \
    --deselect "tests/test_images.py::test_unreadable_class_folder_is_reported_not_dropped" \
    --deselect "tests/test_images.py::test_unreadable_root_and_lone_class_left" "$@"
echo "minimum-versions step took ${SECONDS}s"
