"""Keras 3 models through the DDP launcher (ddp.recipes_keras): the torch backend in the ranks.

The local twin runs in a script of its own: Keras fixes its backend at its first import, and
this test process may already hold Keras on TensorFlow (test_features_keras, test_tf).
"""

from __future__ import annotations

import json
import sys
import textwrap

import cloudpickle
import numpy as np
import pytest

import dasktrain.ddp as ddp
from dasktrain.ddp.recipes_keras import train_keras_classifier

pytest.importorskip("torch")
pytest.importorskip("keras")

from test_ddp_faults import _kill_when  # noqa: E402 - the DDP tests' worker killer

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RECIPE = dict(epochs=2, batch_size=16, lr=1e-2, seed=0)
N_PER_CLASS, SIZE = 24, 16


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from dasktrain.datasets import make_xray_like

    return make_xray_like(
        tmp_path_factory.mktemp("keras") / "x", n_per_class=N_PER_CLASS, size=SIZE, seed=0
    )


@pytest.fixture(scope="module")
def images(root):
    from dasktrain.images import read_images

    ds = read_images(root, size=SIZE, color="gray", engine="local")
    return np.asarray(ds.X), np.asarray(ds.y)


def _twin(tmp_path, run_script, root, recipe):
    """The local twin of the recipe, in a fresh process: its result dict."""
    out = tmp_path / "twin.json"
    script = tmp_path / "twin.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json
            import numpy as np
            import torch
            from dasktrain import ddp
            from dasktrain.images import read_images
            from dasktrain.ddp.recipes_keras import train_keras_classifier

            if __name__ == "__main__":
                torch.set_num_threads(1)
                ds = read_images({str(root)!r}, size={SIZE}, color="gray", engine="local")
                X, y = np.asarray(ds.X), np.asarray(ds.y)
                res = ddp.run_local(train_keras_classifier, X, y, X_val=X, y_val=y, **{recipe!r})
                import keras
                value = {{k: res[0][k] for k in ("history", "world_size")}}
                value["backend"] = keras.backend.backend()
                open({str(out)!r}, "w").write(json.dumps(value))
            """
        )
    )
    rc, output, _ = run_script(script, timeout=180)
    assert rc == 0, output[-3000:]
    return json.loads(out.read_text())


def test_two_ranks_take_the_steps_of_the_local_twin(client, images, root, tmp_path, run_script):
    X, y = images
    res = ddp.run(
        train_keras_classifier, X, y, X_val=X, y_val=y, client=client, timeout=180, **RECIPE
    )
    twin = _twin(tmp_path, run_script, root, RECIPE)
    assert twin["backend"] == "torch" and twin["world_size"] == 1
    assert res[0]["world_size"] == 2
    # The global batch is split across the ranks: the same optimiser steps up to rounding.
    np.testing.assert_allclose(
        [h["loss"] for h in res[0]["history"]], [h["loss"] for h in twin["history"]], rtol=1e-3
    )
    assert [h["accuracy"] for h in res[0]["history"]] == [h["accuracy"] for h in res[1]["history"]]


def _builder(input_shape, num_classes):
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Conv2D(8, 3, strides=2, padding="same"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(num_classes),
        ]
    )


def test_a_users_builder_trains_from_the_shards_of_datasets(client, images):
    # "DDP fed by Dask": each rank reads its own chunks on its own worker; the builder is a
    # function of this module, sent by value, whose `import keras` runs in the rank.
    from dasktrain._dask import to_cluster

    X, y = images
    Xd, yd = to_cluster(client, X, y, n_blocks=4)
    res = ddp.run(
        train_keras_classifier,
        model=_builder,
        client=client,
        datasets={"train": (Xd, yd)},
        num_classes=2,
        timeout=180,
        **RECIPE,
    )
    assert sorted(res) == [0, 1]
    assert [h["loss"] for h in res[0]["history"]] == [h["loss"] for h in res[1]["history"]]
    assert np.isfinite(res[0]["history"][-1]["loss"])


def test_keras_on_tensorflow_in_this_process_is_named(tmp_path, run_script):
    script = tmp_path / "tf_first.py"
    script.write_text(
        textwrap.dedent(
            """
            import keras  # TensorFlow, Keras' default backend
            from dasktrain.ddp.recipes_keras import use_torch_backend
            from dasktrain.exceptions import ValidationError

            try:
                use_torch_backend()
            except ValidationError as exc:
                print("REFUSED", exc)
            """
        )
    )
    rc, output, _ = run_script(script, timeout=120)
    assert rc == 0, output[-3000:]
    assert "REFUSED" in output and "'tensorflow' backend" in output and "ddp.run" in output


def test_killed_worker_then_restart_resumes_from_the_checkpoint(own_client, tmp_path):
    from dasktrain.datasets import make_xray_like
    from dasktrain.images import read_images

    root = make_xray_like(tmp_path / "x", n_per_class=150, size=32, seed=0)
    ds = read_images(root, size=32, color="gray", engine="local")
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    client = own_client
    ckpt = tmp_path / "ckpt"
    victim = sorted(client.nthreads())[1]
    # the first checkpoint (after epoch 0) is the moment to kill rank 1's worker
    thread, killed = _kill_when(str(ckpt / ddp.helpers.CHECKPOINT_NAME), client, victim, 120)
    res = ddp.run(
        train_keras_classifier,
        X,
        y,
        client=client,
        timeout=240,
        max_restarts=1,
        checkpoint_dir=ckpt,
        **{**RECIPE, "epochs": 6},
    )
    thread.join(5)
    assert killed and res.attempts == 2 and "left the cluster" in res.failures[0]
    assert res[0]["resumed_from"] >= 1  # not from the start
    assert [h["epoch"] for h in res[0]["history"]] == list(range(6))


def test_keras_cnn_and_tf_cnn_rows_of_compare(tmp_path, run_script):
    # Both rows in one driver: the Keras twin fixes Keras on torch here; tf_cnn's twin is
    # TensorFlow alone and runs beside it.
    pytest.importorskip("tensorflow")
    script = tmp_path / "rows.py"
    out = tmp_path / "rows.json"
    script.write_text(
        textwrap.dedent(
            f"""
            import json

            import dask
            from dasktrain.harness import compare

            if __name__ == "__main__":
                dask.config.set({{"dasktrain.tf.all-interfaces": True}})  # TF's servers
                res = compare(["keras_cnn", "tf_cnn"], engines=["local", "dask"], repeat=1,
                              warmup=False, monitor=False, progress=False,
                              performance_report=False, allow_busy=True, n_per_class=12,
                              options={{"epochs": 1, "image_size": 32}})
                rows = res.runs[["workload", "engine", "status", "error", "quality"]]
                open({str(out)!r}, "w").write(rows.astype(str).to_json(orient="records"))
            """
        )
    )
    rc, output, _ = run_script(script, timeout=300)
    assert rc == 0, output[-3000:]
    rows = json.loads(out.read_text())
    got = {(r["workload"], r["engine"]): r for r in rows}
    assert set(got) == {(w, e) for w in ("keras_cnn", "tf_cnn") for e in ("local", "dask")}
    for key, row in got.items():
        assert row["status"] == "ok", (key, row["error"][-1500:])
        assert 0.0 <= float(row["quality"]) <= 1.0  # the accuracy
