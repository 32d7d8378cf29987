"""A quiet machine: looked at before the first run, watched during every run, and said first.

The busy machine is real: a program outside this process tree spins one core (``cpu_burner``,
as another user's job would), on a machine the tests share with their own clusters.
"""

from __future__ import annotations

import time

import dask
import pandas as pd
import pytest

import dasktrain
from dasktrain.exceptions import BusyMachineError, ValidationError
from dasktrain.harness import Results
from dasktrain.harness.measure.machine import MachineWatch
from dasktrain.testing import make_blobs


@pytest.fixture
def blobs():
    return make_blobs(256, 4, 2)


def napping(data, engine, client):
    """A step that sleeps: its own CPU is nil, so what the watch sees is other programs'."""
    time.sleep(0.4 if engine == "local" else 0.2)
    return {"n": float(len(data[0]))}


def _runs(times, *, others=None, sizes=(100, 200)):
    """Two runs per setup and size; ``others``: ``{setup: others_cpu_percent of each run}``."""
    out = []
    for setup, t in times.items():
        for size in sizes:
            for i in range(2):
                row = {"workload": "fit", "engine": "local" if setup == "local" else "dask"}
                row |= {"setup": setup, "size": size, "repeat": i + 1, "time": t * size / 100}
                row["others_cpu_percent_mean"] = (others or {}).get(setup, [5.0, 5.0])[i]
                out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# The watch
# --------------------------------------------------------------------------------------------
def test_the_watch_counts_other_programs_not_this_tree(cpu_burner):
    with MachineWatch(interval=0.2) as watch:
        t0 = time.time()
        n = 0
        while time.time() - t0 < 1.0:  # this process spins too: it is not "other programs"
            n += 1
        others = watch.around(t0, time.time())
    assert cpu_burner not in watch.tree_pids
    assert 60 <= others <= 160, others  # about the burner's one core (100), not two


# --------------------------------------------------------------------------------------------
# Before the first run: wait a bounded time, then refuse (or measure, when allowed)
# --------------------------------------------------------------------------------------------
def test_a_busy_machine_is_refused_before_anything_runs(cpu_burner, blobs):
    ran = []

    def step(data, engine, client):
        ran.append(engine)
        return {"n": 1.0}

    t0 = time.monotonic()
    with pytest.raises(BusyMachineError, match=rf"busiest: .*\(pid {cpu_burner}\)") as exc:
        dasktrain.compare(
            [step], data=blobs, engines=("local",), allow_busy=False, quiet_wait=2,
            warmup=False, progress=False,
        )  # fmt: skip
    waited = time.monotonic() - t0
    assert ran == []  # nothing was measured
    assert 2 <= waited < 15, waited  # it waited, for a bounded time
    assert "allow_busy=True (--allow-busy)" in str(exc.value)


def test_a_busy_machine_when_allowed_is_said_first_and_marked(cpu_burner, blobs, client, tmp_path):
    res = dasktrain.compare(
        [napping], data=blobs, clusters={"dask": client}, repeat=2, allow_busy=True,
        quiet_wait=0, warmup=False, progress=False, monitor=False,
    )  # fmt: skip
    lines = res.to_string().splitlines()
    assert lines[0].startswith("Answer: ")
    assert lines[1].startswith("Machine: BUSY: other programs used ")
    assert "before the first run" in lines[1] and f"(pid {cpu_burner})" in lines[1]
    assert "the verdicts include them because busy runs were allowed" in lines[1]
    # Every run ran beside the burner: marked in the runs, the table and the terminal's table.
    assert res.runs.busy.all() and (res.runs.others_cpu_percent_mean > 50).all()
    assert (res.table.busy_runs == 2).all()
    assert "2/2" in res.to_string()  # the terminal's table: 2 of 2 runs busy
    assert res.machine["before"]["busy"] and res.machine["busy_runs"] == 4
    # The report says it at the top, before the verdicts.
    html = res.save(tmp_path).joinpath("report.html").read_text(encoding="utf-8")
    assert html.index("class='machine busy'") < html.index("<ul class='verdicts'>")
    # Read back without allowing busy runs: no verdict rests on them.
    strict = Results(res.runs, setup=res.setup, allow_busy=False)
    assert strict.verdicts.verdict.iloc[0].startswith("napping: no verdict: other programs")


def test_the_command_line_refuses_a_busy_machine(cpu_burner, tmp_path, capsys):
    from dasktrain.cli import main
    from dasktrain.datasets import make_xray_like

    root = make_xray_like(tmp_path / "xray", n_per_class=4, size=16, seed=0)
    argv = ["compare", str(root), "--engines", "local", "--workloads", "read"]
    argv += ["--quiet-wait", "1", "--out", str(tmp_path / "out")]
    with dask.config.set({"dasktrain.compare.allow-busy": False}):  # the suite allows it
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 3
    assert "dasktrain compare: no answer: this machine is busy" in err
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("value", [-1, "soon", True])
def test_bad_quiet_wait(blobs, value):
    with pytest.raises(ValidationError, match="quiet_wait"):
        dasktrain.compare([napping], data=blobs, engines=("local",), quiet_wait=value)


# --------------------------------------------------------------------------------------------
# During the runs: busy runs are marked in every table, and judged only when allowed
# --------------------------------------------------------------------------------------------
def test_busy_runs_are_marked_in_every_table(tmp_path):
    runs = _runs({"local": 1.0, "dask": 0.5}, others={"dask": [160.0, 5.0]})
    res = Results(runs)
    assert res.runs.busy.tolist() == [False] * 4 + [True, False] * 2
    assert res.table.set_index("setup").busy_runs.to_dict() == {"local": 0, "dask": 1}
    assert res.by_size.busy_runs.tolist() == [0, 1, 0, 1]  # per size: local, then dask
    assert res.scaling.busy_runs.tolist() == [1, 1, 0, 0]
    text = res.to_string()
    header = next(line for line in text.splitlines() if line.startswith("workload"))
    assert header.split()[-1] == "busy" or " busy " in header
    assert "1/2" in text
    out = res.save(tmp_path)
    assert pd.read_csv(out / "runs.csv").busy.sum() == 2
    assert pd.read_csv(out / "results.csv").busy_runs.tolist() == [0, 1, 0, 1]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<tr class='ok busy'>") == 2 and "[1 busy]" in html


def test_busy_runs_withhold_the_verdict_unless_allowed():
    runs = _runs({"local": 1.0, "dask": 0.5}, others={"local": [90.0, 90.0]})
    res = Results(runs)
    (v,) = res.verdicts.verdict
    assert v.startswith("fit: no verdict: other programs used more than half a core during 4 ")
    assert "--allow-busy" in v and res.verdicts.outcome.iloc[0] == "withheld"
    lines = res.to_string().splitlines()
    assert lines[0] == "Answer at the largest size measured: no verdict (busy runs) for fit."
    assert lines[1].startswith("Machine: BUSY: more than 0.50 cores during 4 of the 8 runs")
    assert "verdicts resting on busy runs are withheld" in lines[1]
    (v,) = Results(runs, allow_busy=True).verdicts.verdict
    assert v.startswith("fit: dask is faster at every measured size (2.0x at 200)")


def test_a_quiet_machine_is_said_first():
    setup = {"machine": {"others_cpu_percent": 3.0, "busy": False, "load_average": [0.4, 0, 0]}}
    setup["machine"]["cores"] = 2
    res = Results(_runs({"local": 1.0, "dask": 0.5}), setup=setup)
    answer, machine = res.to_string().splitlines()[:2]
    assert answer == "Answer at the largest size measured: distributing pays for fit (dask 2.0x)."
    assert machine == (
        "Machine: quiet: other programs used 0.03 cores before the first run and at most 0.05 "
        "cores during a run (a run is busy above 0.50 cores; load average 0.4 at the start; 2 "
        "cores)."
    )
    assert res.to_dict()["answer"] == [answer, machine]
