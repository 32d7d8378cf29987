"""The answer of a comparison: verdicts, time breakdown, setups, and what the terminal shows."""

from __future__ import annotations

import io
import logging
import math
import warnings

import pytest

from dasktrain.exceptions import DasktrainWarning, ValidationError
from dasktrain.harness import Results
from dasktrain.harness.measure.breakdown import Observation, split_local, split_time
from dasktrain.harness.results.verdicts import fit_line
from dasktrain.harness.run.progress import Progress
from dasktrain.harness.run.quiet import QuietOutput
from dasktrain.harness.run.setups import check_clusters


def _runs(workload, times, *, extra=None, setup="dask", workers=2):
    """Two repeats per size of ``{engine: {size: seconds}}``; ``extra`` goes to dask rows."""
    out = []
    for engine, per_size in times.items():
        for size, t in per_size.items():
            for rep in (1, 2):
                row = {
                    "workload": workload,
                    "engine": engine,
                    "setup": engine if engine == "local" else setup,
                    "size": size,
                    "repeat": rep,
                    "time": t,
                    "quality_metric": "accuracy",
                    "quality": 0.9,
                    "workers": workers if engine == "dask" else 0,
                    "threads": workers if engine == "dask" else 2,
                    "devices": workers if engine == "dask" else 1,
                }
                if engine == "dask":
                    row.update(extra or {})
                out.append(row)
    return out


@pytest.fixture
def answered():
    runs = _runs("kmeans", {"local": {100: 1.0, 400: 4.0}, "dask": {100: 2.0, 400: 3.0}})
    runs += _runs(
        "logreg",
        {"local": {100: 0.1, 200: 0.2, 400: 0.4}, "dask": {100: 1.0, 200: 1.05, 400: 1.1}},
        extra={"startup_s": 0.05, "transfer_s": 0.1, "idle_s": 0.8, "compute_s": 0.15}
        | {"idle_gaps": 20, "tasks": 40},
    )
    runs += _runs(
        "xgboost", {"local": {100: 0.1, 200: 0.2, 400: 0.4}, "dask": {100: 1, 200: 1.5, 400: 2.5}}
    )
    runs += [
        {"workload": "ddp_cnn", "engine": e, "status": "unavailable", "error": "no torch"}
        | {"time": math.nan, "size": s}
        for e in ("local", "dask")
        for s in (100, 400)
    ]
    return Results(runs)


# --------------------------------------------------------------------------------------------
# Verdicts: computed from the measurements
# --------------------------------------------------------------------------------------------
def test_verdicts_say_who_wins_where_and_why(answered):
    v = dict(zip(answered.verdicts.workload, answered.verdicts.verdict))
    assert list(v) == ["kmeans", "logreg", "xgboost", "ddp_cnn"]
    assert v["kmeans"].startswith(
        "kmeans: dask pays from ~400 samples (1.3x at 400; slower at 100)"
    )
    # local wins everywhere: the overhead, what it is made of, and the extrapolated crossover
    # (least-squares lines: local 0.001 s/sample from 0 s, dask 0.00034 s/sample from 0.97 s:
    # they cross at ~1,437 samples, said with two significant figures).
    assert v["logreg"].startswith("logreg: local is faster at every measured size (100-400")
    # The overhead's parts are the median run's: they add up to its time, and the dask run's
    # compute, faster than local's whole run, is said to offset the rest.
    assert (
        "dask overhead 0.7 s per run: scheduler/idle 0.8 s over 20 round trips of 40 tasks, "
        "data transfer 0.1 s, start-up 0.05 s, offset by compute 0.25 s faster than local's "
        "whole run" in v["logreg"]
    ), v["logreg"]
    assert "dask would pay from ~1,400 samples (extrapolated)" in v["logreg"]
    assert "no crossover in sight" in v["xgboost"]
    assert v["ddp_cnn"].startswith("ddp_cnn: not measured (local: unavailable: no torch")


def test_verdict_follows_the_numbers(answered):
    # Same workload, the dask times swapped for faster ones: the verdict turns round.
    runs = _runs("kmeans", {"local": {100: 1.0, 400: 4.0}, "dask": {100: 0.5, 400: 1.0}})
    (v,) = Results(runs).verdicts.verdict
    assert v.startswith("kmeans: dask is faster at every measured size (4.0x at 400)")


def test_one_size_says_how_to_get_the_crossover():
    runs = _runs("kmeans", {"local": {100: 1.0}, "dask": {100: 2.0}})
    (v,) = Results(runs).verdicts.verdict
    assert "local is faster at 100 samples (2.0x)" in v and "pass sizes=" in v


def test_crossovers_table_fits_lines(answered):
    cr = answered.crossovers.set_index("workload")
    assert cr.loc["kmeans", "measured"] == 400
    assert cr.loc["logreg", "extrapolated"] == pytest.approx(1437, rel=0.01)
    assert cr.loc["logreg", "base_per_sample_s"] == pytest.approx(0.001)
    assert fit_line([100], [1.0]) is None


def test_printing_results_shows_every_row_and_the_answer_first(answered):
    lines = repr(answered).splitlines()
    text = "\n".join(lines)
    # The overall answer and the machine's state, then the verdicts.
    assert lines[1].startswith("Answer at the largest size measured: distributing pays for ")
    assert lines[2].startswith("Machine: ") and lines[4] == "Verdicts"
    assert "rows x" not in text and "..." not in text
    table = repr(answered.table)
    assert "rows x" not in table and "core_seconds" in table and "compute_s" in table


# --------------------------------------------------------------------------------------------
# Where the time went
# --------------------------------------------------------------------------------------------
def _task(start, stop, action="compute"):
    return {"startstops": [{"action": action, "start": start, "stop": stop}]}


def test_split_time_adds_up_and_gives_each_instant_once():
    obs = Observation(
        phases=[("transfer", 0.0, 1.0), ("transfer", 9.0, 10.0)],
        tasks=[_task(2, 4), _task(3, 5), _task(5, 5.5, "transfer"), _task(7, 8)],
    )
    out = split_time(0.0, 10.0, obs)
    # client transfer 0-1 and 9-10; start-up until the first task (1-2); compute 2-5 and 7-8;
    # worker transfer 5-5.5; scheduler/idle 5.5-7 and 8-9
    assert out["transfer_s"] == pytest.approx(2.5)
    assert out["startup_s"] == pytest.approx(1.0)
    assert out["compute_s"] == pytest.approx(4.0)
    assert out["idle_s"] == pytest.approx(2.5)
    assert sum(out[k] for k in ("startup_s", "transfer_s", "idle_s", "compute_s")) == 10
    assert out["tasks"] == 4 and out["idle_gaps"] == 1


def test_split_time_training_start_is_startup():
    # A DDP job: no tasks of its own in the stream, the ranks say when training began.
    out = split_time(0.0, 10.0, Observation(), train_start=6.0)
    assert out["startup_s"] == pytest.approx(6.0) and out["idle_s"] == pytest.approx(4.0)
    local = split_local(0.0, 10.0, Observation(), train_start=1.5)
    assert local["startup_s"] == 1.5 and local["compute_s"] == 8.5


# --------------------------------------------------------------------------------------------
# Setups: checked before anything starts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "clusters, kw, match",
    [
        ({"a": 0}, {}, "must be >= 1"),
        ({"local": 1}, {}, "other than 'local'"),
        ({"a": {"n_worker": 2}}, {}, "unknown key"),
        ([1, "two"], {}, "a list names local cluster sizes"),
        ({}, {}, "clusters is empty"),
        ({"a": 1}, {"client": "tcp://127.0.0.1:9"}, "not both"),
        ({"a": 1}, {"engines": ("local",)}, "add 'dask'"),
        ({"a": 1.5}, {}, "must be a distributed.Client"),
    ],
)
def test_bad_clusters_are_refused_before_anything_starts(clusters, kw, match):
    with pytest.raises(ValidationError, match=match):
        check_clusters(clusters, kw.get("engines", ("local", "dask")), kw.get("client"))


def test_cluster_sizes_name_themselves():
    assert check_clusters([1, 2], ("local", "dask"), None) == {"dask-1w": 1, "dask-2w": 2}


# --------------------------------------------------------------------------------------------
# The terminal: progress, and library noise to a file
# --------------------------------------------------------------------------------------------
def test_progress_calls_back_and_counts():
    from dasktrain.harness import RunRecord

    seen = []
    p = Progress(seen.append, total=3)
    p.emit("run", RunRecord("kmeans", "dask", setup="dask-2w", time=1.0), 1, 100)
    p.skip()
    p.close()
    assert seen[0]["setup"] == "dask-2w" and seen[0]["size"] == 100
    assert (seen[0]["index"], p.total) == (1, 2)


def test_a_plain_callback_gets_run_events_only(blobs_small):
    # Regression: a "start" event without a "record" broke callbacks written for the per-run
    # events (benchmarks/bench_study.py: KeyError 'record').
    import dasktrain

    seen = []

    class WithStart(list):
        def __call__(self, ev):
            self.append(ev)

        def start(self, setups, total):
            self.append(("start", sorted(setups), total))

    def step(data, engine, client):
        return {"n": float(len(data[0]))}

    for callback in (seen.append, WithStart()):
        dasktrain.compare(
            [step], data=blobs_small, engines=("local",), repeat=2, warmup=False,
            monitor=False, progress=callback,
        )  # fmt: skip
    plain, with_start = seen, callback
    assert [ev["event"] for ev in plain] == ["run", "run"]
    assert all("record" in ev for ev in plain)
    assert with_start[0] == ("start", ["local"], 2) and len(with_start) == 3


def test_what_compare_hands_out_is_its_typed_records(blobs_small):
    # The progress events, the setups' descriptions and the cost are TypedDicts (issue 28,
    # item 1): what compare() hands out has exactly their keys, and the docstrings name them.
    import typing

    import dasktrain
    from dasktrain.harness import Cost, ProgressEvent, SetupDescription

    events, setups = [], {}

    class Callback:
        def __call__(self, ev):
            events.append(ev)

        def start(self, described, total):
            setups.update(described)

    def step(data, engine, client):
        return {"n": float(len(data[0]))}

    res = dasktrain.compare(
        [step], data=blobs_small, engines=("local",), repeat=1, warmup=False,
        monitor=False, progress=Callback(),
    )  # fmt: skip
    assert set(events[0]) == set(typing.get_type_hints(ProgressEvent))
    for key in ProgressEvent.__required_keys__:
        assert f"``{key}``" in Progress.__doc__, key
    required = SetupDescription.__required_keys__
    for desc in [*setups.values(), *res.setup["setups"].values()]:
        assert required <= set(desc) <= required | SetupDescription.__optional_keys__, desc
    assert set(res.cost) == set(typing.get_type_hints(Cost))


@pytest.fixture
def blobs_small():
    from dasktrain.testing import make_blobs

    return make_blobs(64, 4, 2)


def test_progress_bar_writes_to_its_file():
    from dasktrain.harness import RunRecord

    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):  # the bar shows on a terminal only
            return True

    buf = Terminal()
    p = Progress(True, total=2, file=buf)
    p.emit("run", RunRecord("kmeans", "local", time=1.0), 1, None)
    p.close()
    assert "kmeans local" in buf.getvalue()


def test_quiet_output_keeps_library_noise_off_the_terminal(tmp_path, capsys, caplog):
    log = tmp_path / "dasktrain.log"
    with warnings.catch_warnings(), QuietOutput(log):
        warnings.simplefilter("always")
        warnings.warn("sklearn says it did not converge", RuntimeWarning, stacklevel=1)
        warnings.warn("3 files skipped: not images", DasktrainWarning, stacklevel=1)
        logging.getLogger("distributed.sizeof").warning("Sizeof calculation failed")
        logging.getLogger("dasktrain.images").warning("your folder has an empty class")
        print("xgboost tracker: got rank 0")
    captured = capsys.readouterr()
    # The terminal: stdout, stderr, and the root logger's handlers (pytest's, here).
    terminal = captured.out + captured.err + caplog.text
    text = log.read_text()
    for noise in ("did not converge", "Sizeof calculation", "got rank 0"):
        assert noise in text and noise not in terminal, noise
    # what is about the user's data stays on the terminal
    assert "3 files skipped" in terminal and "empty class" in terminal


def test_verdict_names_slower_compute_as_the_overhead():
    # The dask run spends 0.1 s starting and 2.6 s computing what the local run does in 2 s:
    # the overhead is mostly compute, not the start-up.
    runs = _runs(
        "mlp_cv",
        {"local": {100: 1.0, 400: 2.0}, "dask": {100: 1.5, 400: 2.75}},
        extra={"startup_s": 0.11, "transfer_s": 0.0, "idle_s": 0.04, "compute_s": 2.6},
    )
    (v,) = Results(runs).verdicts.verdict
    assert "dask overhead 0.75 s per run: mostly slower compute 0.6 s; start-up 0.11 s" in v, v


def test_saving_computes_the_scaling_table_once(answered, tmp_path, monkeypatch):
    # Regression: every verdict, crossover and chart recomputed the scaling table from the
    # runs; saving the demo's 72 runs took 130 s on a loaded machine, most of it in there.
    import dasktrain.harness.results.outcome as results_module

    calls = []
    real = results_module.scaling_table

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(results_module, "scaling_table", counting)
    answered.save(tmp_path)
    assert len(calls) == 1
    sc = answered.scaling
    sc.loc[:, "time_median"] = 0.0  # a caller's change never reaches the cache
    assert (answered.scaling.time_median.dropna() > 0).all()


# --------------------------------------------------------------------------------------------
# Wording rules: a verdict says only what was measured (one crafted Results per rule)
# --------------------------------------------------------------------------------------------
def _crafted(points, *, workload="fit", quality=None, parts=None, others=None):
    """Runs of ``{setup: {size: [seconds of each run]}}``; ``quality``: ``{setup: [values]}``
    per run; ``parts``: ``{setup: [(startup, transfer, idle, compute) per run]}``; ``others``:
    ``{setup: [others_cpu_percent_mean per run]}`` (at every size)."""
    out = []
    for setup, per_size in points.items():
        engine = "local" if setup == "local" else "dask"
        for size, times in per_size.items():
            for i, t in enumerate(times):
                row = {"workload": workload, "engine": engine, "setup": setup, "size": size}
                row |= {"repeat": i + 1, "time": t, "quality_metric": "silhouette"}
                row["quality"] = (quality or {}).get(setup, [0.5] * len(times))[i]
                if parts and setup in parts:
                    keys = ("startup_s", "transfer_s", "idle_s", "compute_s")
                    row |= dict(zip(keys, parts[setup][i]))
                if others and setup in others:
                    row["others_cpu_percent_mean"] = others[setup][i]
                out.append(row)
    return out


def test_rule_overlapping_ranges_are_no_clear_difference():
    # dask's median is faster, but its slowest run is slower than local's fastest: no winner.
    runs = _crafted({"local": {600: [1.0, 1.1, 1.3]}, "dask": {600: [0.9, 1.0, 1.2]}})
    (v,) = Results(runs).verdicts.verdict
    assert v.startswith("fit: no clear difference between dask and local at 600 samples"), v
    assert "is faster" not in v and "pays" not in v
    # Over several sizes: dask "pays" only from the size where every run of it is faster.
    runs = _crafted(
        {
            "local": {100: [1.0, 1.0], 200: [2.0, 2.2], 400: [4.0, 4.1]},
            "dask": {100: [1.5, 1.6], 200: [1.9, 2.1], 400: [3.0, 3.2]},
        }
    )
    res = Results(runs)
    (v,) = res.verdicts.verdict
    assert v.startswith(
        "fit: dask pays from ~400 samples (1.3x at 400; no clear difference at 200)"
    )
    assert res.crossover.crossover_size.iloc[0] == 400
    assert res.verdicts.outcome.iloc[0] == "pays"


def test_rule_every_verdict_states_its_spread():
    runs = _crafted({"local": {600: [0.9, 1.0, 1.1]}, "dask": {600: [0.5, 0.52, 0.55]}})
    (v,) = Results(runs).verdicts.verdict
    assert "dask is faster at 600 samples (1.9x)" in v
    assert "at 600 samples, 3 runs each: local 0.9-1.1 s, dask 0.5-0.55 s" in v, v
    # One run each: no spread to state, and the verdict says so.
    (v,) = Results(_crafted({"local": {600: [1.0]}, "dask": {600: [0.5]}})).verdicts.verdict
    assert "at 600 samples, 1 run each: no spread measured" in v, v


def test_rule_quality_is_equal_only_within_the_spread_or_a_stated_tolerance():
    # Regression: "silhouette 0.156 on every setup" where dask gave 0.151.
    times = {"local": {600: [1.0, 1.0]}, "dask": {600: [2.0, 2.0]}}
    close = {"local": [0.156, 0.156], "dask": [0.151, 0.151]}
    (v,) = Results(_crafted(times, quality=close)).verdicts.verdict
    assert "on every setup" not in v
    assert "silhouette local 0.156, dask 0.151: equal within the tolerance of 0.02" in v, v
    spread = {"local": [0.150, 0.170], "dask": [0.152, 0.158]}
    (v,) = Results(_crafted(times, quality=spread)).verdicts.verdict
    assert "equal within their spread over the runs" in v, v
    apart = {"local": [0.30, 0.30], "dask": [0.20, 0.20]}
    (v,) = Results(_crafted(times, quality=apart)).verdicts.verdict
    assert "they differ by 0.100, more than the tolerance 0.02" in v, v
    same = {"local": [0.1561, 0.1561], "dask": [0.1559, 0.1559]}
    (v,) = Results(_crafted(times, quality=same)).verdicts.verdict
    assert "silhouette 0.156 on every setup" in v, v


def test_rule_parts_are_never_larger_than_the_whole():
    # Regression: "overhead 0.15 s: mostly scheduler/idle 0.19 s". The dask run computes in
    # 0.06 s less than local's whole run, and its scheduler/idle is more than the overhead.
    times = {"local": {600: [0.25, 0.25, 0.25]}, "dask": {600: [0.38, 0.40, 0.45]}}
    parts = {"dask": [(0.0, 0.02, 0.17, 0.19), (0.0, 0.02, 0.19, 0.19), (0.0, 0.05, 0.2, 0.2)]}
    res = Results(_crafted(times, parts=parts))
    (v,) = res.verdicts.verdict
    assert "mostly scheduler/idle" not in v
    assert "dask overhead 0.15 s per run: scheduler/idle 0.19 s, data transfer 0.02 s, " in v, v
    assert "offset by compute 0.06 s faster than local's whole run" in v
    # The table's parts are the median run's: they add up to the median time.
    row = res.table.set_index("setup").loc["dask"]
    total = row[["startup_s", "transfer_s", "idle_s", "compute_s"]].sum()
    assert total == pytest.approx(row.time_median) and row.idle_s == pytest.approx(0.19)
    # Slower compute is part of the overhead; "mostly" only for more than half of it.
    slower = {"dask": [(0.02, 0.0, 0.03, 0.5)] * 3}
    (v,) = Results(_crafted({**times, "dask": {600: [0.55] * 3}}, parts=slower)).verdicts.verdict
    assert "dask overhead 0.3 s per run: mostly slower compute 0.25 s; scheduler/idle 0.03 s" in v


def test_rule_work_outside_tasks_is_compute():
    # Regression: "compute 0.00025 s" for a KMeans run whose passes ran over direct
    # connections, outside any task the stream shows. The step reports them (phase).
    from dasktrain.harness import phase
    from dasktrain.harness.measure.breakdown import observe_local

    with observe_local() as obs:
        with phase("compute"):
            pass
    assert [k for k, _, _ in obs.phases] == ["compute"]
    obs = Observation(
        phases=[("transfer", 0.0, 1.0), ("compute", 2.0, 6.0), ("compute", 6.5, 8.0)],
        tasks=[_task(1.5, 1.6)],
    )
    out = split_time(0.0, 10.0, obs)
    assert out["compute_s"] == pytest.approx(0.1 + 4.0 + 1.5)
    assert out["startup_s"] == pytest.approx(0.5) and out["idle_s"] == pytest.approx(2.4 + 0.5)


def test_rule_strong_scaling_is_quoted_only_when_clear():
    # 1 -> 2 workers: a median ratio of 1.05x from runs that overlap is no scaling to quote.
    times = {"local": {600: [2.0, 2.1, 2.2]}, "d1": {600: [1.0, 1.1, 1.2]}}
    overlap = _crafted({**times, "d2": {600: [0.95, 1.05, 1.15]}})
    clear = _crafted({**times, "d2": {600: [0.5, 0.55, 0.6]}})
    for runs in (overlap, clear):
        for r in runs:
            r["workers"] = {"local": 0, "d1": 1, "d2": 2}[r["setup"]]
    res = Results(overlap)
    assert res.strong_scaling.set_index("setup").clear.to_dict() == {"d1": 0, "d2": 0}
    (v,) = res.verdicts.verdict
    assert "1 -> 2 workers: 1.05x, no clear difference (their times overlap)" in v, v
    assert "efficiency" not in v
    (v,) = Results(clear).verdicts.verdict
    assert "1 -> 2 workers: 2.00x (efficiency 1.00)" in v, v


def test_rule_every_size_a_setup_wins_is_named():
    # Regression (the demo): "local is faster at 600 samples; no clear difference at 300" left
    # out 150, where local was faster too.
    runs = _crafted(
        {
            "local": {150: [0.1, 0.1], 300: [0.2, 0.3], 600: [0.4, 0.4]},
            "dask": {150: [0.2, 0.2], 300: [0.25, 0.35], 600: [0.6, 0.6]},
        }
    )
    (v,) = Results(runs).verdicts.verdict
    assert v.startswith(
        "fit: local is faster at 150, 600 samples (1.5x at 600); no clear difference at 300"
    ), v


def test_the_report_opens_with_the_answer_in_one_paragraph(answered):
    """Where distributing paid and from which size; where not, and what the time went to."""
    from dasktrain.harness.results.answer import answer_paragraph

    text = answer_paragraph(answered)
    assert text.startswith(
        "On this machine at the largest size measured, distributing paid for kmeans "
        "(dask, 1.3x, from about 400 samples); it did not for logreg (dask overhead 0.7 s per "
        "run: scheduler/idle 0.8 s over 20 round trips of 40 tasks"
    ), text
    assert "xgboost (dask overhead 2.1 s per run): local was faster" in text, text
    assert text.endswith("; not measured: ddp_cnn."), text
    assert answered.verdicts.why.iloc[0] == "from about 400 samples"
