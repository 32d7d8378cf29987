"""The small CNN and Adam of :func:`~dasktrain.tf.recipes.train_cnn`, in TensorFlow alone.

No Keras: a driver may hold Keras on the torch backend (the ``keras_cnn`` workload's twin) and
still run this twin, and a TensorFlow user needs nothing else. The network is the torch
``smallcnn`` (``dasktrain.features._torch_modules.SmallCNN`` with the recipe's max-pooled
head):
three stride-2 3x3 convolutions (16, 32, 64 channels) each with GroupNorm (8 channels per
group) and ReLU, global max pooling, a linear layer.

Variables are created under the caller's strategy scope (mirrored under
``MultiWorkerMirroredStrategy``) and updated in cross-replica context from the all-reduced
gradients, so every worker applies the same update.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SmallCNN", "Adam", "learning_rate"]

_WIDTHS, _PER_GROUP = (16, 32, 64), 8


def _glorot(rng, shape, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class SmallCNN:
    """``(n, h, w, c)`` images -> ``(n, num_classes)`` logits; weights drawn from ``seed``."""

    def __init__(self, in_channels, num_classes, seed):
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        self.convs, c = [], in_channels
        for w in _WIDTHS:
            kernel = _glorot(rng, (3, 3, c, w), 9 * c, 9 * w)
            self.convs.append(
                (
                    tf.Variable(kernel, name=f"conv{w}"),
                    tf.Variable(np.ones(w, np.float32), name=f"gamma{w}"),
                    tf.Variable(np.zeros(w, np.float32), name=f"beta{w}"),
                )
            )
            c = w
        self.dense = tf.Variable(_glorot(rng, (c, num_classes), c, num_classes), name="dense")
        self.bias = tf.Variable(np.zeros(num_classes, np.float32), name="bias")

    @property
    def variables(self):
        return [v for block in self.convs for v in block] + [self.dense, self.bias]

    def __call__(self, x):
        import tensorflow as tf

        for kernel, gamma, beta in self.convs:
            x = tf.nn.conv2d(x, kernel, strides=2, padding="SAME")
            x = tf.nn.relu(_group_norm(tf, x, gamma, beta))
        x = tf.reduce_max(x, axis=(1, 2))  # a small bright patch anywhere counts fully
        return tf.matmul(x, self.dense) + self.bias


def _group_norm(tf, x, gamma, beta, eps=1e-5):
    """GroupNorm: statistics per sample and group of channels, never across the batch (so
    each worker's part of a global batch gives what the whole batch gives in one process)."""
    channels = x.shape[-1]
    groups = channels // _PER_GROUP
    shape = tf.shape(x)
    g = tf.reshape(x, [shape[0], shape[1], shape[2], groups, channels // groups])
    mean, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
    g = (g - mean) * tf.math.rsqrt(var + eps)
    return tf.reshape(g, shape) * gamma + beta


def learning_rate(tf, step, peak, total_steps):
    """One-cycle-like: linear warm-up from ``peak / 25`` over 30% of the steps, then cosine
    decay to ``peak * 1e-4`` (torch's ``OneCycleLR`` of the torch recipe, near enough)."""
    step = tf.cast(step, tf.float32)
    warmup = float(max(1, int(0.3 * total_steps)))
    rest = float(max(1, total_steps - warmup))
    start, floor = peak / 25.0, peak * 1e-4
    rising = start + (peak - start) * step / warmup
    progress = tf.minimum((step - warmup) / rest, 1.0)
    falling = floor + (peak - floor) * 0.5 * (1.0 + tf.cos(math.pi * progress))
    return tf.where(step < warmup, rising, falling)


class Adam:
    """Adam (Kingma & Ba, torch's defaults) over ``variables`` with :func:`learning_rate`."""

    def __init__(self, variables, peak, total_steps, beta1=0.9, beta2=0.999, eps=1e-8):
        import tensorflow as tf

        self.params = list(variables)
        self.peak, self.total, self.b1, self.b2, self.eps = peak, total_steps, beta1, beta2, eps
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.m = [tf.Variable(tf.zeros_like(v), name="m") for v in self.params]
        self.v = [tf.Variable(tf.zeros_like(v), name="v") for v in self.params]

    @property
    def variables(self):
        return [self.step, *self.m, *self.v]

    def apply(self, grads):
        """One update from ``grads`` (the all-reduced mean gradient), in cross-replica context."""
        import tensorflow as tf

        lr = learning_rate(tf, self.step, self.peak, self.total)
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        scale = lr * tf.sqrt(1.0 - self.b2**t) / (1.0 - self.b1**t)
        for p, m, v, g in zip(self.params, self.m, self.v, grads):
            m.assign(self.b1 * m + (1.0 - self.b1) * g)
            v.assign(self.b2 * v + (1.0 - self.b2) * tf.square(g))
            p.assign_sub(scale * m / (tf.sqrt(v) + self.eps * tf.sqrt(1.0 - self.b2**t)))
