"""Workers paused for memory that is really in use: every blocking call ends with a clear error.

One cluster for the module (``dasktrain.connect``: 1 worker of 1 GiB that pauses at 30% and
never spills), with a 2-second grace period (``dasktrain.paused-workers.grace``). Each test
makes the worker hold 320 MiB in a kept future (:func:`held`: memory in use, which
``ReleaseMemory`` cannot hand back, so the worker stays paused), runs one blocking call of
dasktrain, and checks that it raises :class:`WorkersPausedError` naming the worker, its memory
and limit and the fix, within seconds of the grace period instead of hanging (distributed#5999).
Releasing the held memory afterwards, the worker resumes and the client works again.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import time

import dask
import distributed  # noqa: F401 - its settings must exist before dask.config.set changes them
import numpy as np
import pytest

import dasktrain
from dasktrain.exceptions import WorkersPausedError

da = pytest.importorskip("dask.array")

GRACE = 2.0
#: Seconds from the end of the grace period to the error (a look every 0.5 s, the message's
#: round trips, the call's own start-up on a busy machine).
LATE_S = 10.0
_MB = 2**20
#: MiB a test makes the worker hold: above the pause mark (30% of 1 GiB, 307 MiB) on its own.
#: 240 MiB paused the worker only with its ~65 MiB at start added (304 MiB on the last
#: measure: 3 MiB short, and the paused-worker tests failed on a worker that stayed running).
HOLD_MIB = 320

pytestmark = pytest.mark.timeout(60)

SETTINGS = {
    "distributed.worker.memory.pause": 0.3,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.terminate": False,
    "dasktrain.paused-workers.grace": f"{GRACE}s",
}


@pytest.fixture(scope="module")
def pc():
    """The module's client: 1 worker of 1 GiB pausing at 30%, a 2 s grace period."""
    with dask.config.set(SETTINGS):
        client = dasktrain.connect(
            n_workers=1, memory_limit="1GiB", gpu=False, dashboard_address="127.0.0.1:0"
        )
        with client:
            yield client


def _status(client):
    def statuses(dask_scheduler):
        return [ws.status.name for ws in dask_scheduler.workers.values()]

    return client.run_on_scheduler(statuses)


def _wait_status(client, status, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _status(client) == [status]:
            return
        time.sleep(0.1)
    raise AssertionError(f"the worker is {_status(client)}, not {status!r}")


@contextlib.contextmanager
def held(client, mib=HOLD_MIB):
    """The worker holds ``mib`` MiB in a kept future (in use: no release), so it pauses.

    Afterwards the memory is released, the worker resumes and the client computes again.
    """
    kept = client.submit(np.ones, mib * _MB, np.uint8, pure=False)
    kept.result(timeout=30)  # one task: it runs to the end, the pause comes after it
    _wait_status(client, "paused")
    try:
        yield kept
    finally:
        del kept
        _wait_status(client, "running")
        assert client.submit(operator.add, 1, 2, pure=False).result(timeout=30) == 3


def _assert_clear(exc_info, client, t0):
    took = time.monotonic() - t0
    msg = str(exc_info.value)
    (worker,) = client.nthreads()
    assert worker in msg and "paused for memory" in msg
    assert "MiB limit" in msg and "memory_limit=" in msg and "smaller chunks" in msg
    assert "dasktrain.paused-workers" in msg
    assert GRACE <= took < GRACE + LATE_S, took
    return took


# ------------------------------------------------------------------------------- the plumbing
def _busy_with_memory(seconds):
    """A task whose own memory pauses its worker while it runs, and that then finishes."""
    block = np.ones(HOLD_MIB * _MB, np.uint8)
    time.sleep(seconds)
    return int(block[:10].sum())


def test_a_task_running_on_a_paused_worker_is_waited_for(pc):
    # Not stuck: a paused worker finishes what it runs. Waiting longer than the grace period
    # for it must not raise.
    from dasktrain._dask import gather

    fut = pc.submit(_busy_with_memory, 3 * GRACE, pure=False)
    assert gather(pc, [fut]) == [10]
    _wait_status(pc, "running")


def test_gather_raises_naming_the_paused_worker(pc):
    from dasktrain._dask import gather

    with held(pc):
        fut = pc.submit(operator.add, 1, 2, pure=False)
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            gather(pc, [fut], what="the test's gather")
        _assert_clear(info, pc, t0)
        assert "the test's gather cannot go on" in str(info.value)
        assert "add x 1" in str(info.value)  # what the stuck tasks do, from their keys
        del fut


def _leak(mib, dask_worker):
    """Memory the worker process holds outside Dask (a library's cache): only a restart
    frees it (a kept future would be recomputed after the restart, and pause again)."""
    dask_worker.test_leak = np.ones(mib * _MB, np.uint8)


def _malloc_environ():
    from dasktrain import _malloc

    return {k: os.environ.get(k) for k in _malloc.ENV_NAMES}


def test_restart_when_asked_lets_the_work_finish(pc, caplog):
    from dasktrain._dask import gather

    before = _malloc_environ()
    with dask.config.set({"dasktrain.paused-workers.restart": True}):
        pc.run(_leak, HOLD_MIB)
        _wait_status(pc, "paused")
        fut = pc.submit(operator.add, 1, 2, pure=False)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="dasktrain._dask.paused"):
            assert gather(pc, [fut]) == [3]
        assert GRACE <= time.monotonic() - t0 < GRACE + LATE_S + 10  # + the restart
        assert "restarting them" in caplog.text
        del fut
    _wait_status(pc, "running")
    # The nanny copied the workers' allocator variables into this process's environment to
    # restart them: put back (later clusters and subprocesses would inherit them) once its
    # spawn returns, which can be a moment after the scheduler sees the new worker running
    # (asserted at once, the test failed 3 times in 5, on the last landed main too).
    deadline = time.monotonic() + 10
    while _malloc_environ() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _malloc_environ() == before


# ------------------------------------------------------------------------------- the library
def test_read_images_on_paused_workers(pc, tmp_path):
    from dasktrain.datasets import make_xray_like
    from dasktrain.images import read_images

    root = make_xray_like(tmp_path / "xr", n_per_class=6, size=32, seed=0)
    with held(pc), pc.as_current():
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            read_images(root / "train", size=32, engine="dask").compute()
        _assert_clear(info, pc, t0)


def test_kmeans_task_passes_on_paused_workers(pc):
    from dasktrain.models import KMeans

    X = np.random.default_rng(0).random((400, 8))
    Xd = pc.persist(da.from_array(X, chunks=100))
    pc.gather(pc.compute(Xd.sum()))  # persisted before the pause: the passes are stuck
    with dask.config.set({"dasktrain.direct-passes": False}), held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            KMeans(n_clusters=3, engine="dask", client=pc, random_state=0).fit(Xd)
        _assert_clear(info, pc, t0)


def test_kmeans_direct_passes_on_paused_workers(pc):
    from dasktrain.models import KMeans

    X = np.random.default_rng(0).random((400, 8))
    Xd = pc.persist(da.from_array(X, chunks=100))
    pc.gather(pc.compute(Xd.sum()))
    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            KMeans(n_clusters=3, engine="dask", client=pc, random_state=0).fit(Xd)
        took = _assert_clear(info, pc, t0)
        # Not the direct group's 30 s connect timeout, then the task passes' grace period.
        assert took < GRACE + LATE_S


def test_kmeans_on_numpy_on_paused_workers(pc):
    from dasktrain.models import KMeans

    X = np.random.default_rng(0).random((400, 8))
    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            KMeans(n_clusters=3, engine="dask", client=pc, random_state=0).fit(X)
        _assert_clear(info, pc, t0)


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    X = rng.random((600, 6))
    return X, (X[:, 0] > 0.5).astype(int)


def test_xgboost_fit_on_paused_workers(pc, xy):
    pytest.importorskip("xgboost")
    from dasktrain.models import XGBClassifier

    X, y = xy
    # Persisted before the pause: the wait is xgboost.dask's own, behind the guard.
    Xd, yd = pc.persist([da.from_array(X, chunks=200), da.from_array(y, chunks=200)])
    pc.gather(pc.compute([Xd.sum(), yd.sum()]))
    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            XGBClassifier(n_estimators=5, engine="dask", client=pc).fit(Xd, yd)
        _assert_clear(info, pc, t0)


def test_xgboost_predict_on_paused_workers(pc, xy):
    pytest.importorskip("xgboost")
    from dasktrain.models import XGBRegressor

    X, y = xy
    model = XGBRegressor(n_estimators=5, engine="local").fit(X, y)
    model.set_params(engine="dask", client=pc)
    Xd = pc.persist(da.from_array(X, chunks=200))
    pc.gather(pc.compute(Xd.sum()))
    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            model.score(Xd, y)
        _assert_clear(info, pc, t0)


def test_classic_fit_on_paused_workers(pc, xy):
    # The checks of a dask y (its classes) are dask's own compute: behind the fit's guard.
    from dasktrain.models import LogisticRegression

    X, y = xy
    Xd, yd = pc.persist([da.from_array(X, chunks=200), da.from_array(y, chunks=200)])
    pc.gather(pc.compute([Xd.sum(), yd.sum()]))
    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            LogisticRegression(engine="dask", client=pc).fit(Xd, yd)
        _assert_clear(info, pc, t0)


def test_eager_features_on_paused_workers(pc):
    pytest.importorskip("torch")
    from dasktrain.features import CNNFeatures

    images = np.random.default_rng(0).random((16, 32, 32, 1), dtype=np.float32)
    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            CNNFeatures("smallcnn", engine="dask").transform(images, client=pc)
        _assert_clear(info, pc, t0)


def _ddp_nothing():
    return 1


def test_ddp_run_on_paused_workers(pc):
    pytest.importorskip("torch")
    import dasktrain.ddp as ddp

    with held(pc):
        t0 = time.monotonic()
        with pytest.raises(WorkersPausedError) as info:
            ddp.run(_ddp_nothing, client=pc, timeout=50)
        _assert_clear(info, pc, t0)
        assert "could not probe a free port" not in str(info.value)


def _squares(data, engine, client):
    """A user's workload: the guard of compare() watches what it waits for."""
    return {"checksum": float(sum(client.gather(client.map(operator.mul, range(8), range(8)))))}


def test_compare_on_paused_workers(pc, tmp_path):
    data = (np.zeros((20, 3)), np.arange(20) % 2)
    with held(pc):
        t0 = time.monotonic()
        res = dasktrain.compare(
            [_squares],
            data=data,
            engines=("dask",),
            baseline="dask",
            repeat=1,
            client=pc,
            warmup=False,
            monitor=False,
            performance_report=False,
            progress=False,
        )
        took = time.monotonic() - t0
    row = res.runs.iloc[0]
    assert row.status == "error" and "WorkersPausedError" in row.error
    assert next(iter(pc.nthreads())) in row.error and "memory_limit=" in row.error
    assert GRACE <= took < GRACE + LATE_S + 10, took  # + the comparison's own start
