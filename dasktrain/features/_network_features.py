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
from .._threads import check_n_threads
from .._validation import check_bool
from ..exceptions import ValidationError, WeightsError
from ._base import BaseImageFeatures, as_channels, check_finite_block
from ._user import (
    NORMALIZE,
    check_input_size,
    check_normalize,
    is_user_model,
    normalization,
    user_key,
)

__all__ = ["ModelSpec", "NetworkFeatures", "network_block", "file_stamp", "POOLS", "NORMALIZE"]

#: pooling choices of the network extractors (torch and Keras)
POOLS = ("avg", "max")


class ModelSpec(NamedTuple):
    """What a process needs to build a feature network once: the :mod:`dasktrain._cache` key.

    Small and hashable, it travels in the task graph instead of the model (dask-ml #842).
    """

    framework: str  # "torch" or "keras": two frameworks never share a cached model
    backbone: str  # a registry name, or "user-<token>" for a model builder
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


def network_block(
    block, *, n_features, batch_size, n_threads, load, forward, channels=3, prepare=None
):
    """The steps every network block function takes: ``(n, h, w, c)`` -> ``(n, d)`` float32.

    Parameters
    ----------
    block : ndarray of float32 images
    n_features : int or None
        None: whatever width the model returns (a user's model being probed).
    batch_size : int
        Images per forward pass.
    n_threads : int or None
        None inside a worker: the worker's own thread count.
    load : callable
        ``load(threads)`` returns the (cached) model, ready for ``forward``.
    forward : callable
        ``forward(model, x)`` returns the features of one batch ``x`` (``channels`` channels)
        as numpy.
    channels : int
        What the model takes: gray images are repeated to it (3 for RGB models).
    prepare : callable, optional
        ``prepare(batch)`` turns one batch of the block into what ``forward`` takes; by
        default the batch with its channels repeated to ``channels``.
    """
    if len(block) == 0:
        return np.empty((0, n_features), np.float32)
    check_finite_block(block)
    model = load(n_threads or current_worker_threads() or check_n_threads(None))
    as_channels(block[:1], channels)  # a channel mismatch fails before any work

    def batch(s):
        # Gray to the model's channels one batch at a time: for a whole 256-image chunk the
        # copy was a 50 MB temporary, and a task ran 13% slower than the same batches fed
        # one by one (benchmarks/parity.py efficiency).
        x = block[s : s + batch_size]
        return forward(model, as_channels(x, channels) if prepare is None else prepare(x))

    starts = range(0, len(block), batch_size)
    if n_features is None:  # a user's model, probed: its width is what it returns
        return np.concatenate([batch(s) for s in starts], axis=0).astype(np.float32, copy=False)
    out = np.empty((len(block), n_features), np.float32)
    for s in starts:
        out[s : s + batch_size] = batch(s)
    return out


class NetworkFeatures(BaseImageFeatures):
    """Base class of the network extractors (not public).

    Subclasses set ``_framework``, ``_pools`` and ``_block_fn`` and implement
    ``_check_backbone``, ``_min_size``, ``_imagenet_path``, ``_check_weights_file`` and
    ``_named_n_features``; they may add parameters (``_check_params``), spec fields
    (``_spec_fields``) and block keyword arguments (``_extra_block_kwargs``). A user's model
    (:mod:`._user`) needs ``_check_user_model`` (instance or builder of the framework's model)
    and ``_probe`` (its output width for an image size).
    """

    _framework: str | None = None  # "torch", "keras": what a ModelSpec names
    _pools: tuple[str, ...] = POOLS
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

    def _check_user_model(self):  # pragma: no cover - abstract
        """Raise unless ``backbone`` is the framework's model or a callable (the builder)."""
        raise NotImplementedError

    def _is_instance(self):  # pragma: no cover - abstract
        """True when ``backbone`` is a model instance (not a builder)."""
        raise NotImplementedError

    def _probe(self, height, width):  # pragma: no cover - abstract
        """Feature length of the user's model for images of that size (one forward pass)."""
        raise NotImplementedError

    def _require_framework(self):  # pragma: no cover - abstract
        """Import the framework or raise OptionalDependencyError naming the extra."""
        raise NotImplementedError

    def _check_params(self):
        """Parameters a subclass adds (the torch device)."""

    def _in_channels(self):
        """``(channels, where from)``: what the model takes, and the words that say why."""
        return 3, "RGB"

    def _spec_fields(self):
        """``ModelSpec`` fields a subclass fills in (``device`` or ``pool``)."""
        return {}

    def _extra_block_kwargs(self):
        return {}

    # -- shared --------------------------------------------------------------------------------
    def _validate(self):
        from .._validation import check_engine, check_positive_int

        # fit() is where scikit-learn validates: a missing framework must fail here, naming
        # the extra, not only when the first block is transformed.
        self._require_framework()
        if is_user_model(self.backbone):
            self._check_user_model()
        else:
            self._check_backbone()
        self._check_params()
        if self.pool not in self._pools:
            raise ValidationError(f"pool={self.pool!r} must be one of {self._pools!r}.")
        check_normalize(self.normalize)
        check_input_size(self.input_size)
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
        if is_user_model(self.backbone) and (w == "imagenet" or self._is_instance()):
            raise WeightsError(
                f"weights={w!r} with a model of your own: "
                + (
                    "an instance is used with its own weights; load yours into it first, "
                    "or pass a callable that builds it with weights='/path/to/file'."
                    if self._is_instance()
                    else "'imagenet' names the checkpoint of a built-in backbone; pass the "
                    "path of your model's weights file instead."
                )
            )
        if w == "imagenet":
            self._imagenet_path()
            return
        if not isinstance(w, (str, os.PathLike)):
            raise WeightsError(
                f"weights={w!r} must be None, 'imagenet' or the path of {self._weights_file}."
            )
        self._check_weights_file(os.path.abspath(os.fspath(w)))

    def _backbone_name(self):
        """The backbone in messages: its name, or the class of the user's model."""
        b = self.backbone
        if not is_user_model(b):
            return repr(b)
        return f"your model ({getattr(b, '__name__', type(b).__name__)})"

    def _check_images(self, shape):
        n, h, w, c = shape
        size = check_input_size(self.input_size)
        if size is not None and (h, w) != size:
            raise ValidationError(
                f"images of {h}x{w} pixels, but input_size={size!r} is declared for "
                f"{self._backbone_name()}: resize them (read_images(..., size={size!r}))."
            )
        need = 1 if is_user_model(self.backbone) else self._min_size()
        if h < need or w < need:
            raise ValidationError(
                f"images of {h}x{w} pixels are too small for backbone {self._backbone_name()}: it "
                f"needs at least {need}x{need}. Resize them (read_images(..., size=...))"
                f"{self._smaller_hint}."
            )
        channels, why = self._in_channels()
        if c != channels and c != 1:
            fix = (
                "convert them to gray (read_images(..., color='gray'))"
                if channels == 1
                else f"pass {channels}-channel or gray (1-channel, repeated) images"
            )
            raise ValidationError(
                f"X has {c} channels, but {self._backbone_name()} takes {channels} ({why}): {fix}."
            )

    def _spec(self):
        w = self.weights
        if w is None or w == "imagenet":
            weights, stamp = w, None
        else:
            weights = os.path.abspath(os.fspath(w))
            stamp = file_stamp(weights)
        backbone = self.backbone
        if is_user_model(backbone):
            # An instance travels itself (one graph key) and is never cached by name.
            backbone = "user-instance" if self._is_instance() else user_key(backbone)
        return ModelSpec(
            framework=self._framework,
            backbone=backbone,
            weights=weights,
            stamp=stamp,
            seed=int(self.seed) if weights is None else 0,
            **self._spec_fields(),
        )

    def _model_arg(self):
        """A user's model instance (sent once per graph, see :mod:`._user`), else None."""
        if is_user_model(self.backbone) and self._is_instance():
            return self.backbone
        return None

    def _n_features(self, shape):
        if is_user_model(self.backbone):
            return self._probe(shape[1], shape[2])
        return self._named_n_features(shape)

    def _named_n_features(self, shape):  # pragma: no cover - abstract
        raise NotImplementedError

    def _block_kwargs(self, shape):
        user = is_user_model(self.backbone)
        return {
            "spec": self._spec(),
            "batch_size": int(self.batch_size),
            "normalize": normalization(self.normalize, self.weights),
            # a builder of the user's model: small (pickled by reference), built per process
            "build": self.backbone if user and not self._is_instance() else None,
            "n_features": self._probe(shape[1], shape[2]) if user else None,
            **self._extra_block_kwargs(),
        }
