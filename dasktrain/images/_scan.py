"""scan_images: what a folder holds, read from the headers (and, if asked, the pixels)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import RemoteTimeoutError
from ._decode import decode_image, probe_all
from ._errors import reason
from ._listing import check_classes, select

if TYPE_CHECKING:
    from .._typing import ImageSource

__all__ = ["scan_images"]


def scan_images(
    path: ImageSource, *, classes: Sequence[str] | None = None, decode: bool = False
) -> dict[str, Any]:
    """Summarise a folder without decoding pixels: counts, unreadable files, sizes and modes.

    Parameters
    ----------
    path : str, os.PathLike, list of (path, label) pairs, or DataFrame
        As for :func:`read_images`.
    classes : list of str, optional
        As for :func:`read_images`.
    decode : bool
        Also decode every file (slower; finds truncated files whose header is fine).

    Returns
    -------
    dict
        ``counts`` ({class: readable images}), ``unreadable`` ([(path, reason)]), ``formats``,
        ``modes`` and ``sizes`` (Counters of ``format``, ``mode`` and ``(width, height)``).
    """
    paths, y, classes, unlisted = select(path, check_classes(classes))
    info, bad = probe_all(paths)
    if decode:
        # Headers can be fine while the pixels are not (a truncated download): decode all.
        header_bad = {p for p, _ in bad}
        for i, p in enumerate(paths):
            if p in header_bad:
                continue
            try:
                decode_image(p, (8, 8), "gray")
            except RemoteTimeoutError:
                raise  # a stalled store, not a bad file
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                bad.append((p, reason(exc)))
                info[i] = None
    ok = np.array([i is not None for i in info], dtype=bool)
    n = np.bincount(y[ok], minlength=len(classes)) if len(y) else np.zeros(len(classes), int)
    good = [i for i in info if i is not None]
    return {
        "root": os.fspath(path) if isinstance(path, (str, os.PathLike)) else None,
        "classes": classes,
        "counts": {c: int(k) for c, k in zip(classes, n)},
        "unreadable": unlisted + bad,
        "formats": Counter(f for f, _, _ in good),
        "modes": Counter(m for _, m, _ in good),
        "sizes": Counter(s for _, _, s in good),
    }
