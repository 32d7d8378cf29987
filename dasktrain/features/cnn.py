"""CNN features with PyTorch: a VGG19 / ResNet / small CNN trunk, pooled to one vector per image.

The model is never in a task graph: each block carries a small spec
``("cnn", backbone, weights, file stamp, seed, device)`` and the worker process builds the model
once through :func:`dasktrain._cache.get_or_build`, then reuses it for every chunk.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .._cache import get_or_build
from .._compat import import_optional
from .._dask import current_worker_threads
from ..exceptions import ValidationError, WeightsError
from . import _backbones
from ._base import (
    POOLS,
    BaseImageFeatures,
    as_channels,
    check_finite_block,
    check_n_threads,
)

logger = logging.getLogger(__name__)

__all__ = ["CNNFeatures"]

DEVICES = ("auto", "cpu", "cuda")

# ImageNet channel statistics (RGB), as torchvision's ImageNet weights expect.
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)

# File names torchvision gives its ImageNet checkpoints in the torch hub cache.
IMAGENET_FILES = {
    "vgg19": "vgg19-dcbb9e9d.pth",
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
}


# (backbone, absolute path, (size, mtime_ns)) of weights files already checked in this process
_CHECKED_FILES = set()


# -- weights -----------------------------------------------------------------------------------
def imagenet_path(backbone):
    """Path of torchvision's cached ImageNet checkpoint for ``backbone``; WeightsError if absent.

    Nothing is downloaded: the file must already be in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), where torchvision puts it.
    """
    fname = IMAGENET_FILES.get(backbone)
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
    heads = _backbones.head_prefixes(backbone)
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


def _file_stamp(path):
    """(size, mtime_ns) of a weights file: a changed file gives a new cache spec."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file {path!r} does not exist.") from exc
    except OSError as exc:
        raise WeightsError(f"weights file {path!r} cannot be read: {exc}.") from exc
    return (st.st_size, st.st_mtime_ns)


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
    _, backbone, weights, _stamp, seed, device = spec
    model = _backbones.build(backbone, seed=seed)
    if weights is not None:
        path = imagenet_path(backbone) if weights == "imagenet" else weights
        apply_state_dict(model, load_state_dict(path, backbone), backbone, path)
    model.eval()
    device = _resolve_device(device)
    logger.info("built %s trunk (weights=%s, seed=%d) on %s", backbone, weights, seed, device)
    return model.to(device), device


#: pool choices of CNNFeatures: the shared global pools, plus the whole map flattened
CNN_POOLS = POOLS + ("flatten",)


def n_cnn_features(backbone, pool, height, width):
    """Feature length of ``backbone`` with ``pool`` for ``height x width`` images."""
    channels = _backbones.feature_dim(backbone)
    if pool != "flatten":
        return channels
    h, w = _backbones.feature_map_size(backbone, height, width)
    return channels * h * w


def cnn_block(block, *, spec, pool, batch_size, normalize, n_threads=None):
    """Features of one numpy chunk of images ``(n, h, w, c)`` -> ``(n, d)`` float32.

    Module-level so the task graph references it by name; the model comes from the
    per-process cache keyed by ``spec``.
    """
    torch = import_optional("torch", "torch")
    block = np.asarray(block, dtype=np.float32)
    d = n_cnn_features(spec[1], pool, block.shape[1], block.shape[2])
    if len(block) == 0:
        return np.empty((0, d), np.float32)
    check_finite_block(block)
    model, device = get_or_build(spec, lambda: build_model(spec))
    threads = n_threads or current_worker_threads() or check_n_threads(None)
    # Resizing torch's pool is not free: only touch it when it differs. In a worker the
    # setting stays (it is the worker's); the local engine restores the caller's afterwards.
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    x = as_channels(block, 3)
    if normalize:
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    out = np.empty((len(x), d), np.float32)
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            fmap = model(torch.from_numpy(x[s : s + batch_size]).to(device))
            if pool == "flatten":
                pooled = fmap.flatten(1)
            else:
                pooled = fmap.mean(dim=(2, 3)) if pool == "avg" else fmap.amax(dim=(2, 3))
            out[s : s + batch_size] = pooled.float().cpu().numpy()
    return out


class CNNFeatures(BaseImageFeatures):
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

    @property
    def _local_step(self):
        return self.batch_size

    def _transform_local(self, fn, X, kwargs, n_out):
        torch = import_optional("torch", "torch")
        previous = torch.get_num_threads()
        try:
            return super()._transform_local(fn, X, kwargs, n_out)
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def _validate(self):
        _backbones.check_backbone(self.backbone)
        if self.device not in DEVICES:
            raise ValidationError(f"device={self.device!r} must be one of {DEVICES!r}.")
        self._validate_network_params(pools=CNN_POOLS)
        w = self.weights
        if w is None:
            return
        if w == "imagenet":
            imagenet_path(self.backbone)
            return
        if not isinstance(w, (str, os.PathLike)):
            raise WeightsError(
                f"weights={w!r} must be None, 'imagenet' or the path of a state-dict file."
            )
        # Read the file here (driver side) so a mismatch fails before any task runs; once
        # per (backbone, file version), not at every transform call.
        path = os.path.abspath(os.fspath(w))
        key = (self.backbone, path, _file_stamp(path))
        if key not in _CHECKED_FILES:
            model = _backbones.build(self.backbone, seed=0)
            apply_state_dict(model, load_state_dict(path, self.backbone), self.backbone, path)
            _CHECKED_FILES.add(key)

    def _check_images(self, shape):
        n, h, w, c = shape
        need = _backbones.min_size(self.backbone)
        if h < need or w < need:
            raise ValidationError(
                f"images of {h}x{w} pixels are too small for backbone {self.backbone!r}: it needs "
                f"at least {need}x{need}. Resize them (read_images(..., size=...)) or use a "
                "smaller backbone ('smallcnn' takes 8x8)."
            )
        if c not in (1, 3):
            raise ValidationError(
                f"X has {c} channels; {self.backbone!r} takes 3 (RGB) or 1 (gray, repeated to 3)."
            )

    def _n_features(self, shape):
        return n_cnn_features(self.backbone, self.pool, shape[1], shape[2])

    def _spec(self):
        w = self.weights
        if w is None:
            weights, stamp = None, None
        elif w == "imagenet":
            weights, stamp = "imagenet", None
        else:
            weights = os.path.abspath(os.fspath(w))
            stamp = _file_stamp(weights)
        seed = int(self.seed) if weights is None else 0
        return ("cnn", self.backbone, weights, stamp, seed, self.device)

    def _block_kwargs(self, shape):
        normalize = self.normalize == "imagenet" or (
            self.normalize == "auto" and self.weights == "imagenet"
        )
        return {
            "spec": self._spec(),
            "pool": self.pool,
            "batch_size": int(self.batch_size),
            "normalize": normalize,
        }

    _block_fn = staticmethod(cnn_block)
