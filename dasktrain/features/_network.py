"""What the network extractors (torch :class:`CNNFeatures`, :class:`KerasFeatures`) share.

Both turn images into the pooled last feature map of a trunk, built once per process from a
small :class:`ModelSpec` through :mod:`dasktrain._cache`. They differ only in how the trunk is
built, where ImageNet weights are cached and how a batch goes through it; the parameters, the
checks, the spec, the normalisation choice and the batch loop are written once, here.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .._dask import current_worker_threads
from ..exceptions import ValidationError, WeightsError
from ._base import (
    BaseImageFeatures,
    as_channels,
    check_bool,
    check_finite_block,
    check_n_threads,
)

__all__ = ["ModelSpec", "NetworkFeatures", "network_block", "file_stamp", "POOLS", "NORMALIZE"]

#: pooling and input-normalisation choices of the network extractors (torch and Keras)
POOLS = ("avg", "max")
NORMALIZE = ("auto", "imagenet", "none")


class ModelSpec(NamedTuple):
    """What a process needs to build a feature network once: the :mod:`dasktrain._cache` key.

    Small and hashable, it travels in the task graph instead of the model (dask-ml #842).
    """

    framework: str  # "torch" or "keras": two frameworks never share a cached model
    backbone: str
    weights: str | None  # None (seeded random), "imagenet" or an absolute file path
    stamp: tuple | None  # (size, mtime_ns) of a weights file: a rewritten file, a new model
    seed: int  # of the random weights (0 when weights are loaded)
    device: str | None = None  # torch: "auto", "cpu" or "cuda"
    pool: str | None = None  # Keras builds the pooling into the model


def file_stamp(path):
    """(size, mtime_ns) of a weights file: a changed file gives a new cache spec."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file {path!r} does not exist.") from exc
    except OSError as exc:
        raise WeightsError(f"weights file {path!r} cannot be read: {exc}.") from exc
    return (st.st_size, st.st_mtime_ns)


def network_block(block, *, n_features, batch_size, n_threads, load, forward):
    """The steps every network block function takes: ``(n, h, w, c)`` -> ``(n, d)`` float32.

    Parameters
    ----------
    block : ndarray of float32 images
    n_features : int
    batch_size : int
        Images per forward pass.
    n_threads : int or None
        None inside a worker: the worker's own thread count.
    load : callable
        ``load(threads)`` returns the (cached) model, ready for ``forward``.
    forward : callable
        ``forward(model, x)`` returns the features of one RGB batch ``x`` as numpy.
    """
    if len(block) == 0:
        return np.empty((0, n_features), np.float32)
    check_finite_block(block)
    model = load(n_threads or current_worker_threads() or check_n_threads(None))
    x = as_channels(block, 3)
    out = np.empty((len(x), n_features), np.float32)
    for s in range(0, len(x), batch_size):
        out[s : s + batch_size] = forward(model, x[s : s + batch_size])
    return out


class NetworkFeatures(BaseImageFeatures):
    """Base class of the network extractors (not public).

    Subclasses set ``_framework``, ``_pools`` and ``_block_fn`` and implement
    ``_check_backbone``, ``_min_size``, ``_imagenet_path``, ``_check_weights_file`` and
    ``_n_features``; they may add parameters (``_check_params``), spec fields
    (``_spec_fields``) and block keyword arguments (``_extra_block_kwargs``).
    """

    _framework = None
    _pools = POOLS
    #: the kind of file ``weights=`` takes, for the messages
    _weights_file = "a weights file"
    #: what the too-small-image message suggests besides resizing
    _smaller_hint = ""

    @property
    def _local_step(self):
        return self.batch_size

    # -- hooks ---------------------------------------------------------------------------------
    def _check_backbone(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _min_size(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _imagenet_path(self):  # pragma: no cover - abstract
        """The cached ImageNet weights of the backbone; WeightsError when absent."""
        raise NotImplementedError

    def _check_weights_file(self, path):  # pragma: no cover - abstract
        """Load ``path`` once on the driver, so a mismatch fails before any task runs."""
        raise NotImplementedError

    def _check_params(self):
        """Parameters a subclass adds (the torch device)."""

    def _spec_fields(self):
        """``ModelSpec`` fields a subclass fills in (``device`` or ``pool``)."""
        return {}

    def _extra_block_kwargs(self):
        return {}

    # -- shared --------------------------------------------------------------------------------
    def _validate(self):
        from .._validation import check_engine, check_positive_int

        self._check_backbone()
        self._check_params()
        if self.pool not in self._pools:
            raise ValidationError(f"pool={self.pool!r} must be one of {self._pools!r}.")
        if self.normalize not in NORMALIZE:
            raise ValidationError(f"normalize={self.normalize!r} must be one of {NORMALIZE!r}.")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.seed, "seed", minimum=0)
        check_engine(self.engine)
        check_n_threads(self.n_threads)
        check_bool(self.progress, "progress")
        self._validate_weights()

    def _validate_weights(self):
        w = self.weights
        if w is None:
            return
        if w == "imagenet":
            self._imagenet_path()
            return
        if not isinstance(w, (str, os.PathLike)):
            raise WeightsError(
                f"weights={w!r} must be None, 'imagenet' or the path of {self._weights_file}."
            )
        self._check_weights_file(os.path.abspath(os.fspath(w)))

    def _check_images(self, shape):
        n, h, w, c = shape
        need = self._min_size()
        if h < need or w < need:
            raise ValidationError(
                f"images of {h}x{w} pixels are too small for backbone {self.backbone!r}: it "
                f"needs at least {need}x{need}. Resize them (read_images(..., size=...))"
                f"{self._smaller_hint}."
            )
        if c not in (1, 3):
            raise ValidationError(
                f"X has {c} channels; {self.backbone!r} takes 3 (RGB) or 1 (gray, repeated to 3)."
            )

    def _spec(self):
        w = self.weights
        if w is None or w == "imagenet":
            weights, stamp = w, None
        else:
            weights = os.path.abspath(os.fspath(w))
            stamp = file_stamp(weights)
        return ModelSpec(
            framework=self._framework,
            backbone=self.backbone,
            weights=weights,
            stamp=stamp,
            seed=int(self.seed) if weights is None else 0,
            **self._spec_fields(),
        )

    def _block_kwargs(self, shape):
        normalize = self.normalize == "imagenet" or (
            self.normalize == "auto" and self.weights == "imagenet"
        )
        return {
            "spec": self._spec(),
            "batch_size": int(self.batch_size),
            "normalize": normalize,
            **self._extra_block_kwargs(),
        }
