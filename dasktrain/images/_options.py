"""The arguments of :func:`~dasktrain.images.read_images`, checked once for both engines.

Each check returns the value as the reading uses it, or raises a
:class:`~dasktrain.exceptions.ValidationError` that names the argument and a value that works;
:func:`check_options` gathers them into the frozen :class:`Options` of one call.
"""

from __future__ import annotations

import dataclasses
import numbers

from .. import _config
from .._threads import check_n_threads
from .._validation import check_engine, check_positive_int
from ..exceptions import ValidationError
from ._decode import COLORS

__all__ = ["Options", "check_options", "check_shuffle"]

ERRORS = ("raise", "skip")


def _check_size(size):
    """Return ``(height, width)`` from an int or a pair of positive ints."""
    given = size
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = size
        ok = all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in (h, w)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValidationError(
            f"size={given!r} must be a positive int or a (height, width) pair of positive ints, "
            "for example size=(128, 128)."
        )
    return int(h), int(w)


def _check_color(color):
    """``color`` if it is ``"gray"`` or ``"rgb"``."""
    if not isinstance(color, str) or color not in COLORS:
        raise ValidationError(
            f"color={color!r} is not supported; use one of {', '.join(map(repr, COLORS))}."
        )
    return color


def _check_chunk_size(chunk_size):
    """``chunk_size``, or the ``dasktrain.images.chunk-size`` setting when None."""
    if chunk_size is None:
        chunk_size = _config.get("images.chunk-size", 256)
    return check_positive_int(chunk_size, "chunk_size")


def check_shuffle(shuffle):
    """The seed of ``shuffle`` (None: keep the listing's order)."""
    if shuffle is False or shuffle is None:
        return None
    if shuffle is True:
        return 0
    if isinstance(shuffle, numbers.Integral) and shuffle >= 0:
        return int(shuffle)
    raise ValidationError(f"shuffle={shuffle!r} must be False, True or a seed (an integer >= 0).")


def _check_storage_options(storage_options):
    """``storage_options`` if it is None or a dict (of fsspec filesystem arguments)."""
    if storage_options is not None and not isinstance(storage_options, dict):
        raise ValidationError(
            f"storage_options={storage_options!r} must be a dict of fsspec filesystem "
            'arguments, for example {"anon": True} or {"endpoint_url": "http://127.0.0.1:9000"}.'
        )
    return storage_options


def _check_errors(errors):
    """``errors`` if it is ``"raise"`` or ``"skip"``."""
    if not isinstance(errors, str) or errors not in ERRORS:
        raise ValidationError(
            f"errors={errors!r} is not supported; use 'raise' (stop on the first unreadable "
            "files) or 'skip' (leave them out and list them in ImageSet.skipped)."
        )
    return errors


@dataclasses.dataclass(frozen=True)
class Options:
    """The checked arguments of one read_images call."""

    size: tuple
    color: str
    errors: str
    chunk_size: int
    engine: str
    storage_options: dict | None = None
    n_threads: int = 1


def check_options(*, size, color, errors, chunk_size, engine, storage_options, n_threads):
    """The :class:`Options` of one ``read_images`` call, each argument checked."""
    return Options(
        size=_check_size(size),
        color=_check_color(color),
        errors=_check_errors(errors),
        chunk_size=_check_chunk_size(chunk_size),
        engine=check_engine(engine, allowed=("local", "dask")),
        storage_options=_check_storage_options(storage_options),
        n_threads=check_n_threads(n_threads),
    )
