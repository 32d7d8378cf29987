"""Chunked image feature extraction: torch CNN, Keras/TensorFlow and classical descriptors.

Every extractor is a scikit-learn transformer that runs on both engines: ``engine="local"``
(numpy in, numpy out, one process) and ``engine="dask"`` (chunk by chunk on the cluster, the
model built once per worker from :mod:`dasktrain._cache`). Features can be written to zarr with
:func:`save_features` and read back with :func:`load_features`, so a large extraction is done
once.

Names are loaded on first use, so ``import dasktrain.features._backbones`` stays cheap and
neither torch nor tensorflow is imported before a transformer needs it.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dasktrain.features' has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | {"cnn", "keras", "classic", "store"})
