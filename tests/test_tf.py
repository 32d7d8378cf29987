"""dasktrain.tf: TensorFlow's multi-worker strategy in the DDP launcher's rank processes.

Real processes on the session cluster (2 workers x 1 thread); the kill and restart test has
its own cluster, since it kills a worker.
"""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import dask
import numpy as np
import pytest

import dasktrain.ddp as ddp
import dasktrain.tf as dtf
from dasktrain.exceptions import DDPError, ValidationError

pytest.importorskip("tensorflow")
# Keras (on TensorFlow) imported here: the twin guards keras.Model.fit only in a process that
# imported Keras already; a rank imports it itself.
keras = pytest.importorskip("keras")

from test_ddp_faults import _kill_when  # noqa: E402 - the DDP tests' worker killer

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from dasktrain.datasets import make_xray_like
    from dasktrain.images import read_images

    root = make_xray_like(tmp_path_factory.mktemp("tf") / "x", n_per_class=24, size=16, seed=0)
    ds = read_images(root, size=16, engine="local")
    return ds.X, ds.y


@pytest.fixture(autouse=True, scope="module")
def _all_interfaces():
    """These tests start TensorFlow's servers on this machine's loopback workers: asked for."""
    with dask.config.set({"dasktrain.tf.all-interfaces": True}):
        yield


def _where_am_i():
    import json

    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return {
        "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        "replicas": strategy.num_replicas_in_sync,
        "task": config.get("task"),
        "workers": config.get("cluster", {}).get("worker"),
        "info": dict(dtf.task_info()),
        "keras_backend": os.environ.get("KERAS_BACKEND"),
    }


def _fit():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(loss="mse")
    model.fit(np.zeros((8, 4)), np.zeros((8, 2)), verbose=0)


def _train(X, y):
    from dasktrain.tf.recipes import train_cnn

    where = _where_am_i()
    try:
        _fit()
    except dtf.FitRefusedError as exc:
        where["fit"] = str(exc)
    return {"where": where, **train_cnn(X, y, X_val=X, y_val=y, epochs=2, batch_size=16, lr=1e-2)}


@pytest.fixture(scope="module")
def runs(client, images):
    """``(tf.run on 2 workers, run_local)`` of the same training."""
    X, y = images
    return dtf.run(_train, X, y, client=client, timeout=180), dtf.run_local(_train, X, y)


def test_two_workers_take_the_steps_of_the_local_twin(runs):
    res, local = runs
    assert sorted(res) == [0, 1] and res.attempts == 1
    assert res[0]["world_size"] == 2 and local[0]["world_size"] == 1
    for rank in (0, 1):  # the global batch split across the workers: the same steps
        np.testing.assert_allclose(
            [h["loss"] for h in res[rank]["history"]],
            [h["loss"] for h in local[0]["history"]],
            rtol=1e-4,
        )
    for a, b in zip(res[0]["history"], res[1]["history"]):  # the same weights on both
        assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]
    # report() records of both ranks came to the client, as from ddp.run
    assert {(r["rank"], r["epoch"]) for r in res.history} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert "TF_CONFIG" not in os.environ  # set in the ranks only


def test_train_fn_runs_in_a_ready_strategy(runs):
    res, local = runs
    where = {rank: res[rank]["where"] for rank in res}
    assert where[0]["workers"] == where[1]["workers"] and len(where[0]["workers"]) == 2
    for rank in (0, 1):
        assert where[rank]["multi_worker"] and where[rank]["replicas"] == 2
        assert where[rank]["task"] == {"type": "worker", "index": rank}
        assert where[rank]["info"]["rank"] == rank and where[rank]["info"]["world_size"] == 2
        assert where[rank]["keras_backend"] == "tensorflow"
    assert local[0]["where"]["replicas"] == 1 and local[0]["where"]["info"]["world_size"] == 1


def test_model_fit_is_refused_with_the_reason(runs):
    res, local = runs
    for where in (res[0]["where"], res[1]["where"], local[0]["where"]):
        assert "keras-team/keras/issues/20585" in where["fit"]
    assert "FitRefused" not in repr(keras.Model.fit)  # put back after the twin


def _leave_early(pause):
    """Rank 1 returns at once; rank 0 waits in an all-reduce for a peer that left."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if dtf.task_info().rank == 1:
        return "left"
    time.sleep(pause)
    value = strategy.run(lambda: tf.constant(1.0))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None))


def test_a_peer_that_left_early_is_an_error_within_the_collective_timeout(client):
    # MultiWorkerMirroredStrategy hangs when a peer exits early (tensorflow#35878, #58434)
    # unless its collectives time out: the job fails in seconds, not at timeout=.
    t0 = time.monotonic()
    with pytest.raises(DDPError) as info:
        dtf.run(_leave_early, 1.0, client=client, timeout=120, collective_timeout=5)
    assert time.monotonic() - t0 < 60
    assert "rank 0" in str(info.value)
    assert info.value.logs[1]["status"] == "ok"


def test_arguments_are_checked(client):
    # TensorFlow's server listens on all interfaces: only when asked.
    with dask.config.set({"dasktrain.tf.all-interfaces": False}):
        with pytest.raises(ValidationError, match="all network interfaces.*all_interfaces=True"):
            dtf.run(_where_am_i, client=client)
    with pytest.raises(ValidationError, match="collective_timeout"):
        dtf.run(_where_am_i, client=client, collective_timeout=0)
    with pytest.raises(ValidationError, match="train_fn"):
        dtf.run_local(42)


def _steps(marker, steps, pause):
    """All-reduce in a loop with a checkpoint per step; resumes from the checkpoint."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    counter = tf.Variable(0.0)
    meta = dtf.load_weights([counter])
    start = 0 if meta is None else int(meta["step"]) + 1
    for step in range(start, steps):
        total = strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None
        )
        assert float(total) == 2.0
        counter.assign_add(1.0)
        dtf.save_weights([counter], step=step)
        ddp.report(step=step)
        if step == 2 and dtf.task_info().rank == 0:
            open(marker, "w").close()
        time.sleep(pause)
    return {"start": start, "counter": float(counter.numpy())}


def test_killed_worker_then_restart_resumes_from_the_checkpoint(own_client, tmp_path):
    # Without a restart the launcher's error ("rank 1 ... left the cluster") comes as for
    # ddp.run (tests/test_ddp_faults.py); here the group restarts and resumes.
    client = own_client
    victim = sorted(client.nthreads())[1]
    marker = str(tmp_path / "reached-step-2")
    thread, killed = _kill_when(marker, client, victim, timeout=120)
    res = dtf.run(
        _steps,
        marker,
        8,
        0.2,
        client=client,
        timeout=180,
        max_restarts=1,
        checkpoint_dir=tmp_path / "ckpt",
    )
    thread.join(5)
    assert killed and res.attempts == 2
    assert "rank 1" in res.failures[0] and "left the cluster" in res.failures[0]
    assert res[0]["start"] == res[1]["start"] >= 3  # resumed after the last saved step
    assert res[0]["counter"] == 8.0  # the checkpointed counter went on where it stopped
    assert victim not in res.workers.values()


def test_the_twin_draws_the_order_of_the_workers_whatever_the_global_seed(images):
    """Regression: after another test set TensorFlow's global seed in this process (Keras
    features), the twin's shuffle differed from the fresh worker processes' (losses 2.08, 0.75
    against 0.62, 1.99)."""
    import tensorflow as tf

    from dasktrain.tf.recipes import train_cnn

    X, y = images
    losses = []
    for global_seed in (1, 2):
        tf.random.set_seed(global_seed)
        out = dtf.run_local(train_cnn, X, y, epochs=1, batch_size=16, lr=1e-2)[0]
        losses.append([h["loss"] for h in out["history"]])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
