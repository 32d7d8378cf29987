"""Keras 3 models trained data-parallel by the DDP launcher: :func:`train_keras_classifier`.

On Keras 3's torch backend a ``keras.Model`` *is* a :class:`torch.nn.Module`: its weights are
torch parameters, its call is a torch forward. So the DDP recipe of
:func:`~dasktrain.ddp.recipes.train_classifier` trains it unchanged, with the same batch rule,
:func:`~dasktrain.ddp.report` metrics, checkpoints, restarts and ``datasets=`` shards; this
module only builds the model (seeded, channels last) and checks the backend.

Keras fixes its backend when it is first imported (``KERAS_BACKEND``). The rank processes of
:func:`~dasktrain.ddp.run` start with ``KERAS_BACKEND=torch``; the local twin runs in the
calling process, whose Keras must then be on torch too (a driver that already imported Keras on
TensorFlow, for :class:`~dasktrain.features.KerasFeatures`, is told so).

``keras.Model.fit`` is not used: its TensorFlow multi-worker path fails (keras-team/keras#20585),
and on torch it knows nothing of DDP. The optimiser is torch's Adam, as in the torch recipe.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from ..exceptions import ValidationError
from .recipes import train_classifier

__all__ = ["train_keras_classifier", "keras_smallcnn", "KERAS_MODELS", "use_torch_backend"]

# The torch smallcnn's shape (dasktrain.features._torch_modules.SmallCNN), written in Keras layers.
_WIDTHS, _GROUPS = (16, 32, 64), 8


def keras_smallcnn(input_shape, num_classes):
    """Three stride-2 conv-GroupNorm-ReLU blocks, global max pooling, a linear head (logits).

    The Keras twin of the torch ``smallcnn`` of :func:`~dasktrain.ddp.recipes.train_classifier`.

    Parameters
    ----------
    input_shape : tuple
        ``(height, width, channels)``; ``None`` for a size any image may have.
    num_classes : int
    """
    import keras

    layers = [keras.Input(shape=tuple(input_shape))]
    for w in _WIDTHS:
        layers += [
            keras.layers.Conv2D(w, 3, strides=2, padding="same", use_bias=False),
            keras.layers.GroupNormalization(groups=w // _GROUPS),
            keras.layers.ReLU(),
        ]
    layers += [keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name="keras_smallcnn")


KERAS_MODELS = {"smallcnn": keras_smallcnn}


def use_torch_backend():
    """Make sure Keras runs on torch in this process; return the ``keras`` module.

    Sets ``KERAS_BACKEND=torch`` when Keras is not imported yet (a rank process, or a fresh
    driver); raises when this process already runs Keras on another backend.

    Raises
    ------
    ValidationError
        When Keras was imported here with another backend, or ``KERAS_BACKEND`` names one.
    """
    if "keras" not in sys.modules:
        wanted = os.environ.get("KERAS_BACKEND", "torch")
        if wanted != "torch":
            raise ValidationError(
                f"KERAS_BACKEND={wanted!r}: a Keras model trains under dasktrain.ddp on the "
                "torch backend only. Unset KERAS_BACKEND (or set it to 'torch') for this "
                "process; dasktrain.tf.run trains on TensorFlow."
            )
        os.environ["KERAS_BACKEND"] = "torch"
    import keras

    backend = keras.backend.backend()
    if backend != "torch":
        raise ValidationError(
            f"this process imported Keras with the {backend!r} backend before the Keras "
            "recipe ran (KerasFeatures does, for example), and Keras cannot change its "
            "backend afterwards. Run the local twin in a process started with "
            "KERAS_BACKEND=torch, or use dasktrain.ddp.run(..., workers=1): its rank is a "
            "fresh process on the torch backend. For TensorFlow itself use dasktrain.tf.run."
        )
    return keras


class _KerasBuilder:
    """``(in_channels, num_classes) -> torch.nn.Module``: the user's Keras model, seeded,
    taking the recipe's ``(n, c, h, w)`` batches."""

    def __init__(self, build, seed):
        self.build, self.seed = build, seed

    def __call__(self, in_channels, num_classes):
        keras = use_torch_backend()
        from torch import nn

        # Same names (the state_dict keys of a checkpoint) and the same weights in every
        # process and in every build of this one; the caller's random streams put back.
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            keras.backend.clear_session()
            keras.utils.set_random_seed(self.seed)
            model = self.build((None, None, in_channels), num_classes)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        if not isinstance(model, keras.Model):
            raise ValidationError(
                f"model={self.build!r} returned a {type(model).__name__}, not a keras.Model."
            )

        class ChannelsLast(nn.Module):
            # Keras' convolutions take (n, h, w, c); the recipe's batches are (n, c, h, w).
            def __init__(self):
                super().__init__()
                self.keras_model = model

            def forward(self, x):
                return self.keras_model(x.permute(0, 2, 3, 1))

        return ChannelsLast()


def train_keras_classifier(X=None, y=None, *, model="smallcnn", seed=0, **kwargs) -> dict:
    """Train a Keras 3 classifier data-parallel; works under ``ddp.run`` and ``ddp.run_local``.

    The Keras model runs on the torch backend, so it is a ``torch.nn.Module`` that
    :func:`~dasktrain.ddp.prepare_model` wraps in DistributedDataParallel; the training is
    :func:`~dasktrain.ddp.recipes.train_classifier`'s (Adam, cross-entropy, the global batch
    rule, checkpoints and resuming, ``datasets=`` shards).

    Parameters
    ----------
    X, y : ndarray, optional
        As in :func:`~dasktrain.ddp.recipes.train_classifier`: images ``(n, h, w, c)`` and
        labels, or None to train on ``shard("train")`` of the job's ``datasets=``.
    model : "smallcnn" or callable
        ``"smallcnn"`` (:func:`keras_smallcnn`), or a builder ``model(input_shape,
        num_classes) -> keras.Model`` that returns logits (no softmax) for channels-last
        input; ``input_shape`` is ``(None, None, channels)``. A builder defined in a script
        is sent to the ranks by value (cloudpickle); its ``import keras`` runs there, on the
        torch backend.
    seed : int
        Seeds the Keras weights (``keras.utils.set_random_seed``) and the shuffle: same seed,
        same run on both engines.
    **kwargs
        The other options of :func:`~dasktrain.ddp.recipes.train_classifier` (``X_val``,
        ``y_val``, ``epochs``, ``batch_size``, ``lr``, ``schedule``, ``checkpoint_steps``...).

    Returns
    -------
    dict
        As :func:`~dasktrain.ddp.recipes.train_classifier`.

    Raises
    ------
    ValidationError
        When this process runs Keras on another backend (see :func:`use_torch_backend`), or
        ``model`` is neither a known name nor a callable.

    Notes
    -----
    Each build calls ``keras.backend.clear_session()`` first, so that layer names (the keys of
    a checkpoint) are the same in every process: a Keras model built earlier in the same
    process keeps working, but its layer names may repeat.
    """
    use_torch_backend()
    if isinstance(model, str) and model in KERAS_MODELS:
        build = KERAS_MODELS[model]
    elif callable(model):
        build = model
    else:
        raise ValidationError(
            f"model={model!r} must be one of {tuple(KERAS_MODELS)} or a callable "
            "(input_shape, num_classes) -> keras.Model."
        )
    return train_classifier(X, y, model=_KerasBuilder(build, seed), seed=seed, **kwargs)
