"""CNN features through TensorFlow/Keras (``keras.applications``), for TensorFlow pipelines.

TensorFlow is imported lazily (``import dasktrain`` never imports it) through
:func:`dasktrain._compat.import_optional`, so a missing install says
``pip install 'dasktrain[tensorflow]'``. As with :class:`~dasktrain.features.CNNFeatures`, each
worker process builds the model once from a small spec held in ``dasktrain._cache``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._cache import get_or_build
from .._compat import import_optional
from .._threads import check_n_threads
from ..exceptions import ValidationError, WeightsError
from ._network_features import NetworkFeatures, network_block
from ._user import IMAGENET_MEAN, IMAGENET_STD, unwrap

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._typing import ArrayLike

    #: a keras.Model (keras has no annotations)
    KerasModel = Any

logger = logging.getLogger(__name__)

__all__ = ["KerasFeatures", "KERAS_BACKBONES", "KerasBackbone"]


@dataclasses.dataclass(frozen=True)
class KerasBackbone:
    """One ``keras.applications`` trunk: everything :class:`KerasFeatures` needs, in one record."""

    name: str
    application: str  # the keras.applications constructor
    preprocess: str  # the keras.applications module whose preprocess_input it takes
    feature_dim: int
    imagenet_file: str  # the ImageNet "notop" weights in the Keras cache


_REGISTRY = {
    b.name: b
    for b in (
        KerasBackbone(
            "vgg19", "VGG19", "vgg19", 512, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
        ),
        KerasBackbone(
            "resnet50",
            "ResNet50",
            "resnet",
            2048,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        KerasBackbone(
            "mobilenetv2",
            "MobileNetV2",
            "mobilenet_v2",
            1280,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
    )
}
#: Names of the Keras backbones.
KERAS_BACKBONES = tuple(_REGISTRY)
_MIN_SIZE = 32


def _keras():
    import_optional("tensorflow", "tensorflow")
    return import_optional("keras", "tensorflow")


def get_keras_backbone(name):
    """The :class:`KerasBackbone` called ``name``; raise naming the valid ones otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValidationError(
            f"backbone={name!r} is not a Keras backbone dasktrain knows; use one of "
            f"{', '.join(map(repr, KERAS_BACKBONES))}."
        )
    return _REGISTRY[name]


def keras_imagenet_path(backbone):
    """Path of the cached Keras ImageNet weights (no top) of ``backbone``; raise if absent."""
    trunk = get_keras_backbone(backbone)
    fname = trunk.imagenet_file
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "models", fname)
    if not os.path.isfile(path):
        raise WeightsError(
            f"weights='imagenet': Keras' ImageNet weights {fname!r} for {backbone!r} are not in "
            f"the Keras cache ({path}) and dasktrain never downloads at run time. Fetch them on a "
            f"machine with internet (keras.applications.{trunk.application}(weights='imagenet',"
            f" include_top=False)) and copy {fname!r} there, or pass weights='/path/to/{fname}',"
            " normalize='imagenet'."
        )
    return path


def _set_tf_threads(tf, n_threads):
    # TensorFlow fixes its thread pools when its runtime starts; later calls raise
    # RuntimeError and the first setting stays (documented on KerasFeatures).
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(n_threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        logger.debug(
            "TensorFlow threads already fixed; keeping %s",
            tf.config.threading.get_intra_op_parallelism_threads(),
        )


def build_keras_model(spec, n_threads):
    """Build the Keras trunk for ``spec`` (called once per process by the cache)."""
    backbone, weights, seed = spec.backbone, spec.weights, spec.seed
    keras = _keras()
    import tensorflow as tf

    _set_tf_threads(tf, n_threads)
    ctor = getattr(keras.applications, get_keras_backbone(backbone).application)
    # Keras draws unseeded initial weights from Python's global `random`, which other
    # threads of a Dask worker also use: the draws would differ between processes. So the
    # random weights are drawn again below from a private NumPy generator, and the caller's
    # global random states are restored around the build.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        model = ctor(
            include_top=False, weights=None, pooling=spec.pool, input_shape=(None, None, 3)
        )
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if weights is None:
        _seeded_glorot(model, seed)
    if weights is not None:
        path = keras_imagenet_path(backbone) if weights == "imagenet" else weights
        _load_weights(model, path, f"Keras backbone {backbone!r} (include_top=False)")
    logger.info("built Keras %s trunk (weights=%s, seed=%d)", backbone, weights, seed)
    return model


def _seeded_glorot(model, seed):
    """Re-draw every kernel (ndim >= 2) Glorot-uniform from ``np.random.default_rng(seed)``.

    Glorot-uniform is the default kernel initialiser of the layers of these applications;
    biases and BatchNorm statistics keep their constant initial values.
    """
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(int(d) for d in w.shape)
        if len(shape) < 2:
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w.assign(rng.uniform(-limit, limit, size=shape).astype(np.float32))


def build_user_keras(spec, build, n_threads):
    """``build()`` (the user's builder), checked to be a ``keras.Model``, weights loaded.

    Random initial weights are drawn as for the built-in trunks (:func:`_seeded_glorot`):
    Keras seeds its initialisers from Python's global ``random``, which the threads of a
    Dask worker also draw from, so ``keras.utils.set_random_seed`` alone gave two workers two
    different models. The caller's Python and NumPy random states are put back.
    """
    keras = _keras()
    import tensorflow as tf

    _set_tf_threads(tf, n_threads)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        model = build()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if not isinstance(model, keras.Model):
        raise ValidationError(
            f"backbone={build!r} returned a {type(model).__name__}, not a keras.Model; pass a "
            "model, or a callable that returns one."
        )
    if spec.weights is None:
        _seeded_glorot(model, spec.seed)
    else:
        _load_weights(model, spec.weights, "your model")
    return model


def _load_weights(model, path, what):
    try:
        with warnings.catch_warnings():
            # Keras 3 notes every empty container of the functional graph; not a mismatch.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except Exception as exc:
        raise WeightsError(
            f"weights file {path!r} could not be loaded into {what}: {type(exc).__name__}: "
            f"{exc}. Save it with `model.save_weights('file.weights.h5')` from the same "
            "architecture."
        ) from exc


def _user_forward(model, x, normalize, pool):
    """A user's Keras model on one batch: normalised input, ``(n, d)`` or pooled maps out."""
    if isinstance(normalize, tuple):
        x = (x - normalize[0]) / normalize[1]
    elif normalize:
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    out = np.asarray(model(x, training=False))
    if out.ndim == 4:  # (n, h', w', c) maps
        out = out.mean(axis=(1, 2)) if pool == "avg" else out.max(axis=(1, 2))
    if out.ndim != 2:
        raise ValidationError(
            f"the model returned an array of shape {out.shape!r}; a feature model returns "
            "(n, d) features or (n, h, w, c) feature maps (pooled by `pool`)."
        )
    return out


def keras_block(
    block,
    model=None,
    *,
    spec,
    batch_size,
    normalize,
    build=None,
    n_features=None,
    pool="avg",
    n_threads=None,
):
    """Keras features of one numpy chunk ``(n, h, w, c)`` -> ``(n, d)`` float32.

    ``model``: the user's instance (one graph key); ``build``: the user's builder (built once
    per process). Neither: a ``keras.applications`` trunk named by ``spec.backbone``.
    """
    model = unwrap(model)
    user = model is not None or build is not None

    def load(threads):
        if model is not None:
            return model
        if build is not None:
            return get_or_build(spec, lambda: build_user_keras(spec, build, threads))
        return get_or_build(spec, lambda: build_keras_model(spec, threads))

    def forward(net, x):
        if user:
            return _user_forward(net, x, normalize, pool)
        if normalize:
            prep = getattr(_keras().applications, trunk.preprocess).preprocess_input
            x = np.asarray(prep(x * 255.0), dtype=np.float32)
        return net(x, training=False).numpy()

    trunk = None if user else get_keras_backbone(spec.backbone)
    return network_block(
        np.asarray(block, dtype=np.float32),
        n_features=n_features if user else trunk.feature_dim,
        batch_size=batch_size,
        n_threads=n_threads,
        load=load,
        forward=forward,
    )


class KerasFeatures(NetworkFeatures):
    """Pooled convolutional features from a Keras model: a ``keras.applications`` trunk or yours.

    Parameters
    ----------
    backbone : {"vgg19", "resnet50", "mobilenetv2"}, keras.Model or callable, default "vgg19"
        A ``keras.applications`` trunk (include_top=False), or **your model**: a
        ``keras.Model`` used with its own weights and sent to each worker once, or a callable
        returning one, built once per process (random weights as for ``weights=None``
        below). It takes ``(n, h, w, 3)`` float32 and returns
        ``(n, d)`` features or ``(n, h', w', c)`` maps (pooled by ``pool``); see
        "Your own model" in :mod:`dasktrain.features` for the whole contract.
    weights : None, "imagenet" or path, default None
        None: seeded random weights (Glorot-uniform kernels drawn from
        ``numpy.random.default_rng(seed)``: the same in every process); an instance keeps its
        own. A path: a Keras weights file (``.weights.h5`` / ``.keras``; include_top=False for
        a built-in trunk) loaded into every model built. ``"imagenet"``: a built-in trunk's,
        only from the local Keras cache; never downloaded.
    pool : {"avg", "max"}, default "avg"
    batch_size : int, default 64
    normalize : {"auto", "imagenet", "none"} or (mean, std), default "auto"
        For a built-in trunk, ``"imagenet"`` is its ``preprocess_input`` on ``255 * X``; for
        your model it is the ImageNet channel mean and std on [0, 1] values. ``"auto"``
        applies it with ``weights="imagenet"`` only. ``(mean, std)``: your model's own
        per-channel statistics on [0, 1] values.
    input_size : int or (int, int), optional
        The image size the model takes; other sizes are refused. None: any size.
    engine : {"auto", "local", "dask"}, default "auto"
    seed : int, default 0
    n_threads : int, optional
        TensorFlow intra-op threads for the local engine (default: CPU count). TensorFlow
        fixes its thread pool once per process, at the first model built; workers use their
        own thread count.
    progress : bool, default False

    See Also
    --------
    CNNFeatures : the same with PyTorch (torchvision-compatible weights).
    """

    def __init__(
        self,
        backbone: str | KerasModel | Callable[[], KerasModel] = "vgg19",
        *,
        weights: str | os.PathLike[str] | None = None,
        pool: str = "avg",
        batch_size: int = 64,
        normalize: str | tuple[ArrayLike, ArrayLike] = "auto",
        input_size: int | tuple[int, int] | None = None,
        engine: str = "auto",
        seed: int = 0,
        n_threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.pool = pool
        self.batch_size = batch_size
        self.normalize = normalize
        self.input_size = input_size
        self.engine = engine
        self.seed = seed
        self.n_threads = n_threads
        self.progress = progress

    # TensorFlow runs each batch on its own intra-op threads (set when the model is built).
    _threaded_local = False
    _framework = "keras"
    _weights_file = "a Keras weights file (.weights.h5)"
    _block_fn = staticmethod(keras_block)

    def _require_framework(self):
        _keras()

    def _check_backbone(self):
        get_keras_backbone(self.backbone)

    def _min_size(self):
        return _MIN_SIZE

    def _imagenet_path(self):
        return keras_imagenet_path(self.backbone)

    def _check_weights_file(self, path):
        # ``path`` is in the spec (with its stamp). Load once here so a mismatched file fails
        # before any task runs (cached: a valid file is built once per process, and reused by
        # the local engine).
        spec, threads = self._spec(), check_n_threads(self.n_threads)
        if isinstance(self.backbone, str):
            get_or_build(spec, lambda: build_keras_model(spec, threads))
        else:
            get_or_build(spec, lambda: build_user_keras(spec, self.backbone, threads))

    def _check_user_model(self):
        keras = _keras()
        if not isinstance(self.backbone, keras.Model) and not callable(self.backbone):
            raise ValidationError(
                f"backbone={self.backbone!r} is not a Keras backbone name, a keras.Model or a "
                f"callable that builds one; use one of {', '.join(map(repr, KERAS_BACKBONES))}"
                " or pass your model."
            )

    def _is_instance(self):
        return isinstance(self.backbone, _keras().Model)

    def _probe(self, height, width):
        """One forward pass of a zero image in this process (the model built here if needed)."""
        instance = self._is_instance()
        out = keras_block(
            np.zeros((1, height, width, 3), np.float32),
            self.backbone if instance else None,
            spec=self._spec(),
            batch_size=1,
            normalize=False,
            build=None if instance else self.backbone,
            pool=self.pool,
            n_threads=check_n_threads(self.n_threads),
        )
        return int(out.shape[1])

    def _named_n_features(self, shape):
        return get_keras_backbone(self.backbone).feature_dim

    def _spec_fields(self):
        return {"pool": self.pool}

    def _extra_block_kwargs(self):
        return {"pool": self.pool}
