"""The workloads trained by a launcher (registered in :mod:`.builtin`).

* ``ddp_cnn``: a small torch CNN under :func:`dasktrain.ddp.run` (the local engine:
  ``ddp.run_local``);
* ``keras_cnn``: the demo's small CNN as a Keras 3 model on the torch backend, trained by the
  DDP launcher (:func:`dasktrain.ddp.recipes_keras.train_keras_classifier`); the dask engine
  reads the split from the cluster (``datasets=``), the local engine is ``ddp.run_local``.
* ``tf_cnn``: the same network in TensorFlow under ``MultiWorkerMirroredStrategy``
  (:func:`dasktrain.tf.run` with :func:`dasktrain.tf.recipes.train_cnn`); the local engine is
  :func:`dasktrain.tf.run_local`.

Both take ``ddp_cnn``'s options (``epochs``, ``ddp_batch_size``, ``ddp_lr``) and seed, so the
three rows train the same network with the same steps on three stacks.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np

from ..._dask import scheduler_workers, to_cluster
from ...exceptions import Unavailable, ValidationError
from ..settings import current

__all__ = ["w_ddp_cnn", "w_keras_cnn", "w_tf_cnn"]


def _recipe():
    opts = current().options
    return {
        "epochs": opts.epochs,
        "batch_size": opts.ddp_batch_size,
        "lr": opts.ddp_lr,
        "seed": current().seed,
    }


def _metrics(result):
    """The row's metrics from ``{rank: recipe result}`` (rank 0 reports for the job)."""
    out = result[0]
    hist = out.get("history") or [{}]
    res = {
        "train_time": float(out.get("train_time", math.nan)),
        "train_start": float(out.get("train_start", math.nan)),
        "samples_per_s": float(out.get("samples_per_s", math.nan)),
    }
    if "accuracy" in hist[-1]:
        res["accuracy"] = float(hist[-1]["accuracy"])
        res["accuracy_per_epoch"] = " ".join(f"{h.get('accuracy', math.nan):.3f}" for h in hist)
    return res


def w_keras_cnn(inputs, engine, client) -> dict:
    """The small CNN as a Keras model on the torch backend, trained by ``ddp``.

    The local engine needs this process's Keras on torch (``KERAS_BACKEND=torch``, or Keras
    not imported yet); a driver that already runs Keras on TensorFlow gets an error saying so.
    """
    from ... import ddp
    from ..._compat import import_optional
    from ...ddp.recipes_keras import train_keras_classifier

    import_optional("torch", "torch")
    if importlib.util.find_spec("keras") is None:
        import_optional("keras", "tensorflow")  # raises, naming the extra
    # (not imported here: the first import fixes the backend, and the twin needs torch)
    Xtr, Xte, ytr, yte = inputs.image_split
    kw = _recipe()
    if engine == "dask":
        datasets = _ddp_datasets(client, Xtr, ytr, Xte, yte)
        num_classes = int(max(np.max(ytr), np.max(yte))) + 1
        result = ddp.run(
            train_keras_classifier,
            client=client,
            datasets=datasets,
            num_classes=num_classes,
            **kw,
        )
    else:
        result = ddp.run_local(train_keras_classifier, Xtr, ytr, X_val=Xte, y_val=yte, **kw)
    return _metrics(result)


def w_tf_cnn(inputs, engine, client) -> dict:
    """The small CNN in TensorFlow, under ``MultiWorkerMirroredStrategy`` (``dasktrain.tf``).

    The dask engine sends the split to every worker as arguments (each worker reads the
    global batch and keeps its part of it); the local engine trains here.
    """
    from ... import tf as dtf
    from ..._compat import import_optional
    from ...tf.recipes import train_cnn

    import_optional("tensorflow", "tensorflow")
    Xtr, Xte, ytr, yte = inputs.image_split
    kw = dict(_recipe(), X_val=Xte, y_val=yte)
    if engine == "dask":
        from ...ddp.tf_launcher import check_all_interfaces

        try:
            check_all_interfaces()
        except ValidationError as exc:  # not asked for: the row says why, nothing listens
            raise Unavailable(str(exc)) from None
        result = dtf.run(train_cnn, Xtr, ytr, client=client, **kw)
    else:
        result = dtf.run_local(train_cnn, Xtr, ytr, **kw)
    return _metrics(result)


# Rows per chunk of ddp_cnn's persisted images on the dask engine (what read_images gives).
_DDP_CHUNK = 256


def _ddp_datasets(client, Xtr, ytr, Xte, yte):
    """The split on the cluster, chunked so that every worker holds some of each part."""
    import math

    n_workers = max(1, len(scheduler_workers(client)))

    def blocks(n):
        return min(n, max(2 * n_workers, math.ceil(n / _DDP_CHUNK)))

    train = to_cluster(client, Xtr, ytr, n_blocks=blocks(len(Xtr)))
    val = to_cluster(client, Xte, yte, n_blocks=blocks(len(Xte)))
    return {"train": tuple(train), "val": tuple(val)}


def w_ddp_cnn(inputs, engine, client) -> dict:
    """A small CNN trained with DistributedDataParallel (one process with the local engine).

    On the dask engine the images go to the cluster once, in chunks, and each rank trains on
    the chunks of its own worker (``ddp.run(..., datasets=...)``); nothing is pickled to every
    rank. The local engine trains on the arrays in this process.
    """
    from ... import ddp
    from ..._compat import import_optional
    from ...ddp.recipes import train_classifier

    # Here, as the other torch rows check (CNNFeatures.fit): without it the dask engine's ranks
    # failed one by one and the row read "error" with their traceback, not "unavailable".
    import_optional("torch", "torch")

    Xtr, Xte, ytr, yte = inputs.image_split
    # One recipe for both engines: a small CNN on standardised images with a max-pooled head
    # and a one-cycle schedule learns the X-ray-like set (>= 0.85 test accuracy) in a few
    # epochs, with the same global batch (the same optimiser steps) on both.
    kw: dict[str, Any] = {
        "model": current().options.ddp_model,
        "epochs": current().options.epochs,
        "batch_size": current().options.ddp_batch_size,
        "lr": current().options.ddp_lr,
        "seed": current().seed,
    }
    if engine == "dask":
        datasets = _ddp_datasets(client, Xtr, ytr, Xte, yte)
        num_classes = int(max(np.max(ytr), np.max(yte))) + 1
        result = ddp.run(
            train_classifier, client=client, datasets=datasets, num_classes=num_classes, **kw
        )
    else:
        result = ddp.run_local(train_classifier, Xtr, ytr, X_val=Xte, y_val=yte, **kw)
    out = result[0]  # {rank: value}: rank 0 reports for the job
    hist = out.get("history") or [{}]
    res: dict[str, float | str] = {
        "train_time": float(out.get("train_time", math.nan)),
        "train_start": float(out.get("train_start", math.nan)),
    }
    if "accuracy" in hist[-1]:
        res["accuracy"] = float(hist[-1]["accuracy"])
        res["accuracy_per_epoch"] = " ".join(f"{h.get('accuracy', math.nan):.3f}" for h in hist)
    if "samples_per_s" in out:
        res["samples_per_s"] = float(out["samples_per_s"])
    return res
