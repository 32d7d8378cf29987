"""CNN features with PyTorch: a VGG19 / ResNet / small CNN trunk, pooled to one vector per image.

The model is never in a task graph: each block carries a small
:class:`~dasktrain.features._network.ModelSpec` and the worker process builds the model once
through :func:`dasktrain._cache.get_or_build`, then reuses it for every chunk.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .._cache import get_or_build
from .._compat import import_optional
from ..exceptions import ValidationError, WeightsError
from . import _backbones
from ._network import POOLS, NetworkFeatures, file_stamp, network_block

logger = logging.getLogger(__name__)

__all__ = ["CNNFeatures"]

DEVICES = ("auto", "cpu", "cuda")

# ImageNet channel statistics (RGB), as torchvision's ImageNet weights expect.
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)


# (backbone, absolute path, (size, mtime_ns)) of weights files already checked in this process
_CHECKED_FILES = set()


# -- weights -----------------------------------------------------------------------------------
def imagenet_path(backbone):
    """Path of torchvision's cached ImageNet checkpoint for ``backbone``; WeightsError if absent.

    Nothing is downloaded: the file must already be in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), where torchvision puts it.
    """
    fname = _backbones.get_backbone(backbone).imagenet_file
    if fname is None:
        raise WeightsError(
            f"weights='imagenet' is not available for backbone={backbone!r} (no ImageNet "
            f"checkpoint exists); use weights=None (seeded random) or a file path."
        )
    torch = import_optional("torch", "torch")
    path = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
    if not os.path.isfile(path):
        raise WeightsError(
            f"weights='imagenet': torchvision's ImageNet checkpoint {fname!r} for {backbone!r} is "
            f"not in the torch hub cache ({path}) and dasktrain never downloads at run time. "
            f"Download https://download.pytorch.org/models/{fname} on a machine with internet "
            f"and pass weights='/path/to/{fname}', normalize='imagenet' (or copy it into "
            f"{os.path.dirname(path)})."
        )
    return path


def load_state_dict(path, backbone):
    """Read a torchvision-compatible state dict from ``path`` and keep the trunk's entries.

    Loads with ``torch.load(path, map_location="cpu", weights_only=True)``. A checkpoint
    wrapped as ``{"state_dict": ...}`` / ``{"model": ...}`` or saved from a
    DistributedDataParallel model (``module.`` prefix) is unwrapped. Classification-head keys
    (``classifier.*`` / ``fc.*``) are dropped: the trunk has no head.

    Raises
    ------
    WeightsError
        Unreadable file, missing or unexpected keys (named), or shape mismatches.
    """
    torch = import_optional("torch", "torch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file {path!r} does not exist.") from exc
    except Exception as exc:
        raise WeightsError(
            f"weights file {path!r} could not be read as a torch state dict with "
            f"weights_only=True ({type(exc).__name__}: {exc}). Save it with "
            "`torch.save(model.state_dict(), path)`."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(
            f"weights file {path!r} holds a {type(state).__name__}, not a state dict of tensors; "
            "save it with `torch.save(model.state_dict(), path)`."
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    heads = _backbones.get_backbone(backbone).head_prefixes
    return {k: v for k, v in state.items() if not k.startswith(heads)}


def apply_state_dict(model, state, backbone, path):
    """Load ``state`` into ``model`` strictly.

    Raises a WeightsError naming the missing, unexpected and mis-shaped keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
        raise WeightsError(
            f"weights file {path!r} does not match backbone {backbone!r}: "
            + "; ".join(parts)
            + ". Pass a torchvision-compatible state dict saved from the same architecture."
        )
    model.load_state_dict(state, strict=True)


def _short(items, n=6):
    shown = ", ".join(map(repr, items[:n]))
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


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


def build_model(spec):
    """Build the eval-mode trunk described by ``spec`` (called once per process by the cache)."""
    model = _backbones.build(spec.backbone, seed=spec.seed)
    if spec.weights is not None:
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


def cnn_block(block, *, spec, pool, batch_size, normalize, n_threads=None):
    """Features of one numpy chunk of images ``(n, h, w, c)`` -> ``(n, d)`` float32.

    Module-level so the task graph references it by name; the model comes from the
    per-process cache keyed by ``spec``.
    """
    torch = import_optional("torch", "torch")
    block = np.asarray(block, dtype=np.float32)

    def load(threads):
        loaded = get_or_build(spec, lambda: build_model(spec))
        # Resizing torch's pool is not free: only touch it when it differs. In a worker the
        # setting stays (it is the worker's); the local engine restores the caller's afterwards.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return loaded

    def forward(loaded, x):
        model, device = loaded
        if normalize:
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        with torch.inference_mode():
            fmap = model(torch.from_numpy(x).to(device))
            if pool == "flatten":
                pooled = fmap.flatten(1)
            else:
                pooled = fmap.mean(dim=(2, 3)) if pool == "avg" else fmap.amax(dim=(2, 3))
            return pooled.float().cpu().numpy()

    return network_block(
        block,
        n_features=n_cnn_features(spec.backbone, pool, block.shape[1], block.shape[2]),
        batch_size=batch_size,
        n_threads=n_threads,
        load=load,
        forward=forward,
    )


class CNNFeatures(NetworkFeatures):
    """Pooled convolutional features from a PyTorch VGG19 / ResNet-18/34 / small CNN trunk.

    A stateless scikit-learn transformer: ``fit`` only validates, ``transform`` turns each
    image into the globally pooled last feature map of the trunk (512 values for VGG19 and the
    ResNets, 64 for ``"smallcnn"``).

    Parameters
    ----------
    backbone : {"vgg19", "resnet18", "resnet34", "smallcnn"}, default "vgg19"
        Trunk architecture (defined in dasktrain, torchvision-compatible parameter names).
        ``"smallcnn"`` is three conv blocks (~24k parameters), fast on a CPU.
    weights : None, "imagenet" or path, default None
        None: seeded random weights (deterministic features, see ``seed``). A path: a
        torchvision-compatible state dict (``torch.save(model.state_dict(), path)``), loaded
        with ``weights_only=True``; head keys (``fc.*`` / ``classifier.*``) are ignored.
        ``"imagenet"``: torchvision's checkpoint from the torch hub cache; never downloaded.
    pool : {"avg", "max", "flatten"}, default "avg"
        Global pooling of the last feature map, or ``"flatten"``: the whole map as one
        vector (``channels x h' x w'``; VGG19 on 128x128 images gives 512 x 4 x 4 = 8192
        values, the features of the chest X-ray study).
    batch_size : int, default 64
        Images per forward pass.
    device : {"auto", "cpu", "cuda"}, default "auto"
        ``"auto"`` uses CUDA when the process running the chunk sees a GPU (one worker per
        GPU with dask-cuda).
    normalize : {"auto", "imagenet", "none"}, default "auto"
        ImageNet mean/std normalisation of the [0, 1] input. ``"auto"`` applies it only with
        ``weights="imagenet"``; pass ``"imagenet"`` when a weights *file* holds ImageNet
        weights.
    engine : {"auto", "local", "dask"}, default "auto"
        ``"auto"`` follows the input (numpy -> local, dask -> dask). ``"local"`` computes a
        dask input in this process; ``"dask"`` sends a numpy input to the cluster.
    seed : int, default 0
        Seed of the random weights (unused when weights are loaded).
    n_threads : int, optional
        torch threads for the local engine; default :func:`dasktrain._compat.cpu_count`. On
        the dask engine each worker uses its own thread count.
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
        backbone="vgg19",
        *,
        weights=None,
        pool="avg",
        batch_size=64,
        device="auto",
        normalize="auto",
        engine="auto",
        seed=0,
        n_threads=None,
        progress=False,
    ):
        self.backbone = backbone
        self.weights = weights
        self.pool = pool
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.engine = engine
        self.seed = seed
        self.n_threads = n_threads
        self.progress = progress

    _framework = "torch"
    _pools = CNN_POOLS
    _weights_file = "a state-dict file"
    _smaller_hint = " or use a smaller backbone ('smallcnn' takes 8x8)"
    _block_fn = staticmethod(cnn_block)

    def _transform_local(self, fn, X, kwargs, n_out):
        torch = import_optional("torch", "torch")
        previous = torch.get_num_threads()
        try:
            return super()._transform_local(fn, X, kwargs, n_out)
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def _check_backbone(self):
        _backbones.get_backbone(self.backbone)

    def _check_params(self):
        if self.device not in DEVICES:
            raise ValidationError(f"device={self.device!r} must be one of {DEVICES!r}.")

    def _min_size(self):
        return _backbones.get_backbone(self.backbone).min_size

    def _imagenet_path(self):
        return imagenet_path(self.backbone)

    def _check_weights_file(self, path):
        # Once per (backbone, file version), not at every transform call.
        key = (self.backbone, path, file_stamp(path))
        if key not in _CHECKED_FILES:
            model = _backbones.build(self.backbone, seed=0)
            apply_state_dict(model, load_state_dict(path, self.backbone), self.backbone, path)
            _CHECKED_FILES.add(key)

    def _n_features(self, shape):
        return n_cnn_features(self.backbone, self.pool, shape[1], shape[2])

    def _spec_fields(self):
        return {"device": self.device}

    def _extra_block_kwargs(self):
        return {"pool": self.pool}
