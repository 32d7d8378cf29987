"""Inside ``train_fn`` of :func:`dasktrain.tf.run` / :func:`dasktrain.tf.run_local`.

:func:`task_info` (where this process stands), :func:`save_weights` /
:func:`load_weights` (the job's checkpoint: model and optimiser variables as one ``.npz``,
loaded without pickle), and the guard that refuses ``keras.Model.fit`` under the
multi-worker strategy. Metrics go through :func:`dasktrain.ddp.report`, which both launchers
share. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from ..exceptions import DasktrainError, DDPError
from . import _env
from . import helpers as _ddp_helpers
from .helpers import RankInfo

__all__ = ["task_info", "save_weights", "load_weights", "refuse_fit", "FIT_REFUSED"]

CHECKPOINT_NAME = "checkpoint.weights.npz"

FIT_REFUSED = (
    "keras.Model.fit under tf.distribute.MultiWorkerMirroredStrategy is not supported by "
    "Keras 3: it fails with 'Attempt to convert a value (PerReplica...)' "
    "(https://github.com/keras-team/keras/issues/20585; the official multi-worker tutorial "
    "fails since TensorFlow 2.16). dasktrain refuses it rather than fail mid-job. Write the "
    "loop with strategy.run (dasktrain.tf.recipes.train_cnn is one), or train the Keras model "
    "on the torch backend with dasktrain.ddp.run(dasktrain.ddp.recipes_keras."
    "train_keras_classifier, ...)."
)


def task_info() -> RankInfo:
    """This process's place in the job: ``rank``, ``world_size``, ``checkpoint_dir``.

    The local twin is rank 0 of 1. The same ``rank`` is
    ``strategy.cluster_resolver.task_id`` under :func:`dasktrain.tf.run`.
    """
    ctx = _ddp_helpers._local_context()
    if ctx is not None or not _env.launched():
        directory = None if ctx is None else ctx.checkpoint_dir
        return RankInfo(rank=0, world_size=1, checkpoint_dir=directory)
    return RankInfo(
        rank=int(os.environ[_env.RANK]),
        world_size=int(os.environ[_env.WORLD_SIZE]),
        checkpoint_dir=os.environ.get(_env.ENV_CHECKPOINT_DIR) or None,
    )


def _path() -> str:
    directory = task_info().checkpoint_dir
    if directory is None:
        raise DDPError(
            "a checkpoint needs a folder: pass checkpoint_dir=... to dasktrain.tf.run() or "
            "run_local()."
        )
    return os.path.join(directory, CHECKPOINT_NAME)


def save_weights(variables: Sequence[Any], **meta: Any) -> str | None:
    """Save ``variables`` (a list of TensorFlow / Keras variables) and JSON ``meta``.

    Rank 0 writes to a temporary file and renames it over the last checkpoint, so a rank
    killed mid-write leaves the previous one whole; the other ranks return at once. Values
    are read without a collective (a mirrored variable gives its local copy).

    Returns
    -------
    str or None
        The path on rank 0, else None.
    """
    path = _path()
    if task_info().rank != 0:
        return None
    arrays: dict[str, Any] = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_weights(variables: Sequence[Any]) -> dict[str, Any] | None:
    """Assign the job's last checkpoint to ``variables``; its ``meta`` dict, or None.

    Loaded with ``allow_pickle=False``: a checkpoint holds arrays only.

    Raises
    ------
    DDPError
        When the checkpoint does not fit ``variables`` (another model wrote it).
    """
    path = _path()
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        meta: dict[str, Any] = json.loads(bytes(data["meta"]).decode())
        values = [data[f"v{i}"] for i in range(len(data.files) - 1)]
    shapes = [tuple(v.shape) for v in variables]
    if [tuple(a.shape) for a in values] != shapes:
        raise DDPError(
            f"the checkpoint {path!r} holds {len(values)} arrays that do not fit this model's "
            f"{len(shapes)} variables; remove it, or use another checkpoint_dir."
        )
    for var, value in zip(variables, values):
        var.assign(value)
    return meta


class FitRefusedError(DasktrainError, NotImplementedError):
    """Raised by ``keras.Model.fit`` inside dasktrain.tf's ``train_fn`` (see FIT_REFUSED)."""


@contextlib.contextmanager
def refuse_fit(load: bool = False) -> Iterator[None]:
    """Make ``keras.Model.fit`` raise :class:`FitRefusedError` while the block runs.

    ``load``: import Keras for it (a rank process, which is ours, with the TensorFlow
    backend); otherwise only a Keras this process already imported is guarded (the local
    twin must not fix the backend of the caller's process: the Keras recipe of
    ``dasktrain.ddp`` needs the torch backend). Nothing changes without Keras. The same on
    both engines, so a ``train_fn`` that passes the twin does not fail only on the cluster.
    """
    import importlib.util
    import sys

    if "keras" not in sys.modules and not (load and importlib.util.find_spec("keras")):
        yield
        return
    import keras

    def fit(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise FitRefusedError(FIT_REFUSED)

    original = keras.Model.fit
    keras.Model.fit = fit
    try:
        yield
    finally:
        keras.Model.fit = original
