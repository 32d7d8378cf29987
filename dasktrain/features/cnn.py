"""CNN features with PyTorch: a VGG19 / ResNet / small CNN trunk, pooled to one vector per image.

The model is never in a task graph: each block carries a small
:class:`~dasktrain.features._network_features.ModelSpec` and the worker process builds the
model once through ``dasktrain._cache.get_or_build``, then reuses it for every chunk.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import numpy as np

from .._cache import get_or_build
from .._compat import import_optional
from .._threads import check_n_threads
from .._validation import check_positive_int
from ..exceptions import ValidationError
from . import _backbones
from ._network_features import POOLS, NetworkFeatures, file_stamp, network_block
from ._torch_weights import apply_state_dict, imagenet_path, load_state_dict
from ._user import IMAGENET_MEAN, IMAGENET_STD, check_normalize, is_user_model, unwrap, user_key

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    import torch

    from .._typing import ArrayLike

logger = logging.getLogger(__name__)

__all__ = ["CNNFeatures"]

DEVICES = ("auto", "cpu", "cuda")

# (backbone, absolute path, (size, mtime_ns)) of weights files already checked in this process
_CHECKED_FILES: set[tuple[str, str, tuple[int, int]]] = set()


# -- per-process model -------------------------------------------------------------------------
def _resolve_device(device):
    torch = import_optional("torch", "torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValidationError(
            "device='cuda' but torch sees no CUDA device here; use 'auto' or 'cpu'."
        )
    return device


def build_user_module(build, seed):
    """``build()``, checked to be a ``torch.nn.Module``, with random weights drawn from ``seed``
    (the same in every process; the caller's global torch RNG is left as it was)."""
    torch = import_optional("torch", "torch")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    if not isinstance(model, torch.nn.Module):
        raise ValidationError(
            f"backbone={build!r} returned a {type(model).__name__}, not a torch.nn.Module; pass "
            "a module, or a callable (class, function) that returns one."
        )
    return model


def build_model(spec, build=None):
    """Build the eval-mode trunk described by ``spec`` (called once per process by the cache).

    ``build``: the user's model builder (``spec.backbone`` is then its ``user-<token>`` key).
    """
    if build is not None:
        model = build_user_module(build, spec.seed)
        if spec.weights is not None:
            apply_state_dict(model, load_state_dict(spec.weights), None, spec.weights)
    else:
        model = _backbones.build(spec.backbone, seed=spec.seed)
    if build is None and spec.weights is not None:
        path = imagenet_path(spec.backbone) if spec.weights == "imagenet" else spec.weights
        apply_state_dict(model, load_state_dict(path, spec.backbone), spec.backbone, path)
    model.eval()
    device = _resolve_device(spec.device)
    logger.info(
        "built %s trunk (weights=%s, seed=%d) on %s", spec.backbone, spec.weights, spec.seed, device
    )
    return model.to(device), device


#: pool choices of CNNFeatures: the shared global pools, plus the whole map flattened
CNN_POOLS = POOLS + ("flatten",)


def n_cnn_features(backbone, pool, height, width):
    """Feature length of ``backbone`` with ``pool`` for ``height x width`` images."""
    trunk = _backbones.get_backbone(backbone)
    if pool != "flatten":
        return trunk.feature_dim
    h, w = trunk.feature_map_size(height, width)
    return trunk.feature_dim * h * w


def model_input(x, channels, normalize):
    """One batch ``(n, h, w, c)`` as the contiguous ``(n, channels, h, w)`` float32 array a
    torch model takes, in one copy: gray broadcast to ``channels``, then minus mean over std
    in place (ImageNet's for ``True``, a user's float32 ``(mean, std)``, none for False).

    Repeating to 3 channels and transposing were two copies of every batch, 14% of a
    smallcnn task (py-spy on a worker).
    """
    out = np.empty((len(x), channels) + x.shape[1:3], np.float32)
    out[...] = x.transpose(0, 3, 1, 2)
    if normalize is not False:
        mean, std = normalize if isinstance(normalize, tuple) else (IMAGENET_MEAN, IMAGENET_STD)
        out -= mean.reshape(-1, 1, 1)
        out /= std.reshape(-1, 1, 1)
    return out


def _pooled(fmap, pool):
    """``(n, d)`` features from a model's output: as is, or a ``(n, c, h, w)`` map pooled."""
    if fmap.ndim == 2:
        return fmap
    if fmap.ndim != 4:
        raise ValidationError(
            f"the model returned a tensor of shape {tuple(fmap.shape)!r}; a feature model "
            "returns (n, d) features or (n, c, h, w) feature maps (pooled by `pool`)."
        )
    if pool == "flatten":
        return fmap.flatten(1)
    return fmap.mean(dim=(2, 3)) if pool == "avg" else fmap.amax(dim=(2, 3))


def _ready(spec, model, build):
    """``(model, device)`` in eval mode: from the per-process cache, or the instance sent."""
    if model is None:
        return get_or_build(spec, lambda: build_model(spec, build))
    device = _resolve_device(spec.device)
    model.eval()  # the local engine puts the caller's mode back (CNNFeatures)
    return model.to(device), device


def cnn_block(
    block,
    model=None,
    *,
    spec,
    pool,
    batch_size,
    normalize,
    build=None,
    n_features=None,
    n_threads=None,
    channels=3,
):
    """Features of one numpy chunk of images ``(n, h, w, c)`` -> ``(n, d)`` float32.

    Module-level so the task graph references it by name; the model comes from the
    per-process cache keyed by ``spec`` (built by ``build`` for a user's builder), or is the
    user's instance ``model`` (one graph key, see :mod:`._user`). ``n_features``: the output
    width when it is known ahead (None: what the model returns). ``channels``: what the
    model's first convolution takes; gray images are repeated to it.
    """
    torch = import_optional("torch", "torch")
    block = np.asarray(block, dtype=np.float32)
    model = unwrap(model)

    def load(threads):
        loaded = _ready(spec, model, build)
        # Resizing torch's pool is not free: only touch it when it differs. In a worker the
        # setting stays (it is the worker's); the local engine restores the caller's afterwards.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return loaded

    def forward(loaded, x):
        net, device = loaded
        with torch.inference_mode():
            fmap = net(torch.from_numpy(x).to(device))
            return _pooled(fmap, pool).float().cpu().numpy()

    if n_features is None and build is None and model is None:
        n_features = n_cnn_features(spec.backbone, pool, block.shape[1], block.shape[2])
    return network_block(
        block,
        n_features=n_features,
        batch_size=batch_size,
        n_threads=n_threads,
        load=load,
        forward=forward,
        channels=channels,
        prepare=functools.partial(model_input, channels=channels, normalize=normalize),
    )


class CNNFeatures(NetworkFeatures):
    """Pooled convolutional features from a PyTorch trunk: a built-in one or your own module.

    A stateless scikit-learn transformer: ``fit`` only validates, ``transform`` turns each
    image into the globally pooled last feature map of the trunk (512 values for VGG19 and the
    ResNets, 64 for ``"smallcnn"``).

    Parameters
    ----------
    backbone : {"vgg19", "resnet18", "resnet34", "smallcnn"}, torch.nn.Module or callable, \
default "vgg19"
        A built-in trunk (defined in dasktrain, torchvision-compatible parameter names;
        ``"smallcnn"`` is three conv blocks, ~24k parameters, fast on a CPU), or **your
        model**: a ``torch.nn.Module`` (a fine-tuned torchvision model, a timm model...), used
        with its own weights and sent to each worker once; or a callable returning one (a
        class, ``functools.partial(torchvision.models.resnet50, num_classes=2)``), built once
        per process under ``seed``. It takes ``(n, 3, h, w)`` float32 and returns ``(n, d)``
        features or ``(n, c, h', w')`` maps (pooled by ``pool``); see
        "Your own model" in :mod:`dasktrain.features` for the whole contract.
    weights : None, "imagenet" or path, default None
        None: seeded random weights (deterministic features, see ``seed``); for a module
        instance, its own weights. A path: a torchvision-style state dict
        (``torch.save(model.state_dict(), path)``), loaded with ``weights_only=True``, with a
        ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and a DDP ``module.`` prefix
        undone; for a built-in trunk the head keys (``fc.*`` / ``classifier.*``) are ignored,
        for your builder every key must match (``strict``). ``"imagenet"``: torchvision's
        checkpoint of a built-in trunk from the torch hub cache; never downloaded.
    pool : {"avg", "max", "flatten"}, default "avg"
        Global pooling of the last feature map, or ``"flatten"``: the whole map as one
        vector (``channels x h' x w'``; VGG19 on 128x128 images gives 512 x 4 x 4 = 8192
        values, the features of the chest X-ray study).
    batch_size : int, default 64
        Images per forward pass.
    device : {"auto", "cpu", "cuda"}, default "auto"
        ``"auto"`` uses CUDA when the process running the chunk sees a GPU (one worker per
        GPU with dask-cuda).
    normalize : {"auto", "imagenet", "none"} or (mean, std), default "auto"
        ImageNet mean/std normalisation of the [0, 1] input. ``"auto"`` applies it only with
        ``weights="imagenet"``; pass ``"imagenet"`` when a weights *file* holds ImageNet
        weights, or your model's own per-channel ``(mean, std)`` (1 or 3 values each).
    input_size : int or (int, int), optional
        The image size the model takes; other sizes are refused (resize them with
        ``read_images(size=...)``). None: any size the model accepts.
    in_channels : int, optional
        The channels your model takes. None: those of its first ``torch.nn.Conv2d`` (3 when
        it has none, or a lazy one); a gray network (``nn.Conv2d(1, ...)``) gets gray images
        as they are, an RGB one gets gray images repeated to 3 channels. Images with other
        channels are refused before any work. The built-in backbones take RGB (3).
    engine : {"auto", "local", "dask"}, default "auto"
        ``"auto"`` follows the input (numpy -> local, dask -> dask). ``"local"`` computes a
        dask input in this process; ``"dask"`` sends a numpy input to the cluster.
    seed : int, default 0
        Seed of the random weights (unused when weights are loaded).
    n_threads : int, optional
        Local engine: how many batches are computed at once, each on one torch thread (as
        Dask's single-thread workers do; torch's own threads inside one batch gained little
        on a few cores); default ``dasktrain._compat.cpu_count()``. On the dask engine each
        worker uses its own thread count.
    progress : bool, default False
        Show a tqdm bar (local) or ``distributed.progress`` (dask).

    Attributes
    ----------
    n_features_out_ : int
        Feature length (set by ``fit(X)``).

    See Also
    --------
    KerasFeatures : the same through TensorFlow/Keras.
    HOGFeatures, HistogramFeatures : classical descriptors, no deep learning.

    Examples
    --------
    >>> import numpy as np
    >>> from dasktrain.features import CNNFeatures
    >>> X = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    >>> CNNFeatures("smallcnn").fit_transform(X).shape
    (4, 64)
    """

    def __init__(
        self,
        backbone: str | torch.nn.Module | Callable[[], torch.nn.Module] = "vgg19",
        *,
        weights: str | os.PathLike[str] | None = None,
        pool: str = "avg",
        batch_size: int = 64,
        device: str = "auto",
        normalize: str | tuple[ArrayLike, ArrayLike] = "auto",
        input_size: int | tuple[int, int] | None = None,
        in_channels: int | None = None,
        engine: str = "auto",
        seed: int = 0,
        n_threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.pool = pool
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.input_size = input_size
        self.in_channels = in_channels
        self.engine = engine
        self.seed = seed
        self.n_threads = n_threads
        self.progress = progress

    _framework = "torch"
    _pools = CNN_POOLS
    _weights_file = "a state-dict file"
    _smaller_hint = " or use a smaller backbone ('smallcnn' takes 8x8)"
    _block_fn = staticmethod(cnn_block)

    def _require_framework(self):
        import_optional("torch", "torch")

    def _transform_local(self, fn, X, kwargs, n_out):
        torch = import_optional("torch", "torch")
        previous = torch.get_num_threads()
        module = self._model_arg()
        training = module is not None and module.training
        try:
            return super()._transform_local(fn, X, kwargs, n_out)
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
            if training:  # the caller's module, put in eval mode for inference
                module.train()

    def _check_backbone(self):
        _backbones.get_backbone(self.backbone)

    def _check_params(self):
        if self.device not in DEVICES:
            raise ValidationError(f"device={self.device!r} must be one of {DEVICES!r}.")
        c = self.in_channels
        if c is not None:
            check_positive_int(c, "in_channels")
            if not is_user_model(self.backbone) and c != 3:
                raise ValidationError(
                    f"in_channels={c!r}, but the built-in backbone {self.backbone!r} takes RGB "
                    "(3); gray images are repeated to 3. in_channels is for a model of yours."
                )

    def _check_images(self, shape):
        super()._check_images(shape)
        channels, _ = self._in_channels()
        norm = check_normalize(self.normalize)
        if channels == 3:
            return
        sizes = {len(v) for v in norm} if isinstance(norm, tuple) else set()
        if norm == "imagenet" or sizes - {1, channels}:
            raise ValidationError(
                f"normalize={self.normalize!r} holds statistics of 3 channels, but your model "
                f"takes {channels}; pass a (mean, std) pair of {channels} or 1 value(s) each."
            )

    def _in_channels(self):
        if not is_user_model(self.backbone):
            return 3, "RGB"
        if self.in_channels is not None:
            return int(self.in_channels), f"in_channels={self.in_channels!r}"
        torch = import_optional("torch", "torch")
        module = (
            self.backbone if self._is_instance() else _ready(self._spec(), None, self.backbone)[0]
        )
        conv = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
        if conv is None or not conv.in_channels:  # none, or a LazyConv2d: RGB, the contract
            return 3, "RGB"
        return int(conv.in_channels), f"its first convolution, {conv}"

    def _min_size(self):
        return _backbones.get_backbone(self.backbone).min_size

    def _imagenet_path(self):
        return imagenet_path(self.backbone)

    def _check_weights_file(self, path):
        # Once per (backbone, file version), not at every transform call.
        user = not isinstance(self.backbone, str)
        name = user_key(self.backbone) if user else self.backbone
        key = (name, path, file_stamp(path))
        if key not in _CHECKED_FILES:
            if user:
                model = build_user_module(self.backbone, 0)
                apply_state_dict(model, load_state_dict(path), None, path)
            else:
                model = _backbones.build(self.backbone, seed=0)
                apply_state_dict(model, load_state_dict(path, self.backbone), self.backbone, path)
            _CHECKED_FILES.add(key)

    def _check_user_model(self):
        torch = import_optional("torch", "torch")
        if not isinstance(self.backbone, torch.nn.Module) and not callable(self.backbone):
            raise ValidationError(
                f"backbone={self.backbone!r} is not a known backbone name, a torch.nn.Module "
                "or a callable that builds one; use one of "
                f"{', '.join(map(repr, _backbones.BACKBONES))} or pass your model."
            )

    def _is_instance(self):
        torch = import_optional("torch", "torch")
        return isinstance(self.backbone, torch.nn.Module)

    def _probe(self, height, width):
        """One forward pass of a zero image on this process (the model built here if needed)."""
        kwargs = {
            "spec": self._spec(),
            "pool": self.pool,
            "batch_size": 1,
            "normalize": False,
            "build": None if self._is_instance() else self.backbone,
            "n_threads": check_n_threads(self.n_threads),
            "channels": self._in_channels()[0],
        }
        module = self._model_arg()
        training = module is not None and module.training
        try:
            zeros = np.zeros((1, height, width, kwargs["channels"]), np.float32)
            return int(cnn_block(zeros, module, **kwargs).shape[1])
        finally:
            if training:
                module.train()

    def _named_n_features(self, shape):
        return n_cnn_features(self.backbone, self.pool, shape[1], shape[2])

    def _spec_fields(self):
        return {"device": self.device}

    def _extra_block_kwargs(self):
        return {"pool": self.pool, "channels": self._in_channels()[0]}
