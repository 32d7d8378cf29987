"""The ``keras_cnn`` and ``tf_cnn`` workloads (registered in :mod:`.workloads`).

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

import numpy as np

__all__ = ["w_keras_cnn", "w_tf_cnn"]


def _recipe():
    from .workloads import _opt, current

    return {
        "epochs": _opt("epochs", 8),
        "batch_size": _opt("ddp_batch_size", 16),
        "lr": _opt("ddp_lr", 1e-2),
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
    from .. import ddp
    from .._compat import import_optional
    from ..ddp.recipes_keras import train_keras_classifier
    from .workloads import _ddp_datasets

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
    from .. import tf as dtf
    from .._compat import import_optional
    from ..tf.recipes import train_cnn

    import_optional("tensorflow", "tensorflow")
    Xtr, Xte, ytr, yte = inputs.image_split
    kw = dict(_recipe(), X_val=Xte, y_val=yte)
    if engine == "dask":
        result = dtf.run(train_cnn, Xtr, ytr, client=client, **kw)
    else:
        result = dtf.run_local(train_cnn, Xtr, ytr, **kw)
    return _metrics(result)
