"""The package's metadata (issue 15, item 7): licence, minimums that match the code, URLs.

Before: ``scikit-learn>=1.4`` and ``zarr>=2.16`` were declared while the code needed 1.6 and 3;
no LICENSE file; the licence was a TOML table (deprecated by PEP 639).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _minimums(project):
    out = {}
    for req in map(Requirement, project["dependencies"]):
        bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert bounds, f"{req} has no lower bound"
        out[req.name] = bounds[0]
    return out


def test_licence_is_spdx_with_its_file(project):
    assert project["license"] == "BSD-3-Clause", "an SPDX expression (PEP 639), not a table"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Redistribution and use in source and binary forms" in text
    assert "Neither the name of the copyright holder" in text  # the third clause
    # PEP 639: a licence expression and a licence classifier must not both be given.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert "setuptools>=77" in build["requires"], "PEP 639 needs setuptools 77"


def test_minimums_are_what_the_code_needs(project):
    low = _minimums(project)
    # validate_data / ensure_all_finite / __sklearn_tags__ (models/_base.py, on_worker.py)
    assert low["scikit-learn"] >= Version("1.6")
    # Group.create_array (features/store.py); 3.0.0-3.0.7 are yanked (zarr.load deleted data)
    assert low["zarr"] >= Version("3.0.8")
    # 16-bit grayscale PNG opens as "I;16" from pillow 10.3 (test_images asserts it)
    assert low["pillow"] >= Version("10.3")
    assert low["bokeh"] >= Version("3.2")  # figure.vstrip (harness/report/curves.py)
    # dask-ml 2025.1 is the first to work with scikit-learn 1.6, and it needs dask 2025.1
    assert low["dask-ml"] >= Version("2025.1")
    assert low["dask"] >= Version("2025.1") and low["distributed"] >= Version("2025.1")
    assert project["requires-python"] == ">=3.11"  # zarr 3 needs 3.11
    assert "fsspec" in low  # read_images opens remote paths through it


def test_no_code_for_pythons_the_package_does_not_run_on():
    """ruff's target is the required Python, and no module branches on an older one."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["ruff"]["target-version"] == "py311"
    assert config["project"]["requires-python"] == ">=3.11"
    old = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "dasktrain").rglob("*.py")
        if "version_info" in p.read_text() or "Python 3.10" in p.read_text()
    ]
    assert not old, f"branches for Python < 3.11 in {old}"


def test_make_test_type_checks_with_what_the_test_extra_installs(project):
    """`make test` runs mypy, which the test extra installs (a fresh `make install` has it)."""
    test_extra = [Requirement(r).name for r in project["optional-dependencies"]["test"]]
    assert "mypy" in test_extra
    make = (ROOT / "Makefile").read_text()
    target = make.split("\ntest: ")[1].split("\n\n")[0]
    assert "$(BIN)/python -m mypy" in target
    assert "test" in make.split("EXTRAS ?= ")[1].split("\n")[0]


def test_installed_versions_meet_the_minimums(project):
    from importlib.metadata import version

    for name, low in _minimums(project).items():
        assert Version(version(name)) >= low, (name, version(name), low)


def test_minimums_script_pins_every_bound(project):
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "minimums.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = dict(line.split("==") for line in out)
    assert {k: Version(v) for k, v in pins.items()} == _minimums(project)
    step = (ROOT / ".ci" / "minimums.sh").read_text()
    assert ".ci/minimums.py" in step and "-c " in step, "the step installs the minimums"
    run = (ROOT / ".ci" / "run").read_text()
    assert "DASKTRAIN_MINIMUMS:-1" in run and "\n    .ci/minimums.sh\n" in run, "CI runs it"


def test_classifiers(project):
    classifiers = set(project["classifiers"])
    for c in ("Framework :: Dask", "Typing :: Typed", "Programming Language :: Python :: 3.11"):
        assert c in classifiers
    assert len(classifiers) >= 10
    assert (ROOT / "dasktrain" / "py.typed").exists()


def _requirement_names(reqs):
    return {Requirement(r).name for r in reqs}


def test_core_install_pulls_no_cuda_and_xgboost_has_a_cpu_path(project):
    # Issue 26, item 8: `pip install dasktrain` pulled xgboost's CUDA-capable wheel and with it
    # nvidia-nccl-cu12 (469 MB of a 1.7 GB venv) on every machine. XGBoost is now an extra of
    # two kinds: the CPU-only wheel (the same module `xgboost`, no NCCL) or the usual one.
    core = _requirement_names(project["dependencies"])
    assert not {"xgboost", "xgboost-cpu"} & core
    extras = project["optional-dependencies"]
    assert _requirement_names(extras["xgboost-cpu"]) == {"xgboost-cpu"}
    assert _requirement_names(extras["xgboost"]) == {"xgboost"}
    # GPU users keep the CUDA-capable wheel, and never get both (they would overwrite each
    # other's files): only the CPU extra names xgboost-cpu.
    assert "xgboost" in _requirement_names(extras["gpu"])
    assert "xgboost" in extras["all"][0] and "xgboost-cpu" not in extras["all"][0]
    with_cpu = [name for name, reqs in extras.items() if "xgboost-cpu" in _requirement_names(reqs)]
    assert with_cpu == ["xgboost-cpu"]
    # The environments this project builds: `make install` takes either (XGBOOST=...), the
    # minimum-versions step the CPU-only one.
    assert "XGBOOST ?= xgboost" in (ROOT / "Makefile").read_text()
    assert '".[test,xgboost-cpu]"' in (ROOT / ".ci" / "minimums.sh").read_text()


BLOCK_XGBOOST = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "xgboost":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""

WITHOUT_XGBOOST = """
import json
import numpy as np
from dasktrain.exceptions import OptionalDependencyError
from dasktrain.harness import compare
from dasktrain.models import XGBClassifier

X = np.random.default_rng(0).random((40, 3))
y = np.arange(40) % 2
try:
    XGBClassifier(engine="local").fit(X, y)
    message = "no error"
except OptionalDependencyError as exc:
    message = str(exc)
res = compare(["xgboost", "logreg"], data=(X, y), engines=["local"], repeat=1, warmup=False,
              monitor=False, progress=False)
print(json.dumps({"message": message, "rows": res.runs[["workload", "status", "error"]]
                  .astype(str).values.tolist()}))
"""


def test_without_xgboost_the_error_names_both_extras(tmp_path):
    import json
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_XGBOOST)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_XGBOOST],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pip install 'dasktrain[xgboost]'" in out["message"], out
    assert "'dasktrain[xgboost-cpu]'" in out["message"], out
    rows = {w: (status, error) for w, status, error in out["rows"]}
    assert rows["logreg"][0] == "ok"
    assert rows["xgboost"][0] == "unavailable" and "dasktrain[xgboost-cpu]" in rows["xgboost"][1]


def test_git_ignores_no_file_of_the_package():
    # Regression: .gitignore's "report/" (the demo's output folder) ignored every folder of
    # that name, so harness/report/__init__.py and shown.py never reached a commit and a
    # fresh clone could not import the harness.
    import shutil

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--", "dasktrain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ignored = [p for p in out if p.endswith((".py", ".html", ".typed", ".json", ".css", ".js"))]
    assert not ignored, f"git ignores files of the package: {ignored}; fix .gitignore"
