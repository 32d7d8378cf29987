"""dasktrain: train image models on Dask and compare a distributed run against a local run.

Importing ``dasktrain`` is light: the public names below are loaded on first use, and nothing
heavy (torch, tensorflow, dask-cuda) is imported until a feature needs it.
"""

from __future__ import annotations

import importlib

from . import _config  # noqa: F401  (registers the dask.config defaults)
from .exceptions import DasktrainError  # noqa: F401  (public, listed in __all__)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "connect": "dasktrain.cluster",
    "dashboard_link": "dasktrain.cluster",
    "read_images": "dasktrain.images",
    "ImageSet": "dasktrain.images",
    "CNNFeatures": "dasktrain.features",
    "KerasFeatures": "dasktrain.features",
    "HOGFeatures": "dasktrain.features",
    "HistogramFeatures": "dasktrain.features",
    "save_features": "dasktrain.features",
    "load_features": "dasktrain.features",
    "KMeans": "dasktrain.models",
    "XGBClassifier": "dasktrain.models",
    "XGBRegressor": "dasktrain.models",
    "LogisticRegression": "dasktrain.models",
    "GaussianNB": "dasktrain.models",
    "MLPClassifier": "dasktrain.models",
    "OnWorker": "dasktrain.models",
    "cross_validate": "dasktrain.models",
    # The comparison harness is a subpackage named `harness`, not `compare`: a submodule named
    # like the function would replace `dasktrain.compare` with the module once imported.
    "ResourceMonitor": "dasktrain.harness",
    "compare": "dasktrain.harness",
    "Results": "dasktrain.harness",
}
_SUBMODULES = {
    "cluster",
    "datasets",
    "ddp",
    "exceptions",
    "features",
    "harness",
    "images",
    "metrics",
    "models",
    "testing",
}

__all__ = sorted(set(_LAZY) | _SUBMODULES | {"DasktrainError", "__version__"})


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"dasktrain.{name}")
    else:
        raise AttributeError(f"module 'dasktrain' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
