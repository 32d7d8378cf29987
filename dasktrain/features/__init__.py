"""Chunked image feature extraction: torch CNN, Keras/TensorFlow and classical descriptors.

Every extractor is a scikit-learn transformer that runs on both engines: ``engine="local"``
(numpy in, numpy out, one process) and ``engine="dask"`` (chunk by chunk on the cluster, the
model built once per worker from a per-process cache). Features can be written to zarr with
:func:`save_features` and read back with :func:`load_features`, so a large extraction is done
once.

Your own model
--------------

:class:`CNNFeatures` and :class:`KerasFeatures` take a network of yours: ``backbone=`` takes,
besides a registry name, either

* **a model instance** (a ``torch.nn.Module`` or a ``keras.Model``): used as it is, with its own
  weights. On the dask engine it enters the task graph **once** (one key every block depends
  on; each worker fetches it once), never once per block (dask-ml #842); or
* **a callable that builds one** (a class, a function, ``functools.partial(torchvision.models.
  resnet50)``): only the callable travels (pickled by reference, or by value for a lambda), and
  each process builds the model once, through a per-process cache, with random initial
  weights drawn from the extractor's ``seed``, the same in every process (torch: the builder
  runs under ``torch.manual_seed(seed)``; Keras: every kernel is redrawn Glorot-uniform from
  ``numpy.random.default_rng(seed)``, because Keras seeds from Python's global ``random``,
  which a Dask worker's other threads share); ``weights=`` then names a file loaded into
  every built model.

The contract, the same for both frameworks:

* **input**: a batch of RGB images, floats, normalised with ``normalize`` (``"none"``: values
  in [0, 1]; ``"imagenet"``: ImageNet channel mean and std; ``(mean, std)``: your own per-channel
  statistics on [0, 1] values), of ``input_size`` pixels when it is declared (images of another
  size are refused: resize them with ``read_images(size=...)``). torch gets ``(n, c, h, w)``
  with ``c`` the channels of your module's first ``Conv2d`` (or ``in_channels=``; 3 when it has
  none), Keras ``(n, h, w, 3)``. Gray images are repeated to the channels the model takes; a
  gray network (``nn.Conv2d(1, ...)``) gets them as they are. Other channel counts are refused
  before any work.
* **output**: ``(n, d)`` features, used as they are, or feature maps (torch ``(n, c, h', w')``,
  Keras ``(n, h', w', c)``) pooled by ``pool`` (``"flatten"`` is torch only).
* **mode**: inference only (torch ``eval()`` + ``inference_mode``, Keras ``training=False``).

Names are loaded on first use, so ``import dasktrain.features._backbones`` stays cheap and
neither torch nor tensorflow is imported before a transformer needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

# ``X as X``: the backbone registry for the other rooms of dasktrain (ddp's recipes build their
# CNN from it), not in __all__. Cheap: torch is imported on the first build.
from ._backbones import BACKBONES as BACKBONES
from ._backbones import build as build_backbone  # noqa: F401  (for ddp.recipes)
from ._backbones import get_backbone as get_backbone

__all__ = [
    "CNNFeatures",
    "KerasFeatures",
    "HOGFeatures",
    "HistogramFeatures",
    "save_features",
    "load_features",
]

_LAZY = {
    "CNNFeatures": "dasktrain.features.cnn",
    "KerasFeatures": "dasktrain.features.keras",
    "HOGFeatures": "dasktrain.features.classic",
    "HistogramFeatures": "dasktrain.features.classic",
    "save_features": "dasktrain.features.store",
    "load_features": "dasktrain.features.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dasktrain.features' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"cnn", "keras", "classic", "store"})
