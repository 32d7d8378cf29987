"""Fault injection: kill -9 one Dask worker in the middle of every distributed step.

Each test runs on a cluster of its own (``own_client``: 2 worker processes, 1 thread each),
starts a step, waits until the step is really under way (tasks of the step have finished and
one is running on the victim, a checkpoint was written, a DDP rank reached a step), then sends
SIGKILL to that worker's process, found through the client (``client.run(os.getpid)``). It
asserts:

* the step finished with the right result, or raised a clear dasktrain error, within
  ``RECOVERY_S`` seconds of the kill;
* the client still works afterwards (the nanny brings the worker back; a small compute runs);
* no process is left behind: no zombie or stray child while the cluster runs, no DDP rank
  process anywhere, and no child of this process once the cluster is closed.
"""

from __future__ import annotations

import operator
import os
import signal
import sys
import threading
import time

import cloudpickle
import numpy as np
import psutil
import pytest
from _direct_passes import passes_served

import dasktrain
from dasktrain.ddp._env import ENV_PARENT_PID
from dasktrain.exceptions import DDPError, WorkerLostError

da = pytest.importorskip("dask.array")

# Rank processes and the scheduler probe cannot import this test module: send it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Seconds from the kill to the result or to a clear error.
RECOVERY_S = 30

pytestmark = pytest.mark.timeout(240)


# --------------------------------------------------------------------------- processes


def _children():
    return {p.pid: p for p in psutil.Process().children(recursive=True)}


#: Every worker process pid seen by these tests: a rank process is ours when its parent was one.
_WORKER_PIDS = set()


def _rank_processes():
    """DDP rank processes started by this test's workers, wherever they are now (an orphan is
    re-parented to init, so it is no longer our child). Other test sessions on the machine
    may run ranks of their own: a rank is ours when its worker (``DASKTRAIN_DDP_PARENT_PID``,
    set by the launcher) was one of ours."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "dasktrain.ddp._rank" not in cmd:
            continue
        try:
            parent = int(p.environ().get(ENV_PARENT_PID, "0"))
        except (psutil.Error, ValueError):
            continue
        if parent in _WORKER_PIDS:
            found.append(p)
    return found


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _zombies():
    """Zombie processes under this test process, Spark's launcher shell excepted.

    ``spark-class`` reads the JVM's command from a ``build_command`` subshell and ``exec``s the
    JVM at once: when the shell has not reaped that subshell yet, it becomes a child of the JVM,
    which never reaps it (2 of 8 plain ``SparkSession`` starts here). It is Spark's, it goes
    when the JVM does, and it is the only zombie that may stay.
    """
    found = []
    for p in _children().values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                continue
            if p.name() == "bash" and psutil.Process(p.ppid()).name() == "java":
                continue
        except psutil.NoSuchProcess:
            continue
        found.append(p.pid)
    return found


def _wait_gone(procs, seconds):
    deadline = time.monotonic() + seconds
    left = [p for p in procs if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if _alive(p)]
    return left


@pytest.fixture
def leftovers():
    """After the test's cluster is closed: no new child process and no rank process remain."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # one per process, shared by every cluster: not a leak
    before = set(_children())
    ranks_before = {p.pid for p in _rank_processes()}
    yield
    new = [p for pid, p in _children().items() if pid not in before]
    stray = _wait_gone(new, 20)
    ranks = _wait_gone([p for p in _rank_processes() if p.pid not in ranks_before], 20)
    assert not stray, f"processes left behind: {[(p.pid, p.cmdline()) for p in stray]}"
    assert not ranks, f"DDP rank processes left behind: {[p.pid for p in ranks]}"


@pytest.fixture
def fault_client(leftovers, own_client):
    # `leftovers` is set up first, so it checks after own_client's cluster is closed.
    own_client.wait_for_workers(2, timeout=60)
    _WORKER_PIDS.update(own_client.run(os.getpid).values())
    return own_client


def _assert_recovered(client, n_workers=2):
    """The client works, the cluster is back to size, and nothing stray runs under it."""
    client.wait_for_workers(n_workers, timeout=60)
    assert client.submit(operator.add, 1, 2, pure=False).result(timeout=30) == 3
    x = da.ones(1000, chunks=100)
    assert client.compute(x.sum()).result(timeout=30) == 1000
    workers = set(client.run(os.getpid).values())
    _WORKER_PIDS.update(workers)
    zombies = _zombies()
    assert not zombies, f"zombie processes: {zombies}"
    children = _children()
    # A worker's children (a DDP rank, a stray subprocess) must be gone once its step is over.
    strays = [c for pid in workers if pid in children for c in children[pid].children()]
    assert not _wait_gone(strays, 20), f"worker children left: {strays}"
    assert not _wait_gone(_rank_processes(), 20), "DDP rank processes left behind"


# --------------------------------------------------------------------------- the killer


def _scheduler_progress(dask_scheduler, prefix):
    """How many tasks whose key prefix contains ``prefix`` have finished (reached memory) and
    which workers run one now. Graph optimisation may rename a prefix (from_array fused into
    ``array-cnnfeatures``), hence the substring."""
    done = sum(
        tp.state_counts.get("memory", 0)
        for name, tp in dask_scheduler.task_prefixes.items()
        if prefix in name
    )
    running = sorted(
        ws.address
        for ws in dask_scheduler.workers.values()
        if any(prefix in ts.prefix.name for ts in ws.processing)
    )
    return done, running


def tasks_in_flight(prefix, min_done=1, busy=True):
    """Ready when ``min_done`` tasks of ``prefix`` have finished and (``busy``) another runs:
    returns the worker running it (else the second worker)."""

    def ready(client):
        done, running = client.run_on_scheduler(_scheduler_progress, prefix=prefix)
        if done < min_done or (busy and not running):
            return None
        return running[0] if running else sorted(client.nthreads())[1]

    return ready


def file_exists(pattern, victim_index=1):
    """Ready when a file matching ``pattern`` exists: returns the ``victim_index``-th worker."""
    import glob

    def ready(client):
        if glob.glob(pattern):
            return sorted(client.nthreads())[victim_index]
        return None

    return ready


class Killer:
    """SIGKILL one worker process of ``client`` as soon as ``ready(client)`` names it."""

    def __init__(self, client, ready, timeout=120):
        self.client, self.ready, self.timeout = client, ready, timeout
        self.pids = client.run(os.getpid)
        _WORKER_PIDS.update(self.pids.values())
        self.victim = self.at = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="fault-killer")
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                victim = self.ready(self.client)
                if victim is not None:
                    os.kill(self.pids[victim], signal.SIGKILL)
                    self.victim, self.at = victim, time.monotonic()
                    return
                time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - reported by check()
            self.error = exc

    def check(self):
        """Assert the kill happened; return seconds since it."""
        self.thread.join(5)
        assert self.error is None, f"the killer failed: {self.error!r}"
        assert self.victim is not None, "the step ended before the worker could be killed"
        return time.monotonic() - self.at


# --------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((360, 48, 48, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(images):
    pytest.importorskip("torch")
    from dasktrain.features import CNNFeatures

    return CNNFeatures("smallcnn", engine="local").transform(images)


def test_lazy_feature_extraction_survives_a_killed_worker(fault_client, images, reference):
    from dasktrain.features import CNNFeatures

    client = fault_client
    X = da.from_array(images, chunks=(24, -1, -1, -1))
    feats = CNNFeatures("smallcnn", engine="dask").transform(X)
    killer = Killer(client, tasks_in_flight(feats.name.split("-")[0]))
    out = client.compute(feats).result(timeout=120)
    assert killer.check() < RECOVERY_S
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
    _assert_recovered(client)


def test_eager_feature_extraction_survives_a_killed_worker(fault_client, images, reference):
    # Regression: FutureCancelledError "already forgotten" (the scattered input was lost).
    from dasktrain.features import CNNFeatures

    client = fault_client
    killer = Killer(client, tasks_in_flight("cnnfeatures-piece"))
    out = CNNFeatures("smallcnn", engine="dask").transform(images, client=client)
    assert killer.check() < RECOVERY_S
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
    _assert_recovered(client)


def _slow_sum(piece):
    time.sleep(0.2)
    return float(piece.sum())


def test_a_piece_lost_more_often_than_allowed_fails_naming_it(fault_client, caplog):
    # The restart budget of map_scattered (Restarts, shared with the DDP job and the XGBoost
    # fit): with no resubmit allowed, the first piece lost with the killed worker is final.
    from dasktrain._dask import map_scattered
    from dasktrain.exceptions import WorkerLostError

    client = fault_client
    pieces = [np.full(10, i, dtype=np.float64) for i in range(40)]
    killer = Killer(client, tasks_in_flight("restarts-piece"))
    with pytest.raises(
        WorkerLostError, match=r"piece \d+ of the images .* lost with a worker 1 times"
    ):
        map_scattered(client, _slow_sum, pieces, name="restarts-piece", max_resubmits=0)
    assert killer.check() < RECOVERY_S
    _assert_recovered(client)
    # and with the default budget the same loss costs time, not the result
    killer = Killer(client, tasks_in_flight("restarts-again"))
    with caplog.at_level("WARNING", logger="dasktrain._dask.scatter"):
        out = map_scattered(client, _slow_sum, pieces, name="restarts-again")
    assert killer.check() < RECOVERY_S
    assert out == [10.0 * i for i in range(40)]
    # each resend is told on scatter's own logger, as the DDP job's and the fit's on theirs
    told = [r.getMessage() for r in caplog.records if r.name == "dasktrain._dask.scatter"]
    assert any("of the images failed: lost with a worker" in m for m in told), caplog.text
    _assert_recovered(client)


def test_eager_feature_extraction_without_workers_fails_clearly():
    # Regression: TypeError "float + str": the connect timeout "30s" reached client.scatter as
    # a string, so the intended WorkerLostError never fired.
    import dask
    from distributed import Client, LocalCluster

    from dasktrain.features import CNNFeatures

    pytest.importorskip("torch")
    images = np.random.default_rng(0).random((8, 32, 32, 1), dtype=np.float32)
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        with (
            LocalCluster(
                n_workers=0, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            t0 = time.monotonic()
            with pytest.raises(WorkerLostError) as info:
                CNNFeatures("smallcnn", engine="dask").transform(images, client=client)
            took = time.monotonic() - t0
    assert "within 3 s" in str(info.value) and "does it still have workers" in str(info.value)
    assert took < 3 + 10, took


# --------------------------------------------------------------------------- models


def direct_passes(client, more):
    """Ready when the workers have served ``more`` direct passes from now on (the second
    worker is the victim): a direct pass leaves no task behind to watch."""
    start = passes_served(client)

    def ready(client):
        if passes_served(client) - start < more:
            return None
        return sorted(client.nthreads())[1]

    return ready


def test_kmeans_fit_survives_a_killed_worker(fault_client, caplog):
    from dasktrain.models import KMeans

    client = fault_client
    # Uniform noise: Lloyd runs all max_iter iterations (blobs converge in one), at the width
    # of resnet18 features.
    X = np.random.default_rng(0).random((12000, 512), dtype=np.float32)
    Xd = da.from_array(X, chunks=(1000, -1))
    params = dict(n_clusters=8, engine="dask", client=client, tol=0, max_iter=60, random_state=0)
    ref = KMeans(**params).fit(Xd)
    # The passes run over direct connections to one task per worker (no task per pass): 20
    # passes served by the two workers is the middle of the fit (about 55 passes each).
    killer = Killer(client, direct_passes(client, 2 * 20))
    with caplog.at_level("WARNING", logger="dasktrain._dask.blocks"):
        km = KMeans(**params).fit(Xd)
    assert killer.check() < RECOVERY_S
    # The pass that broke and the next ones went through the scheduler...
    assert "left the direct group" in caplog.text
    # ...which recomputed the blocks lost with the worker from the graph: the same model.
    assert km.n_iter_ == ref.n_iter_ > 40  # converged (tol=0) at 53 here, long after the kill
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-5)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    _assert_recovered(client)


@pytest.fixture(scope="module")
def xgb_data():
    rng = np.random.default_rng(0)
    X = rng.random((12000, 32))
    return X, (X[:, 0] + X[:, 1] > 1).astype(int)


def test_xgboost_fit_fails_clearly_naming_the_lost_worker(fault_client, xgb_data, tmp_path):
    # Regression: a bare XGBoostError "Ring Allreduce failed ... Poll error".
    from dasktrain.models import XGBClassifier

    client = fault_client
    X, y = xgb_data
    ck = tmp_path / "ck"
    killer = Killer(client, file_exists(str(ck / "*.ubj")))
    model = XGBClassifier(
        n_estimators=2000, engine="dask", client=client, checkpoint_dir=ck, checkpoint_every=10
    )
    with pytest.raises(WorkerLostError) as info:
        model.fit(X, y)
    assert killer.check() < RECOVERY_S
    msg = str(info.value)
    assert killer.victim in msg and "left the cluster" in msg and "XGBoostError" in msg
    assert "xgb_model=" in msg and model.last_checkpoint_ in msg  # how to resume
    _assert_recovered(client)


def test_xgboost_fit_restarts_from_its_checkpoint(fault_client, xgb_data, tmp_path):
    from dasktrain.models import XGBClassifier

    client = fault_client
    X, y = xgb_data
    ck = tmp_path / "ck"
    killer = Killer(client, file_exists(str(ck / "*-000020.ubj")))
    model = XGBClassifier(
        n_estimators=150,
        engine="dask",
        client=client,
        checkpoint_dir=ck,
        checkpoint_every=10,
        max_restarts=1,
    ).fit(X, y)
    assert killer.check() < RECOVERY_S + 30  # the rest of the training included
    assert model.restarts_ == 1 and killer.victim in model.failures_[0]
    assert "last checkpoint after" in model.failures_[0]
    assert model.booster_.num_boosted_rounds() == 150
    assert model.score(X, y) > 0.95
    _assert_recovered(client)


# --------------------------------------------------------------------------- DDP


def _ddp_steps(marker, steps, pause):
    """All-reduce in a loop with a checkpoint per step; resumes from the checkpoint."""
    import torch
    import torch.distributed as dist

    import dasktrain.ddp as ddp

    state = ddp.load_checkpoint()
    start = 0 if state is None else int(state["step"]) + 1
    for step in range(start, steps):
        t = torch.ones(1)
        dist.all_reduce(t)
        if ddp.rank_info().checkpoint_dir:
            ddp.save_checkpoint({"step": step})
        ddp.report(step=step)
        if step == 2 and ddp.rank_info().rank == 0:
            open(marker, "w").close()
        time.sleep(pause)
    return {"start": start, "pid": os.getpid()}


def test_ddp_run_without_restarts_fails_fast(fault_client, tmp_path):
    pytest.importorskip("torch")
    import dasktrain.ddp as ddp

    client = fault_client
    marker = str(tmp_path / "step-2")
    killer = Killer(client, file_exists(marker))
    with pytest.raises(DDPError) as info:
        ddp.run(_ddp_steps, marker, 400, 0.1, client=client, timeout=120)
    assert killer.check() < RECOVERY_S
    assert killer.victim in str(info.value) and "left the cluster" in str(info.value)
    _assert_recovered(client)


def test_ddp_run_with_restarts_resumes(fault_client, tmp_path):
    pytest.importorskip("torch")
    import dasktrain.ddp as ddp

    client = fault_client
    marker = str(tmp_path / "step-2")
    killer = Killer(client, file_exists(marker))
    res = ddp.run(
        _ddp_steps,
        marker,
        10,
        0.2,
        client=client,
        timeout=120,
        max_restarts=1,
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert killer.check() < RECOVERY_S + 30
    assert res.attempts == 2 and "left the cluster" in res.failures[0]
    assert sorted(res) == [0, 1] and res[0]["start"] == res[1]["start"] >= 3
    _assert_recovered(client)


# --------------------------------------------------------------------------- compare()


def _slow_piece(i):
    time.sleep(0.1)
    return i * i


def slow_squares(data, engine, client):
    """A dask workload of 40 small tasks; its quality is a checksum any recomputation keeps."""
    if engine == "dask":
        total = sum(client.gather(client.map(_slow_piece, range(40), pure=False)))
    else:
        total = sum(_slow_piece(i) for i in range(40))
    return {"checksum": float(total)}


def test_compare_marks_a_run_that_lost_a_worker(fault_client, tmp_path):
    # Regression: a run during which a worker died was recorded as an ordinary (slower) run.
    client = fault_client
    killer = Killer(client, tasks_in_flight("slow_piece"))
    data = (np.zeros((20, 3)), np.arange(20) % 2)
    res = dasktrain.compare(
        [slow_squares],
        data=data,
        engines=("dask",),
        baseline="dask",
        repeat=1,
        client=client,
        warmup=False,
        monitor=False,
        performance_report=False,
        out=tmp_path / "out",
        timeout=120,
    )
    assert killer.check() < RECOVERY_S
    row = res.runs.iloc[0]
    assert row.status == "ok" and row.quality == sum(i * i for i in range(40))
    assert row.workers_lost == 1 and killer.victim in row.note
    assert res.table.workers_lost.iloc[0] == 1 and "lost 1 worker" in res.to_string()
    logged = dasktrain.Results.from_runs(tmp_path / "out")
    assert logged.runs.workers_lost.iloc[0] == 1
    _assert_recovered(client)


# --------------------------------------------------------------------------- a dying Spark JVM


def _spark_or_skip():
    from dasktrain import spark as dspark

    reason = dspark.unavailable_reason()
    if reason is not None:
        if os.environ.get("DASKTRAIN_SPARK") == "require":
            pytest.fail(f"DASKTRAIN_SPARK=require but {reason}")
        pytest.skip(reason)


def _jvms():
    return [p for p in _children().values() if _alive(p) and p.name() == "java"]


def slow_on_spark(data, engine, client):
    """A Spark job of 40 slow items (about 10 s on local[2]); instant on the local engine."""
    if engine != "spark":
        return {"n": 40.0}
    _SPARK_RUN.set()
    rdd = client.sparkContext.parallelize(range(40), 2)
    return {"n": float(rdd.map(lambda x: (time.sleep(0.5), 1)[1]).sum())}


_SPARK_RUN = threading.Event()


def _kill_jvm_mid_run(killed):
    """Wait for the Spark run and its Python workers (the job is under way), SIGKILL the JVM."""
    assert _SPARK_RUN.wait(120), "the Spark run never started"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jvms = _jvms()
        if jvms and any(c.name().startswith("python") for j in jvms for c in j.children()):
            killed["pid"], killed["at"] = jvms[0].pid, time.monotonic()
            os.kill(jvms[0].pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def test_compare_survives_a_killed_spark_jvm(tmp_path):
    # Regression (issue 27, item 3): killing the JVM mid-run gave the row a raw
    # ConnectionRefusedError, then spark.stop() raised inside compare() (the Results were
    # lost) and the next compare() in the process failed at once.
    _spark_or_skip()
    _SPARK_RUN.clear()
    data = (np.random.default_rng(0).normal(size=(60, 4)), np.arange(60) % 2)
    killed = {}
    killer = threading.Thread(target=_kill_jvm_mid_run, args=(killed,), daemon=True)
    killer.start()
    kwargs = dict(data=data, repeat=1, warmup=False, progress=False, monitor=False)
    res = dasktrain.compare(
        [slow_on_spark, "naive_bayes"], engines=("local", "spark"), out=tmp_path / "o", **kwargs
    )
    returned = time.monotonic()
    killer.join(5)
    assert killed, "the JVM was never killed"
    assert returned - killed["at"] < RECOVERY_S
    rows = res.runs.set_index(["workload", "setup"])
    died = rows.loc[("slow_on_spark", "spark")]
    assert died.status == "error"
    assert died.error.startswith("SparkDiedError: Spark died:"), died.error
    assert str(killed["pid"]) in died.error and "SIGKILL" in died.error
    assert died.end - killed["at"] - (time.time() - time.monotonic()) < 10  # the row, at once
    later = rows.loc[("naive_bayes", "spark")]
    assert later.status == "error" and "Spark died" in later.error, later.error
    assert (rows.xs("local", level="setup").status == "ok").all()
    assert not _jvms()
    # The next comparison in this process starts a new session and runs on it.
    again = dasktrain.compare(["naive_bayes"], engines=("local", "spark"), **kwargs)
    assert (again.runs.status == "ok").all(), again.runs[["setup", "status", "error"]]
    # pyspark keeps the JVM of a stopped session for the life of the process (the next
    # session reuses it): one may remain, never the killed one and never a zombie.
    assert len(_jvms()) <= 1 and killed["pid"] not in {p.pid for p in _jvms()}
    zombies = _zombies()
    assert not zombies, f"zombie processes: {zombies}"


def _hold_the_thread(seconds):
    time.sleep(seconds)  # no secede(): the worker's only thread stays taken
    return seconds


def stuck_on_the_cluster(data, engine, client):
    """A dask run whose tasks hold every worker thread far past the comparison's time limit
    (cancelling them cannot stop a running Python task)."""
    if engine == "dask":
        n = sum(client.nthreads().values())
        client.gather(client.map(_hold_the_thread, [120] * n, pure=False))
    return {"accuracy": 1.0}


def quick_on_the_cluster(data, engine, client):
    if engine == "dask":
        assert client.submit(operator.add, 1, 2, pure=False).result() == 3
    return {"accuracy": 1.0}


def _stuck_comparison(tmp_path, **kw):
    return dasktrain.compare(
        [stuck_on_the_cluster, quick_on_the_cluster],
        data=(np.zeros((20, 3)), np.arange(20) % 2),
        engines=("dask",),
        baseline=next(iter(kw.get("clusters", {"dask": 0}))),
        repeat=2,
        warmup=False,
        monitor=False,
        performance_report=False,
        progress=False,
        timeout=3,
        out=tmp_path / "out",
        **kw,
    )


def test_a_timed_out_run_on_the_comparisons_own_cluster_restarts_the_stuck_workers(tmp_path):
    # Regression: the cancelled tasks kept the workers' only threads, so every later dask
    # run of the comparison timed out too (with a misleading reason).
    from dasktrain import _malloc

    environ = {k: os.environ.get(k) for k in _malloc.ENV_NAMES}
    t0 = time.monotonic()
    res = _stuck_comparison(tmp_path, clusters={"own": 2})
    took = time.monotonic() - t0
    assert {k: os.environ.get(k) for k in _malloc.ENV_NAMES} == environ  # the restart's too
    runs = res.runs.set_index(["workload", "repeat"]).sort_index()
    stuck = runs.loc[("stuck_on_the_cluster", 1)]
    assert stuck.status == "timeout" and "were restarted" in stuck.error
    assert "tcp://127.0.0.1:" in stuck.error  # names the workers
    quick = runs.loc["quick_on_the_cluster"]
    assert (quick.status == "ok").all(), quick.error.tolist()
    # The stuck workload's later repeat is skipped as before (it would time out again).
    assert len(runs.loc["stuck_on_the_cluster"]) == 1
    assert took < 90, took


def test_a_timed_out_run_on_the_users_cluster_marks_the_later_runs_not_run(fault_client, tmp_path):
    # The user's cluster is never restarted: the later rows on it say why they did not run.
    client = fault_client
    res = _stuck_comparison(tmp_path, client=client)
    runs = res.runs.set_index(["workload", "repeat"]).sort_index()
    stuck = runs.loc[("stuck_on_the_cluster", 1)]
    assert stuck.status == "timeout" and "left busy" in stuck.error
    assert "not restarted" in stuck.error
    # One row per later workload on that setup (its repeats are skipped, as for any setup
    # that cannot run), saying why it did not run.
    quick = runs.loc["quick_on_the_cluster"]
    assert len(quick) == 1 and (quick.status == "unavailable").all()
    assert quick.error.str.contains("not run: the cluster was left busy by a timed-out run").all()
    client.restart()  # what the row tells the user to do; the fixture's checks follow
    _assert_recovered(client)
