"""Classical image descriptors: HOG (scikit-image) and per-channel intensity histograms (numpy).

No model and no deep learning: each chunk is computed from the pixels alone, so there is
nothing to cache per worker. Both run on either engine with identical results.
"""

from __future__ import annotations

import logging
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from .._threads import check_n_threads
from .._validation import check_bool, check_engine, check_positive_int
from ..exceptions import ValidationError
from ._base import BaseImageFeatures, check_finite_block

if TYPE_CHECKING:
    from .._typing import NDArray

logger = logging.getLogger(__name__)

__all__ = ["HOGFeatures", "HistogramFeatures"]

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


def _to_gray(block: NDArray) -> NDArray:
    # ITU-R 601 luma, the same weights skimage.color.rgb2gray uses.
    if block.shape[-1] == 1:
        return block[..., 0]
    if block.shape[-1] == 3:
        return block @ np.asarray([0.2125, 0.7154, 0.0721], dtype=np.float32)
    raise ValidationError(f"X has {block.shape[-1]} channels; pass 1 (gray) or 3 (RGB).")


def hog_block(
    block: NDArray,
    *,
    orientations: int,
    pixels_per_cell: tuple[int, int],
    cells_per_block: tuple[int, int],
    block_norm: str,
    gray: bool,
    n_threads: int | None = None,
) -> NDArray:
    """HOG descriptors of one numpy chunk ``(n, h, w, c)`` -> ``(n, d)`` float32."""
    from skimage.feature import hog

    block = np.asarray(block, dtype=np.float32)
    check_finite_block(block)
    if gray:
        block = _to_gray(block)[..., None]
    channel_axis = None if block.shape[-1] == 1 else -1
    # An empty chunk still needs the right width: run HOG on one blank image for it.
    images = block if len(block) else np.zeros((1,) + block.shape[1:], np.float32)
    rows = []
    for img in images:
        rows.append(
            hog(
                img[..., 0] if channel_axis is None else img,
                orientations=orientations,
                pixels_per_cell=pixels_per_cell,
                cells_per_block=cells_per_block,
                block_norm=block_norm,
                feature_vector=True,
                channel_axis=channel_axis,
            )
        )
    out = np.asarray(rows, dtype=np.float32)
    return out if len(block) else out[:0]


def histogram_block(
    block: NDArray, *, bins: int, value_range: tuple[float, float], n_threads: int | None = None
) -> NDArray:
    """Per-channel intensity histograms (fractions of pixels) of a chunk -> ``(n, c * bins)``."""
    block = np.asarray(block, dtype=np.float32)
    check_finite_block(block)
    n, h, w, c = block.shape
    lo, hi = value_range
    # Values outside the range are counted in the edge bins (clipped), never dropped.
    idx = np.clip(((block - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
    # One bincount for the whole chunk: offset each (image, channel) pair into its own bins.
    idx = idx.reshape(n, h * w, c) + (np.arange(n)[:, None, None] * c + np.arange(c)) * bins
    counts = np.bincount(idx.ravel(), minlength=n * c * bins).reshape(n, c * bins)
    return (counts / float(h * w)).astype(np.float32)


class HOGFeatures(BaseImageFeatures):
    """Histogram of Oriented Gradients (:func:`skimage.feature.hog`) for each image.

    Parameters
    ----------
    orientations : int, default 9
    pixels_per_cell : int or (int, int), default (8, 8)
    cells_per_block : int or (int, int), default (2, 2)
    block_norm : {"L1", "L1-sqrt", "L2", "L2-Hys"}, default "L2-Hys"
    gray : bool, default True
        Convert RGB to gray first (luma); False computes HOG over the colour channels.
    engine : {"auto", "local", "dask"}, default "auto"
        ``"auto"`` follows the input; see :class:`CNNFeatures`.
    n_threads : int, optional
        Local engine: how many chunks are computed at once, one thread each; default
        ``dasktrain._compat.cpu_count()``. On the dask engine each worker runs its own.
    progress : bool, default False
        tqdm bar (local) or ``distributed.progress`` (dask).

    See Also
    --------
    HistogramFeatures, CNNFeatures

    Examples
    --------
    >>> import numpy as np
    >>> from dasktrain.features import HOGFeatures
    >>> X = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    >>> HOGFeatures().fit_transform(X).shape
    (2, 324)
    """

    def __init__(
        self,
        *,
        orientations: int = 9,
        pixels_per_cell: int | tuple[int, int] = (8, 8),
        cells_per_block: int | tuple[int, int] = (2, 2),
        block_norm: str = "L2-Hys",
        gray: bool = True,
        engine: str = "auto",
        n_threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.gray = gray
        self.engine = engine
        self.n_threads = n_threads
        self.progress = progress

    @staticmethod
    def _pair(value: Any, name: str) -> tuple[int, int]:  # checks what the user gave
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = (value, value)
        try:
            a, b = (check_positive_int(v, name) for v in value)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"{name}={value!r} must be a positive int or a pair of positive ints."
            ) from exc
        return (a, b)

    def _validate(self) -> None:
        check_positive_int(self.orientations, "orientations")
        self._pair(self.pixels_per_cell, "pixels_per_cell")
        self._pair(self.cells_per_block, "cells_per_block")
        if self.block_norm not in BLOCK_NORMS:
            raise ValidationError(f"block_norm={self.block_norm!r} must be one of {BLOCK_NORMS!r}.")
        check_bool(self.gray, "gray")
        check_engine(self.engine)
        check_n_threads(self.n_threads)
        check_bool(self.progress, "progress")

    def _check_images(self, shape: tuple[int, ...]) -> None:
        n, h, w, c = shape
        ph, pw = self._pair(self.pixels_per_cell, "pixels_per_cell")
        bh, bw = self._pair(self.cells_per_block, "cells_per_block")
        if h < ph * bh or w < pw * bw:
            raise ValidationError(
                f"images of {h}x{w} pixels are too small for HOG with pixels_per_cell="
                f"{(ph, pw)!r} and cells_per_block={(bh, bw)!r}: they need at least "
                f"{ph * bh}x{pw * bw}. Use larger images or smaller cells."
            )
        if c not in (1, 3):
            raise ValidationError(f"X has {c} channels; pass 1 (gray) or 3 (RGB).")

    def _n_features(self, shape: tuple[int, ...]) -> int:
        n, h, w, c = shape
        ph, pw = self._pair(self.pixels_per_cell, "pixels_per_cell")
        bh, bw = self._pair(self.cells_per_block, "cells_per_block")
        # skimage.feature.hog's layout: (blocks_row, blocks_col, bh, bw, orientations).
        return ((h // ph) - bh + 1) * ((w // pw) - bw + 1) * bh * bw * int(self.orientations)

    def _block_kwargs(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return {
            "orientations": int(self.orientations),
            "pixels_per_cell": self._pair(self.pixels_per_cell, "pixels_per_cell"),
            "cells_per_block": self._pair(self.cells_per_block, "cells_per_block"),
            "block_norm": self.block_norm,
            "gray": bool(self.gray),
        }

    _block_fn = staticmethod(hog_block)


class HistogramFeatures(BaseImageFeatures):
    """Per-channel intensity histograms: the fraction of pixels in each of ``bins`` bins.

    Parameters
    ----------
    bins : int, default 32
    value_range : (float, float), default (0.0, 1.0)
        Range split into ``bins`` equal bins; values outside it count in the edge bins.
    engine : {"auto", "local", "dask"}, default "auto"
    n_threads : int, optional
        Local engine: how many chunks are computed at once, one thread each; default
        ``dasktrain._compat.cpu_count()``. On the dask engine each worker runs its own.
    progress : bool, default False

    Returns ``channels * bins`` features per image (channel-major).

    See Also
    --------
    HOGFeatures, CNNFeatures

    Examples
    --------
    >>> import numpy as np
    >>> from dasktrain.features import HistogramFeatures
    >>> X = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    >>> HistogramFeatures(bins=8).fit_transform(X).shape
    (2, 24)
    """

    _local_step = 1024

    def __init__(
        self,
        bins: int = 32,
        *,
        value_range: tuple[float, float] = (0.0, 1.0),
        engine: str = "auto",
        n_threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.bins = bins
        self.value_range = value_range
        self.engine = engine
        self.n_threads = n_threads
        self.progress = progress

    def _range(self) -> tuple[float, float]:
        try:
            lo, hi = (float(v) for v in self.value_range)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"value_range={self.value_range!r} must be a pair of numbers (low, high)."
            ) from exc
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValidationError(f"value_range={self.value_range!r} needs finite low < high.")
        return (lo, hi)

    def _validate(self) -> None:
        check_positive_int(self.bins, "bins")
        self._range()
        check_engine(self.engine)
        check_n_threads(self.n_threads)
        check_bool(self.progress, "progress")

    def _n_features(self, shape: tuple[int, ...]) -> int:
        return shape[-1] * int(self.bins)

    def _block_kwargs(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"bins": int(self.bins), "value_range": self._range()}

    _block_fn = staticmethod(histogram_block)
