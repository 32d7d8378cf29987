"""`dasktrain demo` and `dasktrain compare PATH` end to end at a tiny size."""

from __future__ import annotations

import argparse
import importlib
import json

import dask
import pandas as pd
import pytest

from dasktrain._demo import DEMO_WORKLOADS, add_compare_parser, add_demo_parser
from dasktrain.exceptions import ClusterConnectionError

# The part of dasktrain each built-in workload needs: its row must be "ok" when the part is
# there and "unavailable" (never a faked number) when it is not.
NEEDS = {
    "read": [("dasktrain.images", "read_images")],
    "features": [("dasktrain.features", "CNNFeatures")],
    "kmeans": [("dasktrain.models", "KMeans"), ("dasktrain.metrics", "silhouette_score")],
    "xgboost": [("dasktrain.models", "XGBClassifier"), ("dasktrain.metrics", "accuracy_score")],
    "logreg": [("dasktrain.models", "LogisticRegression"), ("dasktrain.metrics", "accuracy_score")],
    "naive_bayes": [("dasktrain.models", "GaussianNB"), ("dasktrain.metrics", "accuracy_score")],
    "mlp_cv": [("dasktrain.models", "MLPClassifier"), ("dasktrain.models", "cross_validate")],
    "ddp_cnn": [("dasktrain.ddp", "run"), ("dasktrain.ddp.recipes", "train_classifier")],
}
CNN = [("dasktrain.features", "CNNFeatures")]


def _have(pairs):
    for mod, name in pairs:
        try:
            getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            return False
    return True


def _expected(workload):
    needs = list(NEEDS[workload])
    if workload not in ("read", "features", "ddp_cnn"):
        needs += CNN  # the feature matrix comes from the CNN trunk
    if workload != "read":
        needs += NEEDS["read"]
    return "ok" if _have(needs) else "unavailable"


def _parse(argv):
    parser = argparse.ArgumentParser(prog="dasktrain")
    sub = parser.add_subparsers(dest="command", required=True)
    add_demo_parser(sub)
    add_compare_parser(sub)
    return parser.parse_args(argv)


# --small trains the MLP for 50 iterations only: sklearn says it did not converge.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_demo_end_to_end_small(tmp_path, cluster, capsys):
    out = tmp_path / "report"
    args = _parse(["demo", "--small", "--out", str(out), "--scheduler", cluster.scheduler_address])
    code = args.func(args)
    text = capsys.readouterr().out
    assert "dask dashboard: http://127.0.0.1:" in text
    assert "[  1/16]" in text and "finished in" in text  # progress while it runs
    for name in ("report.html", "results.csv", "results.json", "samples.csv"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "results.csv")
    assert sorted(set(table.workload)) == sorted(DEMO_WORKLOADS)
    assert len(table) == len(DEMO_WORKLOADS) * 2
    status = table.set_index(["workload", "engine"]).status
    for w in DEMO_WORKLOADS:
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
    if not _have(NEEDS["read"]):
        pytest.skip("dasktrain.images has not landed")
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
    assert "cost_usd" in capsys.readouterr().out


def test_compare_command_unreachable_scheduler(tmp_path):
    args = _parse(
        ["compare", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "o")]
    )
    with dask.config.set({"dasktrain.connect-timeout": "1s"}):
        with pytest.raises(ClusterConnectionError, match="tcp://127.0.0.1:9"):
            args.func(args)


def test_parsers_register_with_the_cli():
    """The lead wires these with dasktrain.cli.register; the parsers must build there too."""
    args = _parse(["demo"])
    assert args.out == "report/" and args.workloads == list(DEMO_WORKLOADS)
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
        _parse(["compare", "data/", "--engines", "spark"])
