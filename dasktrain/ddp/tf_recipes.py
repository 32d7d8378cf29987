"""A ready-made TensorFlow training function: :func:`train_cnn` (a custom ``strategy.run`` loop).

It runs unchanged under :func:`dasktrain.tf.run` (``MultiWorkerMirroredStrategy``) and
:func:`dasktrain.tf.run_local` (the default strategy). It trains the torch ``smallcnn``
written in TensorFlow alone (``dasktrain.ddp._tf_net``: no Keras, so it runs beside Keras on any
backend) with the rules of :func:`dasktrain.ddp.recipes.train_classifier`: a global batch
split across the workers (the same optimiser steps with 1 or ``n`` of them), images
standardised one by one, a one-cycle-like learning rate (warm-up over 30% of the steps, then
cosine decay), a checkpoint per epoch and resuming from it.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..exceptions import ValidationError
from ._recipe_data import standardize
from ._tf_net import Adam, SmallCNN
from .helpers import report
from .tf_context import load_weights, save_weights, task_info

logger = logging.getLogger(__name__)

__all__ = ["train_cnn"]

EVAL_BATCH = 256


def _check(X, y, epochs, batch_size, world_size):
    if X.ndim != 4 or len(X) != len(y):
        raise ValidationError(
            f"X has shape {X.shape} and y {y.shape}: train_cnn needs images (n, h, w, c) and "
            "one label per image."
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise ValidationError(f"epochs={epochs!r} must be an integer >= 1.")
    if not isinstance(batch_size, int) or batch_size < world_size:
        raise ValidationError(
            f"batch_size={batch_size!r} (the global batch) must be an integer of at least the "
            f"number of workers ({world_size})."
        )
    if len(X) < world_size:
        raise ValidationError(f"{len(X)} images cannot be shared by {world_size} workers.")


def _dataset(tf, X, y, batch_size, seed):
    """The global batches of an epoch (a fresh shuffle per epoch), sharded by data."""
    ds = tf.data.Dataset.from_tensor_slices((X, y))
    ds = ds.shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # Every worker reads the same global batch and keeps its part of it (not whole files).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _train_step(tf, strategy, net, opt, batch_size):
    """One optimiser step on a distributed global batch: ``[loss sum, correct]`` of all."""

    def replica(x, y):
        with tf.GradientTape() as tape:
            logits = net(x)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            # Divided by the global batch: the all-reduced (summed) gradient is its mean.
            loss = tf.reduce_sum(per_example) / batch_size
        # One flat vector: a single all-reduce per step instead of one per variable.
        flat = tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, net.variables)], 0)
        correct = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == y, tf.float64))
        return flat, tf.stack([tf.reduce_sum(tf.cast(per_example, tf.float64)), correct])

    shapes = [v.shape for v in net.variables]
    sizes = [int(np.prod(shape)) for shape in shapes]

    @tf.function
    def step(x, y):
        flat, sums = strategy.run(replica, args=(x, y))
        sum_ = tf.distribute.ReduceOp.SUM
        flat = strategy.reduce(sum_, flat, axis=None)
        grads = [tf.reshape(g, s) for g, s in zip(tf.split(flat, sizes), shapes)]
        opt.apply(grads)  # the all-reduced gradient: the same update on every worker
        return strategy.reduce(sum_, sums, axis=None)

    return step


def _evaluate(tf, model, X, y):
    """``(loss, accuracy)`` on all of ``X`` (every worker holds the same weights)."""
    loss = correct = 0.0
    for i in range(0, len(X), EVAL_BATCH):
        logits = model(X[i : i + EVAL_BATCH])
        yb = y[i : i + EVAL_BATCH]
        loss += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits)))
        correct += float(np.sum(np.argmax(np.asarray(logits), 1) == yb))
    return loss / len(X), correct / len(X)


def _resume(net, opt, info):
    """``(history, first epoch)`` from the job's checkpoint, or ``([], 0)``."""
    meta = load_weights(net.variables + opt.variables) if info.checkpoint_dir else None
    if meta is None:
        return [], 0
    return list(meta["history"]), int(meta["epoch"]) + 1


def train_cnn(
    X,
    y,
    *,
    X_val=None,
    y_val=None,
    epochs=3,
    batch_size=64,
    lr=1e-3,
    seed=0,
    num_classes=None,
) -> dict:
    """Train a CNN classifier with a custom loop; works under ``tf.run`` and ``tf.run_local``.

    Parameters
    ----------
    X : ndarray of shape (n, height, width, channels)
        Images (``ImageSet.X``), standardised here one by one.
    y : ndarray of shape (n,)
        Integer class labels ``0..k-1``.
    X_val, y_val : ndarray, optional
        Held-out images scored after every epoch (by every worker, on all of them).
    epochs : int
    batch_size : int
        The global batch: each of ``n`` workers takes ``batch_size / n`` of it per step, so
        1 and ``n`` workers take the same optimiser steps.
    lr : float
        Adam's peak learning rate.
    seed : int
        Seeds the weights and the shuffle: same seed, same run on both engines.
    num_classes : int, optional
        Default: from the labels.

    Returns
    -------
    dict
        ``history`` (per epoch: ``epoch``, ``loss``, ``train_accuracy``, ``accuracy``,
        ``val_loss``, ``epoch_time``), ``samples_per_s``, ``train_time``, ``train_start`` (UNIX
        time the first epoch began), ``world_size``, ``rank``, ``global_batch_size``, ``lr``
        and ``resumed_from`` (the epoch a restarted job began at, or None).
    """
    import tensorflow as tf

    strategy, info = tf.distribute.get_strategy(), task_info()
    X, y = standardize(np.asarray(X, dtype=np.float32)), np.asarray(y).astype(np.int64)
    _check(X, y, epochs, batch_size, info.world_size)
    val = None
    if X_val is not None:
        val = standardize(np.asarray(X_val, dtype=np.float32)), np.asarray(y_val).astype(np.int64)
    num_classes = int(num_classes or int(y.max()) + 1)
    if batch_size > len(X):  # as the torch recipe's loader: one batch of every image
        logger.warning("train_cnn: batch_size=%d > %d images; one batch of all", batch_size, len(X))
        batch_size = len(X)
    steps = len(X) // batch_size
    with strategy.scope():
        net = SmallCNN(X.shape[-1], num_classes, seed)
        opt = Adam(net.variables, lr, epochs * steps)
        history, first = _resume(net, opt, info)
    step = _train_step(tf, strategy, net, opt, batch_size)
    # The shuffle's order comes from the op seed and TensorFlow's global seed: set here, so
    # that a twin in a process where something else set it (Keras' set_random_seed, an
    # earlier model) draws the same order as the fresh worker processes.
    tf.random.set_seed(seed)
    batches = strategy.experimental_distribute_dataset(_dataset(tf, X, y, batch_size, seed))
    train_time, train_start = 0.0, time.time()
    for epoch in range(first, epochs):
        t0, sums = time.perf_counter(), np.zeros(2)
        for xb, yb in batches:
            sums += step(xb, yb).numpy()
        seconds = time.perf_counter() - t0
        train_time += seconds
        count = steps * batch_size
        record = {"epoch": epoch, "loss": float(sums[0] / count)}
        record["train_accuracy"] = float(sums[1] / count)
        if val is not None:
            record["val_loss"], record["accuracy"] = _evaluate(tf, net, *val)
        else:
            record["accuracy"] = record["train_accuracy"]
        record["epoch_time"] = seconds
        history.append(record)
        report(**record)
        if info.checkpoint_dir:
            save_weights(net.variables + opt.variables, epoch=epoch, history=history)
    trained = (epochs - first) * steps * batch_size
    return {
        "history": history,
        "samples_per_s": trained / train_time if train_time > 0 else math.nan,
        "train_time": train_time,
        "train_start": train_start,
        "world_size": info.world_size,
        "rank": info.rank,
        "global_batch_size": batch_size,
        "lr": lr,
        "resumed_from": first if first else None,
    }
