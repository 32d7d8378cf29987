"""Per-process model cache: build a model once per worker, reuse it for every chunk.

Task graphs carry only a small hashable *spec* (backbone name, weights path, device...), never a
model object (dask-ml #842: a model in the graph grows scheduler memory by npartitions x model
size). Each worker process builds the model the first time it sees a spec, and this module,
being importable, keeps it for the next chunks.
"""

from __future__ import annotations

import threading
from collections import Counter

_LOCK = threading.Lock()
_MODELS: dict = {}
_BUILDS: Counter = Counter()


def get_or_build(spec, builder):
    """Return the object cached under ``spec``, calling ``builder()`` the first time.

    Parameters
    ----------
    spec : hashable
        Small description of the object (a tuple of strings and numbers).
    builder : callable
        Zero-argument function that builds the object.
    """
    with _LOCK:
        try:
            return _MODELS[spec]
        except KeyError:
            pass
        obj = builder()
        _MODELS[spec] = obj
        _BUILDS[spec] += 1
        return obj


def build_count(spec=None):
    """How many times ``spec`` (or any spec, when None) was built in this process."""
    with _LOCK:
        return sum(_BUILDS.values()) if spec is None else _BUILDS[spec]


def clear():
    """Drop every cached object (and the build counts) in this process."""
    with _LOCK:
        _MODELS.clear()
        _BUILDS.clear()
