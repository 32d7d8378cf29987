"""A network the user brings to :class:`CNNFeatures` or :class:`KerasFeatures`.

The contract is documented once, in the "Your own model" section of the
:mod:`dasktrain.features` docstring; this module holds its checks and the ImageNet statistics.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..exceptions import ValidationError

__all__ = [
    "is_user_model",
    "user_key",
    "check_input_size",
    "check_normalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Shipped",
    "unwrap",
]

# ImageNet channel statistics (RGB) on [0, 1] values, as torchvision's weights expect.
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)

#: the normalisation names every extractor takes (a ``(mean, std)`` pair is the fourth form)
NORMALIZE = ("auto", "imagenet", "none")


class Shipped:
    """A user's model instance as it travels to the workers: pickled like any plain object.

    distributed registers its own serializer for ``keras.Model``
    (``distributed/protocol/keras.py``), written for Keras 2: on Keras 3 it raises
    ``AttributeError: _updated_config`` when one worker fetches the model from another, and the
    transfer is retried for ever (the computation hangs). Wrapped, the model goes through
    pickle, which Keras 3 and torch both support. The block functions take it back out with
    :func:`unwrap`.
    """

    def __init__(self, model):
        self.model = model

    def __repr__(self):
        return f"Shipped({type(self.model).__name__})"


def unwrap(model):
    """The model inside a :class:`Shipped`, or ``model`` itself."""
    return model.model if isinstance(model, Shipped) else model


def is_user_model(backbone):
    """True when ``backbone`` is the user's model (an instance or a builder), not a name."""
    return not isinstance(backbone, str)


def user_key(build):
    """A name for a model builder that is the same in every process (the cache key)."""
    from dask.base import tokenize

    return f"user-{getattr(build, '__name__', type(build).__name__)}-{tokenize(build)}"


def check_input_size(input_size):
    """``None`` or ``(height, width)`` from an int or a pair of positive ints."""
    if input_size is None:
        return None
    size = (input_size, input_size) if isinstance(input_size, numbers.Integral) else input_size
    try:
        h, w = size
        ok = all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in (h, w)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValidationError(
            f"input_size={input_size!r} must be None, a positive int or a (height, width) pair."
        )
    return int(h), int(w)


def check_normalize(normalize):
    """A normalisation name, or ``(mean, std)`` as float32 arrays of 1 or 3 channel values."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZE:
            raise ValidationError(
                f"normalize={normalize!r} must be one of {NORMALIZE!r} or a (mean, std) pair."
            )
        return normalize
    try:
        mean, std = (np.asarray(v, dtype=np.float32).reshape(-1) for v in normalize)
    except (TypeError, ValueError):
        mean = std = None
    if mean is None or {len(mean), len(std)} - {1, 3} or not (std > 0).all():
        raise ValidationError(
            f"normalize={normalize!r} must be one of {NORMALIZE!r} or a (mean, std) pair of 1 "
            "or 3 channel values each, std > 0 (for example ((0.5,), (0.25,)))."
        )
    return mean, std


def normalization(normalize, weights):
    """What a block applies: False, True (the backbone's ImageNet preprocessing) or a pair."""
    norm = check_normalize(normalize)
    if isinstance(norm, tuple):
        return norm
    return norm == "imagenet" or (norm == "auto" and weights == "imagenet")
