"""dasktrain.ddp.RankPool: rank processes kept alive between run() calls, and their faults."""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle
import numpy as np
import psutil
import pytest
from test_ddp_faults import _kill_when, _slow_steps  # one home for the kill-mid-run helpers

import dasktrain.ddp as ddp
from dasktrain.exceptions import DDPError, ValidationError

torch = pytest.importorskip("torch")

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _train(steps, tag):
    """A few seeded DDP steps of a 512-feature linear model: its final weights and its pid."""
    import torch.distributed as dist

    info = ddp.rank_info()
    torch.manual_seed(0)
    model = ddp.prepare_model(torch.nn.Linear(512, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + info.rank)
    for step in range(steps):
        X, y = torch.randn(32, 512, generator=g), torch.randint(0, 8, (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
        ddp.report(step=step)
    t = torch.ones(1)
    dist.all_reduce(t)
    print(f"job {tag} on rank {info.rank}")
    weights = ddp.unwrap_model(model).weight.detach().numpy().copy()
    return {
        "weights": weights,
        "sum": t.item(),
        "pid": os.getpid(),
        "env": os.environ.get("DASKTRAIN_TEST_JOB"),
    }


def _fail_rank1():
    import torch.distributed as dist

    if ddp.rank_info().rank == 1:
        raise ValueError("boom in the pool 17")
    dist.all_reduce(torch.ones(1))  # rank 0 waits here until the teardown
    return 0


def _gone(pids, timeout=20.0):
    """True once none of ``pids`` runs any more (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_warm_runs_reuse_the_processes_and_match_a_cold_run(client):
    cold = ddp.run(_train, 3, "cold", client=client, timeout=120)
    with ddp.RankPool(client, timeout=120) as pool:
        pids = pool.pids()
        assert sorted(pids) == sorted(client.nthreads())
        first = ddp.run(_train, 3, "first", pool=pool, timeout=120)
        second = ddp.run(_train, 3, "second", pool=pool, env={"DASKTRAIN_TEST_JOB": "x"})
        third = ddp.run(_train, 3, "third", pool=pool, timeout=120)
        assert pool.pids() == pids
    assert _gone(list(pids.values()))
    for res in (first, second, third):
        assert res.attempts == 1
        assert sorted(res.workers.values()) == sorted(pids)
        assert {res[r]["pid"] for r in res} == set(pids.values())  # the same processes
        for r in (0, 1):
            # same seeds, same group, same numbers as the one-job ranks
            np.testing.assert_allclose(res[r]["weights"], cold[r]["weights"], rtol=0, atol=1e-6)
            assert res[r]["sum"] == 2.0
        assert sorted({(h["rank"], h["step"]) for h in res.history}) == [
            (r, s) for r in (0, 1) for s in range(3)
        ]
    # each job's own logs, and its env= for that job only
    assert "job second on rank 1" in second.logs[1]["stdout"]
    assert "job first" not in second.logs[1]["stdout"]
    assert second[0]["env"] == "x" and third[0]["env"] is None and first[0]["env"] is None
    assert cold[0]["pid"] not in pids.values()


def test_a_rank_killed_between_runs_is_replaced(client):
    with ddp.RankPool(client, timeout=120) as pool:
        before = pool.pids()
        victim = before[pool.addresses[1]]
        os.kill(victim, signal.SIGKILL)
        assert _gone([victim])
        res = ddp.run(_train, 1, "after-kill", pool=pool, timeout=120)
        assert res.attempts == 1 and not res.failures
        after = pool.pids()
        assert victim not in after.values() and {res[r]["pid"] for r in res} == set(after.values())
        # the other rank's old process was stopped too: the group is rebuilt as a whole
        assert _gone(list(before.values()))
    assert _gone(list(after.values()))


def test_a_failed_job_ends_the_pool_processes_and_the_next_job_works(client):
    with ddp.RankPool(client, timeout=120) as pool:
        before = pool.pids()
        t0 = time.monotonic()
        with pytest.raises(DDPError) as info:
            ddp.run(_fail_rank1, pool=pool, timeout=120)
        assert time.monotonic() - t0 < 60  # never waits for the collective's timeout
        assert info.value.rank == 1 and "boom in the pool 17" in str(info.value)
        assert isinstance(info.value.__cause__, ValueError)
        assert _gone(list(before.values()))
        res = ddp.run(_train, 1, "after-failure", pool=pool, timeout=120)
        assert sorted(res) == [0, 1] and res[0]["sum"] == 2.0
        assert not set(pool.pids().values()) & set(before.values())


def test_killed_worker_mid_run_with_a_pool(own_client, tmp_path):
    client = own_client
    pool = ddp.RankPool(client, timeout=120).start()
    try:
        before = pool.pids()
        victim = pool.addresses[1]
        # 1. no restarts: a clear DDPError within seconds; every pool process ends
        marker = str(tmp_path / "step-2")
        thread, killed = _kill_when(marker, client, victim)
        with pytest.raises(DDPError) as info:
            ddp.run(_slow_steps, marker, 400, 0.1, pool=pool, timeout=120)
        failed_at = time.monotonic()
        thread.join(5)
        assert killed and failed_at - killed[0] < 30
        assert "rank 1" in str(info.value) and "left the cluster" in str(info.value)
        assert _gone(list(before.values()))

        # 2. with a restart and checkpoints: the pool's job restarts on the live workers
        client.wait_for_workers(2, timeout=60)
        victim = sorted(client.nthreads())[1]
        marker = str(tmp_path / "again-step-2")
        thread, killed = _kill_when(marker, client, victim)
        res = ddp.run(
            _slow_steps,
            marker,
            12,
            0.2,
            pool=pool,
            timeout=120,
            max_restarts=1,
            checkpoint_dir=tmp_path / "ckpt",
        )
        thread.join(5)
        assert killed and res.attempts == 2 and "left the cluster" in res.failures[0]
        assert res[0]["start"] == res[1]["start"] >= 3
        assert victim not in res.workers.values()
        # 3. and the pool is warm again on the new group
        client.wait_for_workers(2, timeout=60)
        warm = pool.pids()
        again = ddp.run(_train, 1, "after-restart", pool=pool, timeout=120)
        assert {again[r]["pid"] for r in again} == set(warm.values())
    finally:
        pool.close()
    assert _gone(list(warm.values()))


def test_closing_the_client_ends_the_pool_processes(own_client):
    from distributed import Client

    other = Client(own_client.scheduler.address, set_as_default=False)
    try:
        pool = ddp.RankPool(other, timeout=120).start()
        pids = pool.pids()
        assert len(pids) == 2
    finally:
        other.close()
    assert _gone(list(pids.values()))
    # the workers are free for the next job
    res = ddp.run(_train, 1, "next", client=own_client, timeout=120)
    assert sorted(res) == [0, 1]


def test_a_pool_garbage_collected_ends_its_processes(client):
    import gc

    pool = ddp.RankPool(client, timeout=120).start()
    pids = list(pool.pids().values())
    assert len(pids) == 2
    del pool
    gc.collect()
    assert _gone(pids)


def test_pool_arguments_are_checked(client):
    with pytest.raises(ValidationError, match="RankPool"):
        ddp.run(_train, 1, "x", pool="warm")
    pool = ddp.RankPool(client, workers=1)
    with pytest.raises(ValidationError, match="pool decides"):
        ddp.run(_train, 1, "x", pool=pool, workers=2)
    with pytest.raises(ValidationError, match="backend"):
        ddp.RankPool(client, backend="mpi")
    pool.close()
    with pytest.raises(ValidationError, match="closed"):
        ddp.run(_train, 1, "x", pool=pool)


def test_the_cnn_recipe_in_a_pool_matches_one_job_ranks(client):
    from dasktrain.ddp.recipes import train_classifier

    rng = np.random.default_rng(1)
    X = rng.random((64, 16, 16, 1), dtype=np.float32)
    y = (X[:, :8].mean(axis=(1, 2, 3)) > X[:, 8:].mean(axis=(1, 2, 3))).astype(int)
    kw = dict(
        X_val=X[:16], y_val=y[:16], model="smallcnn", epochs=2, batch_size=16, lr=0.01, seed=3
    )
    cold = ddp.run(train_classifier, X, y, client=client, timeout=120, **kw)[0]["history"]
    with ddp.RankPool(client, timeout=120) as pool:
        for _ in range(2):  # the second job runs after the first in the same processes
            warm = ddp.run(train_classifier, X, y, pool=pool, **kw)[0]["history"]
            for a, b in zip(cold, warm, strict=True):
                assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
                assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
                assert a["accuracy"] == b["accuracy"]


def _gpu_pid():
    import torch.distributed as dist

    info = ddp.rank_info()
    t = torch.ones(1, device=info.device)
    dist.all_reduce(t)
    return {"backend": info.backend, "device": str(t.device), "pid": os.getpid()}


@pytest.mark.gpu
def test_pool_on_gpu_keeps_its_nccl_rank(client):
    with ddp.RankPool(client, workers=1, timeout=120) as pool:
        first = ddp.run(_gpu_pid, pool=pool, timeout=120)[0]
        second = ddp.run(_gpu_pid, pool=pool, timeout=120)[0]
    assert first["backend"] == "nccl" and first["device"].startswith("cuda")
    assert first["pid"] == second["pid"]
    assert _gone([first["pid"]])
