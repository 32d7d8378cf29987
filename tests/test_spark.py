"""Spark as the third engine, on a real ``local[2]`` session (pyspark and a Java runtime).

Without pyspark or Java these tests skip, except where ``DASKTRAIN_SPARK=require`` (CI), which
turns "Spark cannot start here" into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from dasktrain import spark as dspark
from dasktrain.datasets import make_xray_like
from dasktrain.exceptions import OptionalDependencyError

REQUIRE_ENV = "DASKTRAIN_SPARK"


@pytest.fixture(scope="module")
def spark():
    reason = dspark.unavailable_reason()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "require":
            pytest.fail(f"{REQUIRE_ENV}=require but {reason}")
        pytest.skip(reason)
    session = dspark.spark_session(2)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    path = tmp_path_factory.mktemp("xray")
    make_xray_like(path, n_per_class=24, size=64, seed=3)
    return path


def _blobs(n, d, k, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d)).astype(np.float32)
    y = np.arange(n) % k
    return centers[y] + rng.normal(scale=spread, size=(n, d)).astype(np.float32), y


def _jvm(spark_session):
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "java"]


def test_session_listens_on_loopback_only(spark):
    jvms = _jvm(spark)
    assert jvms, "the session's JVM is not a child of this process"
    listening = [
        c.laddr.ip
        for p in jvms
        for c in (getattr(p, "net_connections", None) or p.connections)(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening
    assert set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    assert dspark.session_cores(spark) == 2


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_read_equals_local_bit_for_bit(spark, xray, color):
    from dasktrain.images import read_images

    df, classes = dspark.read_images(spark, xray, size=(48, 40), color=color)
    X, y = dspark.to_numpy(df, size=(48, 40), color=color)
    local = read_images(xray, size=(48, 40), color=color, engine="local")
    assert classes == list(local.classes)
    np.testing.assert_array_equal(X, np.asarray(local.X))
    np.testing.assert_array_equal(y, np.asarray(local.y))


def test_read_names_an_undecodable_file(spark, tmp_path):
    make_xray_like(tmp_path, n_per_class=4, size=32, seed=1)
    victim = sorted(tmp_path.rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:60])  # header intact, pixels cut off
    with pytest.raises(Exception, match=victim.name):  # read_images counts what it read
        dspark.read_images(spark, tmp_path, size=(32, 32))
    assert spark.range(3).count() == 3


def _one_bad_file(root, kind):
    """Put a file the images room refuses (or Spark cannot see) beside 6 good ones."""
    folder = root / "NORMAL"
    if kind == "empty":
        (folder / "zero.png").write_bytes(b"")
        return folder / "zero.png"
    if kind == "fifo":
        os.mkfifo(folder / "pipe.png")
        return folder / "pipe.png"
    name = {"underscore": "_scan.png", "colon": "scan:1.png"}[kind]
    good = sorted(folder.glob("*.png"))[0]  # a good image Hadoop's listing hides or fails on
    (folder / name).write_bytes(good.read_bytes())
    return folder / name


@pytest.mark.parametrize("kind", ["empty", "fifo", "underscore", "colon"])
def test_read_never_drops_a_file_the_other_engines_refuse_or_read(spark, tmp_path, kind):
    # Regression (issue 27, item 4): a 0-byte file or a named pipe gave 6 of 7 images and an
    # ok row on Spark where the local and dask engines raise; a '_' name (hidden to Hadoop)
    # was read by the other engines and silently left out by Spark.
    from dasktrain.exceptions import ImageReadError
    from dasktrain.images import read_images

    make_xray_like(tmp_path, n_per_class=4, size=32, seed=1)
    root = tmp_path / "train"
    bad = _one_bad_file(root, kind)
    if kind in ("empty", "fifo"):
        with pytest.raises(ImageReadError, match=bad.name):
            read_images(root, size=32, engine="local")
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError, match=bad.name) as err:
        df, _ = dspark.read_images(spark, root, size=(32, 32))
        df.count()
    assert time.perf_counter() - t0 < 30
    if kind in ("underscore", "colon"):
        assert "engine='local' or 'dask'" in str(err.value) and "rename" in str(err.value).lower()
    assert spark.range(3).count() == 3


def test_read_odd_file_names_equal_local(spark, tmp_path):
    # Regression: Spark's path column is not percent-encoded; parsed as a URL, 'a#b.png' lost
    # its row silently and 'a%20b.png' took the row of 'a b.png'.
    from dasktrain.images import read_images

    make_xray_like(tmp_path, n_per_class=4, size=32, seed=1)
    root = tmp_path / "train"
    images = sorted(root.rglob("*.png"))
    for i, name in enumerate(["a#b.png", "a b.png", "a%20b.png", "a?b.png", "é.png"]):
        (images[i].parent / name).write_bytes(images[i].read_bytes())
    df, _ = dspark.read_images(spark, root, size=(32, 32))
    X, y = dspark.to_numpy(df, size=(32, 32))
    local = read_images(root, size=32, engine="local")
    assert len(X) == len(local.paths) == 11
    np.testing.assert_array_equal(X, np.asarray(local.X))
    np.testing.assert_array_equal(y, np.asarray(local.y))


@pytest.mark.parametrize("backbone, d", [("smallcnn", 64), ("resnet18", 512)])
def test_cnn_features_equal_local(spark, xray, backbone, d):
    from dasktrain.features import CNNFeatures

    df, _ = dspark.read_images(spark, xray, size=(64, 64))
    X, _ = dspark.to_numpy(df, size=(64, 64))
    F = dspark.collect_column(dspark.cnn_features(df, backbone, size=(64, 64), seed=5), "features")
    local = CNNFeatures(backbone, engine="local", seed=5).fit(X).transform(X)
    assert F.shape == (len(X), d)
    np.testing.assert_allclose(F, np.asarray(local), atol=1e-5)
    # Images already in memory (the harness's features step) give the same features.
    F2 = dspark.image_features(spark, X, backbone, seed=5)
    np.testing.assert_allclose(F2, np.asarray(local), atol=1e-5)


def test_kmeans_k8_on_512_columns_finds_the_blobs(spark):
    from dasktrain import metrics

    F, y = _blobs(480, 512, 8, seed=1)
    out = dspark.kmeans(spark, F, y, seed=0)
    assert out["adjusted_rand"] > 0.99
    assert out["n_iter"] >= 1 and out["train_time"] > 0
    assert out["silhouette"] == pytest.approx(metrics.silhouette_score(F, y), abs=0.02)


def _split(F, y):
    half = len(F) // 2  # labels alternate, so both halves hold every class
    return F[:half], F[half:], y[:half], y[half:]


def _local_accuracy(est, split):
    from dasktrain import metrics

    Ftr, Fte, ytr, yte = split
    return metrics.accuracy_score(yte, est.fit(Ftr, ytr).predict(Fte))


@pytest.mark.parametrize("name", ["logreg", "naive_bayes", "xgboost"])
def test_classifiers_on_8192_columns_match_the_local_engine(spark, name):
    from dasktrain.models import GaussianNB, LogisticRegression, XGBClassifier

    F, y = _blobs(160, 8192, 2, seed=2, spread=12.0)  # overlapping: accuracy below 1
    split = _split(F, y)
    local = {
        "logreg": lambda: LogisticRegression(engine="local", max_iter=200),
        "naive_bayes": lambda: GaussianNB(engine="local"),
        "xgboost": lambda: XGBClassifier(
            n_estimators=20, max_depth=4, learning_rate=0.3, engine="local", random_state=0
        ),
    }[name]()
    kwargs = {"n_estimators": 20} if name == "xgboost" else {}
    out = getattr(dspark, name)(spark, split, **kwargs)
    assert out["accuracy"] == pytest.approx(_local_accuracy(local, split), abs=0.06)
    assert 0.5 <= out["roc_auc"] <= 1.0


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _python_workers(spark_session):
    """The JVM's Python side: pyspark's daemon and the workers it forked (barrier tasks)."""
    return [c for j in _jvm(spark_session) for c in j.children(recursive=True)]


def test_xgboost_fit_binds_what_dasktrain_controls_to_loopback(spark, listening_sockets):
    # Issue 27, item 11: the tracker (in this process) is bound to the driver's address and the
    # JVM to loopback; xgboost's own worker sockets (in Spark's Python workers) listen on all
    # interfaces, with no setting to change it (dmlc/xgboost#11551, docs/deploying.rst).
    listening, sampling = listening_sockets
    F, y = _blobs(200, 16, 2, seed=3, spread=3.0)
    jvms = {p.pid for p in _jvm(spark)}

    def pids():
        return [os.getpid(), *jvms, *(p.pid for p in _python_workers(spark))]

    before = listening(pids())
    with sampling(pids) as seen:
        dspark.xgboost(spark, _split(F, y), n_estimators=60)
    during = seen - before
    mine = {ip for pid, ip, _ in during if pid == os.getpid()}
    assert mine and mine <= LOOPBACK, during  # the tracker
    assert {ip for pid, ip, _ in during | before if pid in jvms} <= LOOPBACK, during
    anywhere = {pid for pid, ip, _ in during if ip not in LOOPBACK}
    assert anywhere and not anywhere & (jvms | {os.getpid()}), during  # xgboost's workers only


def test_mlp_cv_uses_scikit_learn_folds_and_matches_local(spark):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dasktrain.models import MLPClassifier, cross_validate

    F, y = _blobs(150, 512, 3, seed=4, spread=6.0)
    out = dspark.mlp_cv(spark, F, y, cv=3, max_iter=25, seed=0)
    est = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=25, random_state=0))
    local = np.mean(cross_validate(est, F, y, cv=3, engine="local")["test_score"])
    assert out["accuracy"] == pytest.approx(local, abs=0.1)


def _forked_python_workers(spark_session):
    """The Python workers the pyspark daemon (a child of the JVM) forked for running tasks."""
    found = []
    for jvm in _jvm(spark_session):
        for daemon in jvm.children():
            try:
                found += daemon.children() if "pyspark" in " ".join(daemon.cmdline()) else []
            except psutil.Error:
                continue  # the daemon is restarting
    return found


def test_killed_python_worker_mid_features_is_a_clear_error(spark, xray):
    df, _ = dspark.read_images(spark, xray, size=(64, 64))
    feats = dspark.cnn_features(df.repartition(24), "resnet34", size=(64, 64), seed=0)
    outcome = {}

    def run():
        try:
            outcome["value"] = feats.count()
        except Exception as exc:  # noqa: BLE001 - the test inspects it below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    killed = []
    while not killed and time.monotonic() < deadline and thread.is_alive():
        for p in _forked_python_workers(spark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
                killed.append(p.pid)
        time.sleep(0.05)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the Spark job hung after its Python worker was killed"
    assert killed, "no Python worker was seen to kill"
    # local[N] runs each task once: the job fails, naming the crash (or, had the kill landed
    # between tasks, Spark restarts the worker and the count is right).
    if "error" in outcome:
        assert "crash" in str(outcome["error"]).lower() or "exit" in str(outcome["error"]).lower()
    else:
        assert outcome["value"] == 48
    assert spark.range(5).count() == 5


def test_compare_uses_a_running_session_and_leaves_it_running(spark):
    import dasktrain

    F, y = _blobs(120, 64, 2, seed=8, spread=3.0)
    res = dasktrain.compare(
        ["naive_bayes"],
        data=(F, y),
        engines=("local", "spark"),
        repeat=1,
        warmup=False,
        progress=False,
        monitor=False,
    )
    assert res.table.set_index("setup").loc["spark", "status"] == "ok"
    assert res.setup["setups"]["spark"]["started_here"] is False
    assert spark.range(3).count() == 3  # not stopped: it was the user's


def test_the_read_workload_takes_a_height_width_image_size(spark, tmp_path):
    # Regression: the Spark twin of "read" passed size=((h, w), (h, w)) for an image_size
    # given as (height, width), and its run failed where the local engine's read worked.
    import dasktrain
    from dasktrain.datasets import make_xray_like

    root = make_xray_like(tmp_path / "x", n_per_class=6, size=24, seed=0)
    res = dasktrain.compare(
        ["read"],
        data=root / "train",
        engines=("local", "spark"),
        repeat=1,
        warmup=False,
        progress=False,
        monitor=False,
        options={"image_size": (24, 16)},
    )
    status = res.table.set_index("setup")["status"]
    assert (status == "ok").all(), res.runs[["setup", "status", "error"]].to_string()


def _run_without_java(code, empty_dir, timeout=300):
    """Run ``code`` in a Python whose environment has no Java (no JAVA_HOME, an empty PATH)."""
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(empty_dir)  # an empty folder: no `java` on the PATH
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_without_java_spark_is_unavailable_with_the_reason(tmp_path):
    code = (
        "from dasktrain import spark as s\n"
        "print(s.unavailable_reason())\n"
        "try:\n    s.spark_session(2)\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    stdout = _run_without_java(code, tmp_path)
    assert "no Java runtime" in stdout
    assert OptionalDependencyError.__name__ in stdout


def test_compare_runs_three_engines_with_the_same_quality(spark, client, tmp_path):
    import dasktrain

    # Separated enough for KMeans to find the two blobs on every engine (the classifiers'
    # agreement on overlapping classes is tested above, at 8,192 columns).
    F, y = _blobs(240, 512, 2, seed=6, spread=3.0)
    res = dasktrain.compare(
        ["kmeans", "logreg", "naive_bayes", "xgboost", "ddp_cnn"],
        data=(F, y),
        engines=("local", "dask", "spark"),
        client=client,
        spark=spark,
        repeat=1,
        warmup=False,
        progress=False,
        options={"n_estimators": 10},
    )
    t = res.table.set_index(["workload", "setup"])
    for w in ("kmeans", "logreg", "naive_bayes", "xgboost"):
        assert t.loc[(w, "spark"), "status"] == "ok", t.loc[(w, "spark"), "error"]
        assert t.loc[(w, "spark"), "time_median"] > 0
        assert t.loc[(w, "spark"), "quality"] == pytest.approx(
            t.loc[(w, "local"), "quality"], abs=0.06
        ), w
    assert t.loc[("ddp_cnn", "spark"), "status"] == "unavailable"
    assert "no Spark implementation" in t.loc[("ddp_cnn", "spark"), "error"]
    assert res.setup["setups"]["spark"]["threads"] == 2
    kmeans = res.verdicts.set_index("workload").verdict["kmeans"]
    assert "spark" in kmeans and "x" in kmeans.split("spark")[-1], kmeans  # its speed is said
    res.save(tmp_path / "report")
    assert "spark" in (tmp_path / "report" / "report.html").read_text()
    assert spark.range(3).count() == 3  # the user's session is left running


def test_compare_without_java_reports_spark_unavailable_and_runs_the_rest(tmp_path):
    code = (
        "import json, numpy as np, dasktrain\n"
        "X = np.random.default_rng(0).normal(size=(120, 64)); y = np.arange(120) % 2\n"
        "res = dasktrain.compare(['naive_bayes'], data=(X, y), engines=('local', 'spark'),\n"
        "    repeat=1, warmup=False, progress=False, monitor=False)\n"
        "print(json.dumps(res.table[['setup', 'status', 'error']].values.tolist()))\n"
    )
    last = _run_without_java(code, tmp_path).splitlines()[-1]
    rows = {setup: (status, error) for setup, status, error in json.loads(last)}
    assert rows["local"][0] == "ok"
    assert rows["spark"][0] == "unavailable"
    assert "no Java runtime" in rows["spark"][1]


def test_compare_log_takes_the_jvm_output_off_the_terminal(tmp_path):
    if dspark.unavailable_reason() is not None:
        pytest.skip(dspark.unavailable_reason())
    log = tmp_path / "dasktrain.log"
    code = (
        "import numpy as np, dasktrain\n"
        "X = np.random.default_rng(0).normal(size=(120, 64)); y = np.arange(120) % 2\n"
        "res = dasktrain.compare(['naive_bayes'], data=(X, y), engines=('local', 'spark'),\n"
        f"    repeat=1, warmup=False, progress=False, monitor=False, log={str(log)!r})\n"
        "print('STATUS', res.table.set_index('setup').loc['spark', 'status'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STATUS ok" in out.stdout
    terminal = out.stdout + out.stderr
    assert "log4j" not in terminal and "WARN" not in terminal, terminal[-2000:]
    assert "log4j" in log.read_text()  # the JVM's start-up lines went to the log
