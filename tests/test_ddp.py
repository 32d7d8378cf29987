"""dasktrain.ddp on a real LocalCluster with gloo: results, collectives, metrics, failures."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import cloudpickle
import numpy as np
import pytest

import dasktrain.ddp as ddp
from dasktrain.exceptions import DDPError, ValidationError

torch = pytest.importorskip("torch")

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------- train functions (by value)


def _allreduce_fn(x):
    import torch.distributed as dist

    info = ddp.rank_info()
    t = torch.tensor([float(info.rank)])
    dist.all_reduce(t)
    print(f"stdout of rank {info.rank}")
    print(f"stderr of rank {info.rank}", file=sys.stderr)
    return {
        "rank": info.rank,
        "world_size": info.world_size,
        "sum": t.item(),
        "x": x,
        "threads": torch.get_num_threads(),
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "local_world_size": int(os.environ["LOCAL_WORLD_SIZE"]),
        "master_addr": os.environ["MASTER_ADDR"],
        "master_port": int(os.environ["MASTER_PORT"]),
        "backend": info.backend,
        "pid": os.getpid(),
    }


def _count_calls(path):
    if ddp.rank_info().rank == 0:
        with open(path, "a") as fh:
            fh.write("called\n")
    return ddp.rank_info().rank


def _stream_fn(n, pause):
    for step in range(n):
        ddp.report(step=step, value=step * 10 + ddp.rank_info().rank)
        time.sleep(pause)
    return n


def _fail_rank1():
    import torch.distributed as dist

    if ddp.rank_info().rank == 1:
        print("about to fail: marker-7781", file=sys.stderr)
        raise ValueError("boom 42")
    t = torch.ones(1)
    dist.all_reduce(t)  # rank 0 would wait here forever without the teardown
    return 0


def _sleep_fn(seconds):
    t0 = time.time()
    time.sleep(seconds)
    return (t0, time.time())


def _loader_indices(n, batch_size):
    info = ddp.rank_info()
    ds = torch.utils.data.TensorDataset(torch.arange(n))
    out = {"rank": info.rank}
    for scaling in ("global", "per-rank"):
        loader = ddp.prepare_loader(ds, batch_size, batch_scaling=scaling, seed=3)
        out[scaling] = {
            "epochs": [[b[0].tolist() for b in loader] for _ in range(2)],
            "sizes": (loader.per_rank_batch_size, loader.global_batch_size, loader.lr_scale),
        }
    return out


# ---------------------------------------------------------------- tests on the session cluster


def test_results_per_rank_and_allreduce(client):
    res = ddp.run(_allreduce_fn, 5, client=client, timeout=60, port_range=(29400, 29999))
    assert isinstance(res, ddp.DDPResult) and isinstance(res, dict)
    assert sorted(res) == [0, 1]
    for rank, value in res.items():
        assert value["rank"] == rank
        assert value["world_size"] == 2
        assert value["sum"] == 1.0  # 0 + 1
        assert value["x"] == 5
        assert value["threads"] == 1  # the worker has one thread
        assert value["backend"] == "gloo"
        assert value["master_addr"] == "127.0.0.1"
        assert 29400 <= value["master_port"] <= 29999
        assert value["local_world_size"] == 2
        assert value["local_rank"] == rank
        assert f"stdout of rank {rank}" in res.logs[rank]["stdout"]
        assert f"stderr of rank {rank}" in res.logs[rank]["stderr"]
        assert res.logs[rank]["returncode"] == 0
    # ranks ordered by host then address, one per worker, each in its own process
    assert list(res.workers.values()) == sorted(client.nthreads())
    worker_pids = client.run(os.getpid)
    assert not {v["pid"] for v in res.values()} & set(worker_pids.values())
    assert res.attempts == 1 and res.failures == []


def test_metrics_stream_to_client_while_running(client, caplog):
    caplog.set_level(logging.INFO, logger="dasktrain.ddp.launcher")
    n, pause = 4, 0.5
    res = ddp.run(_stream_fn, n, pause, client=client, timeout=60)
    end = time.time()
    assert res == {0: n, 1: n}
    got = sorted((r["rank"], r["step"], r["value"]) for r in res.history)
    assert got == [(r, s, s * 10 + r) for r in (0, 1) for s in range(n)]
    assert all(r["attempt"] == 0 and "time" in r for r in res.history)
    # progress is logged as it arrives: step 0 reached the client well before the job ended
    progress = [rec for rec in caplog.records if "step=0" in rec.getMessage()]
    assert progress, "no progress line logged for rank 0"
    assert progress[0].created < end - (n - 1) * pause + 0.5


def test_exception_in_one_rank_raises_fast_with_stderr(client):
    t0 = time.monotonic()
    with pytest.raises(DDPError) as info:
        ddp.run(_fail_rank1, client=client, timeout=120)
    elapsed = time.monotonic() - t0
    assert elapsed < 30
    msg = str(info.value)
    assert "rank 1" in msg and "ValueError: boom 42" in msg
    assert "marker-7781" in msg  # last lines of that rank's stderr
    workers = sorted(client.nthreads())
    assert workers[1] in msg
    assert info.value.rank == 1 and info.value.worker == workers[1]
    assert isinstance(info.value.__cause__, ValueError)
    assert "marker-7781" in info.value.logs[1]["stderr"]
    # the blocked rank was torn down (or failed on its own when rank 1's socket closed)
    assert info.value.logs[0]["status"] in ("aborted", "error")
    assert info.value.logs[0]["returncode"] not in (None, 0)


def test_workers_usable_after_failure_and_two_calls_run_twice(client, tmp_path):
    # right after a failed job (previous test) the locks are free and no rank task is stuck;
    # the tasks are never cached: the same call with the same arguments trains twice
    path = tmp_path / "calls.txt"
    first = ddp.run(_count_calls, str(path), client=client, timeout=60)
    second = ddp.run(_count_calls, str(path), client=client, timeout=60)
    assert dict(first) == dict(second) == {0: 0, 1: 1}
    assert path.read_text().count("called") == 2


def test_timeout_stops_the_job(client):
    t0 = time.monotonic()
    with pytest.raises(DDPError, match="timeout"):
        ddp.run(_sleep_fn, 60, client=client, timeout=6)
    assert time.monotonic() - t0 < 20


@pytest.mark.timeout(90)
def test_timeout_default_is_the_setting(client):
    # Regression: the dasktrain.ddp.timeout setting was ignored (run() always waited 600 s).
    import dask.config

    t0 = time.monotonic()
    with dask.config.set({"dasktrain.ddp.timeout": 6}):
        with pytest.raises(DDPError, match=r"timeout=6 s reached|ran past its timeout") as info:
            ddp.run(_sleep_fn, 60, client=client)
    assert time.monotonic() - t0 < 30
    assert info.value.attempts == 1 and info.value.failures == []


def _meet(mine, other, wait_s):
    """Say this rank runs (file ``mine``), then wait up to ``wait_s`` for the ``other`` one."""
    t0 = time.time()
    open(mine, "w").close()
    while wait_s and not os.path.exists(other) and time.time() - t0 < wait_s:
        time.sleep(0.05)
    return (t0, time.time())


def test_lock_makes_second_job_use_the_free_worker(client, tmp_path):
    w0, w1 = sorted(client.nthreads())
    out = {}
    a_runs, b_runs = str(tmp_path / "a"), str(tmp_path / "b")

    def job_a():
        # A runs until B has started (or 40 s): on a loaded machine a fixed sleep could end
        # before B's rank process is up, and the two would not overlap however free w1 was.
        out["a"] = ddp.run(_meet, a_runs, b_runs, 40, client=client, workers=[w0], timeout=60)

    thread = threading.Thread(target=job_a)
    thread.start()
    # wait until job A holds w0 (its rank is running), then ask for "any one worker"
    deadline = time.monotonic() + 30
    while not (
        any(k.startswith("dasktrain-ddp-rank") for k in _processing(client, w0))
        and os.path.exists(a_runs)
    ):
        assert time.monotonic() < deadline, "job A never started"
        time.sleep(0.1)
    b = ddp.run(_meet, b_runs, a_runs, 0, client=client, workers=1, timeout=60)
    thread.join(60)
    a = out["a"]
    assert a.workers == {0: w0}
    # without the lock, "one worker" would have been w0 (first in order) and waited for A
    assert b.workers == {0: w1}
    (a0, a1), (b0, b1) = a[0], b[0]
    assert b0 < a1 and a0 < b1, "the two jobs on disjoint workers did not run concurrently"


def _processing(client, address):
    return [str(k) for k in client.processing(workers=[address]).get(address, [])]


def test_prepare_loader_batch_scaling_math():
    assert ddp.batch_sizes(64, 2, "global") == (32, 64, 1.0)
    assert ddp.batch_sizes(64, 2, "per-rank") == (64, 128, 2.0)
    assert ddp.batch_sizes(64, 1, "global") == (64, 64, 1.0)
    assert ddp.batch_sizes(10, 4, "global") == (2, 8, 1.0)
    with pytest.raises(ValidationError, match="batch_scaling"):
        ddp.batch_sizes(64, 2, "linear")
    with pytest.raises(ValidationError, match="world size"):
        ddp.batch_sizes(1, 2, "global")


def test_loader_shards_match_local_batches(client):
    n, batch = 20, 4
    local = ddp.run_local(_loader_indices, n, batch)[0]
    ranks = ddp.run(_loader_indices, n, batch, client=client, timeout=60)
    assert local["global"]["sizes"] == local["per-rank"]["sizes"] == (4, 4, 1.0)
    assert ranks[0]["global"]["sizes"] == ranks[1]["global"]["sizes"] == (2, 4, 1.0)
    assert ranks[0]["per-rank"]["sizes"] == (4, 8, 2.0)
    for epoch in range(2):
        local_batches = local["global"]["epochs"][epoch]
        r0, r1 = ranks[0]["global"]["epochs"][epoch], ranks[1]["global"]["epochs"][epoch]
        assert len(r0) == len(r1) == len(local_batches) == 5
        # step k of the two ranks together is exactly step k of the local twin
        for k, lb in enumerate(local_batches):
            assert sorted(r0[k] + r1[k]) == sorted(lb)
        assert sorted(sum(r0 + r1, [])) == list(range(n))
        # per-rank: each rank keeps the full batch, so there are half as many steps
        p0, p1 = ranks[0]["per-rank"]["epochs"][epoch], ranks[1]["per-rank"]["epochs"][epoch]
        assert [len(b) for b in p0] == [4, 4, 2] and sorted(sum(p0 + p1, [])) == list(range(n))
    # the loader moves to the next epoch by itself: a new shuffle
    assert local["global"]["epochs"][0] != local["global"]["epochs"][1]


def test_run_local_matches_run_on_same_seeds(client):
    from dasktrain.ddp.recipes import train_classifier
    from dasktrain.testing import make_blobs

    X, y = make_blobs(n_samples=400, n_features=8, centers=3, random_state=1)
    X = X.astype(np.float32)
    kw = dict(X_val=X[300:], y_val=y[300:], model="mlp", epochs=3, batch_size=32, lr=0.01, seed=4)
    torch.set_num_threads(1)
    local = ddp.run_local(train_classifier, X[:300], y[:300], **kw)
    dist = ddp.run(train_classifier, X[:300], y[:300], client=client, timeout=60, **kw)
    lh, dh = local[0]["history"], dist[0]["history"]
    for h in lh + dh + dist[1]["history"]:
        h.pop("epoch_time")  # the only thing allowed to differ
    assert dist[0]["history"] == dist[1]["history"]
    assert [h["epoch"] for h in lh] == [h["epoch"] for h in dh] == [0, 1, 2]
    # same samples per step and averaged gradients: the same run up to float rounding
    for a, b in zip(lh, dh):
        assert abs(a["accuracy"] - b["accuracy"]) <= 0.02
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert dist[0]["world_size"] == 2 and local[0]["world_size"] == 1
    assert dist[0]["global_batch_size"] == local[0]["global_batch_size"] == 32
    assert len(local.history) == 3 and len([r for r in dist.history if r["rank"] == 0]) == 3
    assert lh[-1]["accuracy"] > 0.9


def test_cnn_recipe_runs_on_ranks(client):
    from dasktrain.ddp.recipes import train_classifier

    rng = np.random.default_rng(0)
    X = rng.random((32, 16, 16, 1), dtype=np.float32)
    y = (X[:, :8].mean(axis=(1, 2, 3)) > X[:, 8:].mean(axis=(1, 2, 3))).astype(int)
    res = ddp.run(
        train_classifier,
        X,
        y,
        X_val=X[:8],
        y_val=y[:8],
        client=client,
        timeout=90,
        model="smallcnn",
        epochs=2,
        batch_size=8,
    )
    assert [h["epoch"] for h in res[0]["history"]] == [0, 1]
    # the validation score is all-reduced: every rank reports the same one
    assert res[0]["history"][-1]["accuracy"] == res[1]["history"][-1]["accuracy"]
    assert res[0]["samples_per_s"] > 0 and 0 <= res[0]["history"][-1]["accuracy"] <= 1


def _malloc_env():
    return {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_")}


def test_ranks_start_with_dasktrains_allocator_not_the_nannys_trim(client):
    # Regression: ranks inherited the nanny's MALLOC_TRIM_THRESHOLD_=65536, which made glibc
    # unmap torch's activation buffers every step (about 25% slower training than in-process).
    from dasktrain import _malloc

    nanny = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
    assert nanny == {"65536"}
    seen = ddp.run(_malloc_env, client=client, timeout=60)
    want = {"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": str(_malloc.threshold())}
    assert list(seen.values()) == [want, want]
    # ... unless the user asks for something else
    kept = ddp.run(_malloc_env, client=client, timeout=60, env={"MALLOC_TRIM_THRESHOLD_": "7"})
    assert {v["MALLOC_TRIM_THRESHOLD_"] for v in kept.values()} == {"7"}


def test_cnn_on_two_ranks_follows_the_local_twin(client):
    # Regression: smallcnn used BatchNorm, whose per-rank statistics (half the global batch
    # each, no SyncBatchNorm on CPU) made 2 ranks drift from the one-process run.
    from dasktrain.ddp.recipes import train_classifier

    rng = np.random.default_rng(1)
    X = rng.random((64, 16, 16, 1), dtype=np.float32)
    y = (X[:, :8].mean(axis=(1, 2, 3)) > X[:, 8:].mean(axis=(1, 2, 3))).astype(int)
    kw = dict(
        X_val=X[:16], y_val=y[:16], model="smallcnn", epochs=2, batch_size=16, lr=0.01, seed=3
    )
    torch.set_num_threads(1)
    local = ddp.run_local(train_classifier, X, y, **kw)[0]["history"]
    dist = ddp.run(train_classifier, X, y, client=client, timeout=90, **kw)[0]["history"]
    for a, b in zip(local, dist):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
        assert a["accuracy"] == b["accuracy"]


def test_run_local_checkpoint_roundtrip(tmp_path):
    def fn():
        assert ddp.load_checkpoint() is None
        ddp.save_checkpoint({"w": torch.arange(3), "epoch": 2})
        ddp.report(loss=0.5)
        return ddp.load_checkpoint()

    res = ddp.run_local(fn, checkpoint_dir=tmp_path)
    assert res[0]["epoch"] == 2 and res[0]["w"].tolist() == [0, 1, 2]
    assert (tmp_path / "checkpoint.pt").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert res.history[0]["loss"] == 0.5 and res.history[0]["rank"] == 0
    with pytest.raises(DDPError, match="checkpoint_dir"):
        ddp.run_local(lambda: ddp.save_checkpoint({}))


def test_bad_arguments_are_rejected(client):
    with pytest.raises(ValidationError, match="backend='mpi2'"):
        ddp.run(_sleep_fn, 0, client=client, backend="mpi2")
    with pytest.raises(ValidationError, match="timeout"):
        ddp.run(_sleep_fn, 0, client=client, timeout=0)
    with pytest.raises(ValidationError, match="asks for 5 workers"):
        ddp.run(_sleep_fn, 0, client=client, workers=5)
    with pytest.raises(ValidationError, match="not workers of this cluster"):
        ddp.run(_sleep_fn, 0, client=client, workers=["tcp://127.0.0.1:1"])
    with pytest.raises(ValidationError, match="port_range"):
        ddp.run(_sleep_fn, 0, client=client, port_range=(10, 5))


def test_a_checkpoint_dir_that_is_a_file_is_refused_naming_it(client, tmp_path):
    # Regression: a bare FileExistsError from os.makedirs.
    taken = tmp_path / "ckpt"
    taken.write_text("not a folder")
    for call in (
        lambda: ddp.run(_sleep_fn, 0, client=client, checkpoint_dir=taken),
        lambda: ddp.run_local(_sleep_fn, 0, checkpoint_dir=taken),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        msg = str(info.value)
        assert repr(str(taken)) in msg and "is a file" in msg and "checkpoint_dir=" in msg
    under = taken / "sub"  # a file in the way higher up
    with pytest.raises(ValidationError, match="is a file"):
        ddp.run(_sleep_fn, 0, client=client, checkpoint_dir=under)


@pytest.mark.gpu
def test_nccl_on_gpu(client):
    res = ddp.run(_gpu_fn, client=client, workers=1, backend="auto", timeout=120)
    assert res[0]["backend"] == "nccl" and res[0]["device"].startswith("cuda")


def _gpu_fn():
    import torch.distributed as dist

    info = ddp.rank_info()
    t = torch.ones(1, device=info.device)
    dist.all_reduce(t)
    model = ddp.prepare_model(torch.nn.Linear(2, 2))
    return {"backend": info.backend, "device": str(next(model.parameters()).device)}


# ---------------------------------------------------------------- exposure and lost results


def _exit_before_returning():
    if ddp.rank_info().rank == 1:
        os._exit(0)  # leaves without writing a result: must not pass for a success
    return "done"


def test_rank_that_exits_without_a_result_is_a_failure(client):
    # Regression: a rank that ended with os._exit(0) was reported as a success with result None.
    with pytest.raises(DDPError) as info:
        ddp.run(_exit_before_returning, client=client, timeout=60)
    msg = str(info.value)
    worker = sorted(client.nthreads())[1]
    assert "rank 1" in msg and worker in msg and "code 0" in msg and "result" in msg
    assert info.value.rank == 1 and info.value.worker == worker
    assert info.value.logs[1]["returncode"] == 0


def _sockets():
    import psutil

    proc = psutil.Process()
    conns = (
        proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    )
    listening = sorted(
        {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    )
    return {
        "rank": ddp.rank_info().rank,
        "port": int(os.environ["MASTER_PORT"]),
        "listening": listening,
        "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
    }


def test_rendezvous_and_gloo_listen_on_the_workers_address_only(client):
    # Regression: rank 0's TCPStore (MASTER_PORT) listened on all interfaces ('::').
    res = ddp.run(_sockets, client=client, timeout=60)
    port = res[0]["port"]
    store = [ip for ip, p in res[0]["listening"] if p == port]
    assert store == ["127.0.0.1"], res[0]["listening"]
    for rank in (0, 1):
        # gloo's own sockets too: the interface comes from the worker's address (loopback here)
        assert res[rank]["gloo_ifname"] == "lo"
        assert {ip for ip, _ in res[rank]["listening"]} <= {"127.0.0.1"}, res[rank]["listening"]
    # a user's (or the worker's) own choice wins
    res = ddp.run(_sockets, client=client, timeout=60, env={"GLOO_SOCKET_IFNAME": "lo"})
    assert res[0]["gloo_ifname"] == "lo"


def _where_am_i():
    import cloudpickle as cp

    return {"cwd": os.getcwd(), "path": list(sys.path), "cloudpickle": cp.__file__}


def _start(argv, cwd, log):
    import subprocess

    with open(log, "wb") as fh:
        return subprocess.Popen(
            argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture
def worker_in_a_folder(tmp_path):
    """A scheduler and one ``dask worker`` on 127.0.0.1, the worker in ``tmp_path/cwd``."""
    import signal
    import subprocess

    from distributed import Client

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    sfile = tmp_path / "scheduler.json"
    bindir = os.path.dirname(sys.executable)
    procs = [
        _start(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(sfile),
            ],
            tmp_path,
            tmp_path / "scheduler.log",
        )
    ]
    try:
        procs.append(
            _start(
                [
                    os.path.join(bindir, "dask"),
                    "worker",
                    "--scheduler-file",
                    str(sfile),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--dashboard-address",
                    "127.0.0.1:0",
                ],
                cwd,
                tmp_path / "worker.log",
            )
        )
        deadline = time.monotonic() + 60
        while not sfile.exists():
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.1)
        with Client(scheduler_file=str(sfile), set_as_default=False) as c:
            c.wait_for_workers(1, timeout=60)
            yield c, cwd
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_a_stray_module_in_the_workers_folder_is_not_imported_by_the_ranks(worker_in_a_folder):
    # Regression: ranks ran `python -m ...` in the worker's current directory, so a
    # cloudpickle.py lying there was imported by every rank instead of the real one.
    c, cwd = worker_in_a_folder
    marker = cwd / "stray-was-imported"
    (cwd / "cloudpickle.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "raise ImportError('the stray cloudpickle.py in the worker folder was imported')\n"
    )
    res = ddp.run(_where_am_i, client=c, timeout=60)
    assert not marker.exists()
    assert not res[0]["cloudpickle"].startswith(str(cwd))
    # train_fn still runs in the worker's current directory (relative paths keep working),
    # but that directory is not on sys.path
    assert os.path.realpath(res[0]["cwd"]) == os.path.realpath(cwd)
    assert "" not in res[0]["path"]
    assert not [p for p in res[0]["path"] if os.path.realpath(p or ".") == os.path.realpath(cwd)]
