"""The asv suite stays runnable: ``asv check`` passes and every benchmark's params are sane.

asv silently pads or truncates ``param_names`` that do not match ``params`` (the results then
carry names like ``param2``), so the consistency check here is stricter than ``asv check``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
ASV = Path(sys.executable).with_name("asv")
# One module per capability; the issues that own them say what each one measures.
EXPECTED = {
    "bench_images",
    "bench_features",
    "bench_models",
    "bench_ddp",
    "bench_monitor",
    "bench_scale",
    "bench_study",
}
# The method prefixes asv turns into benchmarks.
PREFIXES = ("time_", "timeraw_", "track_", "mem_", "peakmem_")


def _bench_modules():
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def _asv_check(config=None, timeout=120):
    cmd = [str(ASV), "check", "--python=same"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _normalize(params):
    """asv's rule: a flat list is one parameter, a list of lists is several."""
    params = list(params)
    if params and not isinstance(params[0], (list, tuple)):
        return [params]
    return [list(p) for p in params]


def param_problems(owner, name):
    """Return a list of problems with ``owner.params`` / ``owner.param_names`` (empty if fine)."""
    params = getattr(owner, "params", None)
    names = getattr(owner, "param_names", None)
    if params is None:
        return [] if names is None else [f"{name}: param_names without params"]
    problems = []
    params = _normalize(params)
    if not params:
        problems.append(f"{name}: params is empty")
    if names is None:
        return problems + [f"{name}: params without param_names"]
    names = list(names)
    if len(names) != len(params):
        problems.append(
            f"{name}: {len(params)} params but {len(names)} param_names {names!r} "
            "(asv would pad or truncate the names)"
        )
    if any(not isinstance(n, str) or not n.strip() for n in names):
        problems.append(f"{name}: param_names must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        problems.append(f"{name}: param_names are not unique: {names!r}")
    for pname, values in zip(names, params):
        if not values:
            problems.append(f"{name}: parameter {pname!r} has no values")
        reprs = [repr(v) for v in values]
        if len(set(reprs)) != len(reprs):
            problems.append(f"{name}: parameter {pname!r} repeats a value: {values!r}")
    return problems


def benchmark_owners(module):
    """Yield ``(qualified name, class or function, benchmark method names)`` asv would find."""
    for attr, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            methods = [m for m in dir(obj) if m.startswith(PREFIXES) and callable(getattr(obj, m))]
            if methods:
                yield f"{module.__name__}.{attr}", obj, methods
        elif inspect.isfunction(obj) and attr.startswith(PREFIXES):
            yield f"{module.__name__}.{attr}", obj, [attr]


def test_expected_benchmark_modules_exist():
    missing = EXPECTED - set(_bench_modules())
    assert not missing, f"benchmark modules missing from {BENCH_DIR}: {sorted(missing)}"


def test_asv_check_passes():
    proc = _asv_check()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`asv check --python=same` failed:\n{out[-6000:]}"
    assert "Discovering benchmarks" in out


def test_asv_check_catches_a_broken_benchmark(tmp_path):
    # Proof that the check above can fail: the same config pointed at a broken suite.
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "__init__.py").write_text("")
    (bench / "bench_broken.py").write_text(
        textwrap.dedent(
            """
            class Broken:
                params = [1, 2]
                param_names = ["n"]

                def time_wrong_arity(self):
                    pass
            """
        )
    )
    config = json.loads((ROOT / "asv.conf.json").read_text())
    config.update(repo=str(ROOT), benchmark_dir=str(bench))
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(config))
    proc = _asv_check(config=path)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_param_checker_finds_mismatches():
    class Bad:
        params = [[1, 2], ["a", "b"], [True]]
        param_names = ["n", "n"]

    problems = param_problems(Bad, "Bad")
    assert any("3 params but 2 param_names" in p for p in problems)
    assert any("not unique" in p for p in problems)

    class Good:
        params = [["local", "dask"], [100, 1000]]
        param_names = ["engine", "n"]

    assert param_problems(Good, "Good") == []


@pytest.mark.parametrize("name", _bench_modules())
def test_benchmark_module_params_consistent(name):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"benchmarks.{name}")
    owners = list(benchmark_owners(module))
    assert owners, f"benchmarks/{name}.py defines no asv benchmark (methods starting {PREFIXES})"
    problems = []
    for qualname, owner, methods in owners:
        problems += param_problems(owner, qualname)
        values = [repr(v) for p in _normalize(getattr(owner, "params", []) or []) for v in p]
        for method in methods:
            fn = getattr(owner, method)
            # Parameters may also be set on one method; check those too.
            if "params" in getattr(fn, "__dict__", {}):
                problems += param_problems(fn, f"{qualname}.{method}")
            # peakmem_ only sees the asv process, never the Dask workers (DESIGN.md).
            if method.startswith("peakmem_") and "'dask'" in values:
                problems.append(
                    f"{qualname}.{method}: peakmem_ on a dask-engine benchmark measures only the "
                    "asv process; track peak cluster memory with MemorySampler instead"
                )
    assert not problems, "\n".join(problems)


def _script(name, *args, timeout=600):
    """Run ``benchmarks/<name>.py`` as the lead would, at a tiny size; return its stdout."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_growth_per_4x():
    from benchmarks.bench_scale import growth_per_4x

    assert growth_per_4x(2000, 10.0, 8000, 40.0) == pytest.approx(4.0)  # linear
    assert growth_per_4x(2000, 10.0, 8000, 10.0) == pytest.approx(1.0)  # flat
    # 8,000 -> 30,000 is 3.75x: a linear growth still reads 4.0 per 4x
    assert growth_per_4x(8000, 1.0, 30000, 3.75) == pytest.approx(4.0)


@pytest.mark.timeout(600)
def test_bench_scale_script_runs_at_a_tiny_size():
    out = _script("bench_scale", "--sizes", "48,192", "--features", "hog", "--memory-limit", "1GB")
    rows = [
        line.split()
        for line in out.splitlines()
        if line.split()[:2] in (["local", "hog"], ["dask", "hog"])
    ]
    # each cell printed as it finishes, then once more in the final table with its growth
    assert len(rows) == 8 and all(len(r) == 11 for r in rows), out
    assert "error" not in out


@pytest.mark.timeout(600)
def test_bench_study_script_runs_at_a_tiny_size():
    out = _script(
        "bench_study",
        "--normal",
        "6",
        "--pneumonia",
        "14",
        "--size",
        "32",
        "--cv",
        "2",
        "--repeat",
        "1",
        "--mlp-max-iter",
        "20",
    )
    assert "20 images (6 NORMAL, 14 PNEUMONIA)" in out
    assert "-> 512-d features" in out  # VGG19 at 32x32 flattened: 512 x 1 x 1
    for workload in ("vgg19_features", "logreg_cv", "naive_bayes_cv", "mlp_cv"):
        assert sum(line.split()[:1] == [workload] for line in out.splitlines()) == 2, out
    assert " error" not in out


@pytest.mark.timeout(600)
def test_efficiency_script_runs_at_a_tiny_size():
    out = _script("parity", "efficiency", "features", "--n", "128", "--repeat", "1", "--before")
    assert "two-process ceiling" in out
    names = (
        "one core (plain process)",
        "two plain processes",
        "local, 1 thread",
        "local, 2 threads",
        "dask 1x1",
        "dask 2x1",
        "dask 1x1, Dask's malloc",
    )
    for name in names:
        assert any(line.strip().startswith(name) for line in out.splitlines()), (name, out)


@pytest.mark.timeout(600)
def test_efficiency_fused_row_runs_at_a_tiny_size():
    # Regression: the one-core work read 256 files at a time from a class-sorted list, and
    # read_images refused a chunk of one class (the row failed before its first timing).
    out = _script("parity", "efficiency", "fused", "--n", "512", "--repeat", "1")
    assert "two-process ceiling" in out
    for name in ("one core (plain process)", "local, 2 threads", "dask 2x1"):
        assert any(line.strip().startswith(name) for line in out.splitlines()), (name, out)


def test_mixed_pairs_take_turns_by_class():
    from benchmarks._efficiency import mixed

    pairs = [("a0", "A"), ("a1", "A"), ("a2", "A"), ("b0", "B")]
    assert mixed(pairs) == [("a0", "A"), ("b0", "B"), ("a1", "A"), ("a2", "A")]


def test_calibration_fractions():
    from benchmarks._calibrate import of_ceiling, per_core

    assert per_core(1.0, 0.5, 2) == pytest.approx(1.0)  # twice one core on 2 cores
    assert per_core(1.0, 1.25, 1) == pytest.approx(0.8)
    # ceiling 1.6x (2 x 1.0 / 1.25): an engine at 1.6x one core is at the ceiling
    assert of_ceiling(1.0, 1.25, 1 / 1.6) == pytest.approx(1.0)
