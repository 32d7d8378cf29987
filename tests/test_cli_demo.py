"""`dasktrain demo` and `dasktrain compare PATH` end to end at a tiny size."""

from __future__ import annotations

import importlib.util
import json

import dask
import pandas as pd
import pytest

from dasktrain.cli import build_parser
from dasktrain.exceptions import ClusterConnectionError, ValidationError, WorkloadError
from dasktrain.harness import DEFAULT_WORKLOADS

# Every built-in workload but `read` needs torch (the CNN trunk of the features, or the DDP
# job): without it their rows must say "unavailable", never show a faked number.
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _expected(workload):
    return "ok" if workload == "read" or HAVE_TORCH else "unavailable"


def _parse(argv):
    return build_parser().parse_args(argv)


# --small trains the MLP for 50 iterations only: sklearn says it did not converge.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_demo_end_to_end_small(tmp_path, cluster, capsys):
    out = tmp_path / "report"
    args = _parse(["demo", "--small", "--out", str(out), "--scheduler", cluster.scheduler_address])
    code = args.func(args)
    text = capsys.readouterr().out
    assert "setup dask: 2 workers, 2 threads; dashboard http://127.0.0.1:" in text
    assert "[  1/16]" in text and "finished in" in text  # progress while it runs
    # The printed answer starts with the overall answer and the machine's state.
    answer = text.split("finished in", 1)[1].splitlines()[2:4]
    assert answer[0].startswith("Answer: ") and answer[1].startswith("Machine: "), answer
    # The verdicts come first, one per workload, computed from the measurements.
    verdicts = text.split("Verdicts\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [v.strip().split(":")[0] for v in verdicts] == list(DEFAULT_WORKLOADS)
    for name in ("report.html", "results.csv", "results.json", "samples.csv"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "results.csv")
    assert sorted(set(table.workload)) == sorted(DEFAULT_WORKLOADS)
    assert len(table) == len(DEFAULT_WORKLOADS) * 2
    status = table.set_index(["workload", "engine"]).status
    for w in DEFAULT_WORKLOADS:
        for e in ("local", "dask"):
            assert status[(w, e)] == _expected(w), (
                w,
                e,
                table.set_index("workload").loc[w, "error"],
            )
            assert w in text
    assert code == (1 if (table.status == "error").any() else 0)
    if status[("kmeans", "local")] == "ok":
        q = table.set_index(["workload", "engine"])["quality"]
        assert -1 <= q[("kmeans", "local")] <= 1  # silhouette
    if status[("ddp_cnn", "dask")] == "ok":
        assert (out / "dask-performance-report.html").exists()
    data = json.loads((out / "results.json").read_text())
    assert data["setup"]["workers"] == 2


def test_compare_command_on_a_folder(tmp_path, cluster, capsys):
    from dasktrain.datasets import make_xray_like

    root = make_xray_like(tmp_path / "xray", n_per_class=6, size=24, seed=0)
    out = tmp_path / "out"
    args = _parse(
        [
            "compare",
            str(root),
            "--workloads",
            "read",
            "--repeat",
            "2",
            "--out",
            str(out),
            "--scheduler",
            cluster.scheduler_address,
            "--image-size",
            "24",
            "--prices",
            '{"local": 0.1, "dask": 0.2}',
            "--spot-discount",
            "0.5",
        ]
    )
    assert args.func(args) == 0
    table = pd.read_csv(out / "results.csv").set_index("engine")
    assert (table.status == "ok").all() and (table.repeats == 2).all()
    assert table.loc["dask", "cost_usd"] == pytest.approx(
        0.2 * 0.5 * table.loc["dask", "time_median"] / 3600
    )
    text = capsys.readouterr().out
    assert "USD" in text and "cost: 4 timed runs" in text


def test_compare_command_unreachable_scheduler(tmp_path):
    from dasktrain.datasets import make_xray_like

    root = make_xray_like(tmp_path / "xray", n_per_class=4, size=16, seed=0)
    args = _parse(
        ["compare", str(root), "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "o")]
    )
    with dask.config.set({"dasktrain.connect-timeout": "1s"}):
        with pytest.raises(ClusterConnectionError, match="tcp://127.0.0.1:9"):
            args.func(args)


def test_demo_and_compare_parsers():
    """Both subcommands share the comparison options and their defaults."""
    args = _parse(["demo"])
    assert args.out == "report/" and args.workloads == list(DEFAULT_WORKLOADS)
    assert args.engines == ["local", "dask"] and args.small is False
    args = _parse(
        [
            "compare",
            "data/",
            "--workloads",
            "kmeans",
            "xgboost",
            "--engines",
            "dask",
            "--repeat",
            "5",
            "--sizes",
            "100",
            "200",
        ]
    )
    assert (args.path, args.workloads, args.engines, args.repeat, args.sizes) == (
        "data/",
        ["kmeans", "xgboost"],
        ["dask"],
        5,
        [100, 200],
    )
    with pytest.raises(SystemExit):
        _parse(["compare", "data/", "--engines", "flink"])
    args = _parse(["compare", "data/", "--engines", "local", "spark", "--spark-master", "local[2]"])
    assert (args.engines, args.spark_master) == (["local", "spark"], "local[2]")


def test_compare_command_checks_the_data_before_connecting(tmp_path):
    # An empty folder is the user's mistake: said at once, before any cluster is reached.
    args = _parse(
        ["compare", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "o")]
    )
    with pytest.raises(WorkloadError, match="is empty"):
        args.func(args)


def test_help_shows_defaults_and_examples(capsys):
    for argv, wanted in (
        (["--help"], ["examples:", "dasktrain demo"]),
        (["demo", "--help"], ["examples:", "(default: report/)", "(default: 400; 12 with"]),
        (["compare", "--help"], ["examples:", "--clusters laptop=2", "(default: local dask)"]),
    ):
        with pytest.raises(SystemExit) as exc:
            _parse(argv)
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for w in wanted:
            assert w in text, (argv, w)


def test_demo_defaults_cover_three_sizes_and_two_cluster_sizes():
    from dasktrain.cli.demo import default_clusters, default_sizes

    assert default_sizes(400) == [150, 300, 600]  # 300 training images per class
    assert {"dask-1w": 1, "dask-2w": 2}.items() <= default_clusters().items()


@pytest.mark.parametrize(
    "items, expected",
    [
        (["1", "2"], {"dask-1w": 1, "dask-2w": 2}),
        (["lab=tcp://10.0.0.5:8786", "me=2"], {"lab": "tcp://10.0.0.5:8786", "me": 2}),
        (["gpu"], {"dask-gpu": {"gpu": True}}),
    ],
)
def test_clusters_option(items, expected):
    from dasktrain.cli.compare import parse_clusters

    assert parse_clusters(items) == expected


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--clusters", "two"], "is not N, gpu"),
        (["--clusters", "1", "a=1", "a=2"], "names 'a' twice"),
        (["--clusters", "1", "--workers", "2"], "replaces --workers"),
        (["--repeat", "0"], "--repeat=0 must be >= 1"),
    ],
)
def test_bad_options_fail_before_a_cluster_starts(tmp_path, argv, match):
    from dasktrain.cli.compare import DEFAULT, check_arguments

    args = _parse(["compare", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    with pytest.raises(ValidationError, match=match):
        check_arguments(args, DEFAULT)


def test_three_timed_runs_by_default(tmp_path, capsys):
    from dasktrain.cli.compare import DEFAULT, SMALL, check_arguments

    for argv, preset, repeat in (
        (["demo"], DEFAULT, 3),
        (["compare", str(tmp_path)], DEFAULT, 3),
        (["demo", "--small"], SMALL, 1),
        (["compare", str(tmp_path), "--repeat", "5"], DEFAULT, 5),
    ):
        args = _parse([*argv, "--out", str(tmp_path / "o")])
        assert check_arguments(args, preset)["repeat"] == repeat, argv
    with pytest.raises(SystemExit):
        _parse(["compare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "timed runs per workload, setup and size (default: 3; 1 with --small)" in help_text


def test_busy_machine_options(tmp_path):
    from dasktrain.cli.compare import DEFAULT, check_arguments

    args = _parse(["compare", str(tmp_path), "--out", str(tmp_path / "o")])
    kw = check_arguments(args, DEFAULT)
    assert kw["allow_busy"] is None and kw["quiet_wait"] is None  # the settings decide
    args = _parse(
        ["compare", str(tmp_path), "--allow-busy", "--quiet-wait", "5", "--out", str(tmp_path)]
    )
    kw = check_arguments(args, DEFAULT)
    assert kw["allow_busy"] is True and kw["quiet_wait"] == 5
    args = _parse(["compare", str(tmp_path), "--quiet-wait", "-1", "--out", str(tmp_path / "o")])
    with pytest.raises(ValidationError, match="--quiet-wait=-1 must be >= 0"):
        check_arguments(args, DEFAULT)
