"""A ready-made TensorFlow training function for :func:`dasktrain.tf.run`: :func:`train_cnn`.

A custom ``strategy.run`` loop that trains the demo's small CNN, written in TensorFlow alone;
see :func:`train_cnn` (defined in ``dasktrain.ddp.tf_recipes``).
"""

from ..ddp.tf_recipes import train_cnn

__all__ = ["train_cnn"]
