"""dasktrain.ddp when a worker process dies mid-training (own cluster: workers get killed)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest

import dasktrain.ddp as ddp
from dasktrain.exceptions import DDPError

pytest.importorskip("torch")

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _slow_steps(marker, steps, pause):
    """All-reduce in a loop with a checkpoint per step; resumes from the checkpoint."""
    import torch
    import torch.distributed as dist

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


def _kill_when(marker, client, address, timeout=60):
    """Kill the worker process at ``address`` (SIGKILL) once ``marker`` exists."""
    pid = client.run(os.getpid, workers=[address])[address]

    def killer():
        deadline = time.monotonic() + timeout
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)

    killed = []
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread, killed


def test_killed_worker_fails_fast_then_restart_resumes(own_client, tmp_path, caplog):
    client = own_client
    victim = sorted(client.nthreads())[1]

    # 1. no restarts: DDPError within 30 s of the kill, naming the rank and the worker
    marker = str(tmp_path / "reached-step-2")
    thread, killed = _kill_when(marker, client, victim)
    with pytest.raises(DDPError) as info:
        ddp.run(_slow_steps, marker, 400, 0.1, client=client, timeout=120)
    failed_at = time.monotonic()
    thread.join(5)
    assert killed, "the worker was never killed"
    assert failed_at - killed[0] < 30
    msg = str(info.value)
    assert "rank 1" in msg and victim in msg and "left the cluster" in msg
    assert info.value.logs[0]["status"] in ("aborted", "error")  # torn down, or failed first

    # the nanny brings the worker back (under a new address)
    client.wait_for_workers(2, timeout=60)

    # 2. one restart allowed + checkpoints: the group restarts and resumes from the checkpoint
    victim = sorted(client.nthreads())[1]
    marker2 = str(tmp_path / "again-step-2")
    thread, killed = _kill_when(marker2, client, victim)
    with caplog.at_level(logging.WARNING, logger="dasktrain.ddp.launcher"):
        res = ddp.run(
            _slow_steps,
            marker2,
            12,
            0.2,
            client=client,
            timeout=120,
            max_restarts=1,
            checkpoint_dir=tmp_path / "ckpt",
        )
    thread.join(5)
    assert killed
    assert res.attempts == 2 and len(res.failures) == 1
    # the restart is told on the launcher's logger (Restarts, shared with XGBoost and scatter)
    told = [r.getMessage() for r in caplog.records if r.name == "dasktrain.ddp.launcher"]
    assert any("restart 1 of 1" in m and "left the cluster" in m for m in told), caplog.text
    assert "left the cluster" in res.failures[0]
    assert sorted(res) == [0, 1]
    assert res[0]["start"] == res[1]["start"] >= 3  # resumed after the last saved step
    steps = sorted({r["step"] for r in res.history if r["attempt"] == 1})
    assert steps == list(range(res[0]["start"], 12))
    assert victim not in res.workers.values()  # chosen again from the live workers


# A client whose process dies (a notebook kernel killed mid-training) while its job holds the
# workers. The lease of its test-sized 5 s lock runs out; the ranks' 3 s of training end.
_DYING_CLIENT = """
import sys, time
import dask
dask.config.set({"distributed.scheduler.locks.lease-timeout": "5s"})
from distributed import Client
import dasktrain.ddp as ddp

def train(marker):
    open(marker, "w").close()
    time.sleep(3)
    return 0

if __name__ == "__main__":
    client = Client(sys.argv[1])
    ddp.run(train, sys.argv[2], client=client, timeout=120)
"""


def _rank_number():
    return ddp.rank_info().rank


@pytest.mark.timeout(240)
def test_workers_of_a_dead_client_are_freed(tmp_path):
    # The worker locks are distributed.Lock, whose lease ends when its client stops renewing
    # it. distributed.MultiLock has no lease: the workers of a client killed while its job
    # ran stayed locked until the scheduler restarted, and every later job failed with
    # "could not lock 2 free workers" at its timeout (see dasktrain/ddp/_group.py).
    import subprocess

    import dask
    from distributed import Client, LocalCluster

    script, marker = tmp_path / "dying.py", tmp_path / "training"
    script.write_text(_DYING_CLIENT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    with dask.config.set({"distributed.scheduler.locks.lease-validation-interval": "1s"}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="4GiB",
        )
    with cluster, Client(cluster, set_as_default=False) as client:
        proc = subprocess.Popen(
            [sys.executable, str(script), cluster.scheduler_address, str(marker)], env=env
        )
        try:
            deadline = time.monotonic() + 120
            while not marker.exists():
                assert proc.poll() is None and time.monotonic() < deadline, "never trained"
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait()
        t0 = time.monotonic()
        res = ddp.run(_rank_number, client=client, timeout=90)
        assert dict(res) == {0: 0, 1: 1}
        assert time.monotonic() - t0 < 60
