"""Opening and decoding files: the one decode function both engines use.

Only regular files are opened (a named pipe called ``x.png`` would block forever); headers are
checked without decoding pixels (a remote file's from its first bytes, see ``_remote``);
decoding resizes, converts and scales by the real bit depth. A remote store that stalls is no
unreadable file: its :class:`~dasktrain.exceptions.RemoteTimeoutError` is raised, never
skipped (with ``errors="skip"`` every file would wait out its time limit).
"""

from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING

import numpy as np

from .._threads import local_pool
from ..exceptions import RemoteTimeoutError
from ._errors import read_error, reason
from ._remote import HEADER_BYTES, is_remote, open_remote, remote_head, remote_stamp

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._typing import NDArray, PathLike, StorageOptions

__all__ = [
    "COLORS",
    "probe_image",
    "probe_all",
    "decode_image",
    "decode_bytes",
    "decode_many",
    "read_block",
    "check_block",
    "mtime",
]

#: Number of channels of each ``color``.
COLORS = {"gray": 1, "rgb": 3}
# Modes whose samples are 16-bit. Pillow opens 16-bit grayscale PNG and TIFF as "I;16"/"I;16B";
# mode "I" (32-bit signed) is what older Pillow gave for 16-bit PNG, so it is read as 16-bit too
# (values above 65535 are clipped).
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Bicubic resampling: Pillow widens the filter support by the scale factor when shrinking, so
# the resize is antialiased.
_RESAMPLE = 3  # PIL.Image.Resampling.BICUBIC (a literal keeps PIL out of import time)

_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _not_regular(path, mode):
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return OSError(
        f"{path} is {kind}, not a regular file; only regular files are read as images (opening "
        "it could block forever). Move it out of the image folder."
    )


def _open(path, storage_options=None):
    """A binary file object: a remote file read whole (fsspec), or a local regular file."""
    if is_remote(path):
        return open_remote(path, storage_options)
    return _open_regular(path)


def _open_regular(path):
    """Open ``path`` for reading as a binary file object, refusing anything but a regular file.

    A named pipe called ``x.png`` blocks ``open()`` until a writer appears, and a device file
    never ends: both are refused before (stat) and after (fstat, no race) the non-blocking open.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        raw = io.FileIO(fd, "rb")
        raw.name = os.fspath(path)  # Pillow's messages name the file, not the descriptor
        return io.BufferedReader(raw)
    except BaseException:
        os.close(fd)
        raise


def probe_image(
    path: PathLike, storage_options: StorageOptions | None = None
) -> tuple[str, str, tuple[int, int]]:
    """Return ``(format, mode, (width, height))`` from the file header, without decoding pixels.

    Raises
    ------
    OSError
        When the file is missing, is not a regular file (a named pipe, socket or device), or
        is not an image Pillow can read (``UnidentifiedImageError``).
    """
    if is_remote(path):
        return _probe_remote(path, storage_options)
    with _open_regular(path) as f:
        return _header(f)


def _header(f):
    from PIL import Image

    with Image.open(f) as im:
        return im.format, im.mode, im.size


def _probe_remote(path, storage_options):
    """The header of a remote file from its first bytes (one ranged read); read whole only
    when those bytes begin like an image whose header lies further (a JPEG with large
    metadata before its frame header). A non-image is refused from its first bytes."""
    head = remote_head(path, storage_options)
    try:
        buf = io.BytesIO(head)
        buf.name = path
        return _header(buf)
    except Exception:
        if len(head) < HEADER_BYTES or not _may_be_an_image(head):
            raise
    return _header(open_remote(path, storage_options))


def _may_be_an_image(head):
    """True when a format Pillow knows claims the first bytes (its magic number)."""
    from PIL import Image

    Image.init()
    prefix = head[:16]  # what Image.open shows each format's accept()
    for _, accept in Image.OPEN.values():
        try:
            if accept is not None and accept(prefix):
                return True
        except Exception:  # noqa: BLE001, S112 - a plugin that cannot judge the bytes
            continue
    return False


def probe_all(
    paths: Iterable[str], storage_options: StorageOptions | None = None
) -> tuple[list[tuple[str, str, tuple[int, int]] | None], list[tuple[str, str]]]:
    """Header-check every path: return ``(info, bad)`` with info[i] None for bad files."""
    info: list[tuple[str, str, tuple[int, int]] | None] = []
    bad: list[tuple[str, str]] = []
    for p in paths:
        try:
            info.append(probe_image(p, storage_options))
        except RemoteTimeoutError:
            raise  # a stalled store, not a bad file
        except Exception as exc:  # noqa: BLE001 - any failure makes the file unreadable
            info.append(None)
            bad.append((p, reason(exc)))
    return info, bad


def decode_image(
    path: PathLike,
    size: int | tuple[int, int] = (128, 128),
    color: str = "gray",
    storage_options: StorageOptions | None = None,
) -> NDArray:
    """Decode one image file into a float32 array of shape ``(height, width, channels)``.

    The one decode function both engines use, so their arrays are identical bit for bit.

    Steps: open; for JPEG, ask the decoder for a reduced scale that is still at least the
    target size (``Image.draft``: DCT scaling, much faster for large JPEGs); apply the EXIF
    orientation (``ImageOps.exif_transpose``); convert to ``color`` (alpha is dropped, palettes
    expanded); resize with bicubic antialiasing to ``size``; scale by the file's real bit depth
    (8-bit by 255, 16-bit by 65535) into [0, 1]. Mode ``"I"`` (32-bit integer, what older
    Pillow gave for 16-bit PNG) is read as 16-bit and clipped. Mode ``"F"`` (float TIFF) must
    already be in [0, 1]: NaN, inf or values outside [0, 1] raise ``ValueError`` (never
    clipped or rescaled silently); only the resize's bicubic overshoot is clipped. 16-bit data
    is resampled in float, so no precision is lost to 8 bits. Only regular files are opened.

    Parameters
    ----------
    path : str
        A local path, or a URL read through fsspec (``s3://``, ``gs://``, ``https://``...).
    size : (int, int)
        ``(height, width)`` of the output.
    color : {"gray", "rgb"}
    storage_options : dict, optional
        For a URL: keyword arguments of its fsspec filesystem (credentials, endpoint).

    Returns
    -------
    numpy.ndarray of float32, shape (height, width, 1 or 3), values in [0, 1]

    Raises
    ------
    OSError
        Missing, unreadable or not a regular file (a named pipe, socket or device), or not an
        image.
    ValueError
        A float image with NaN/inf or values outside [0, 1].
    """
    with _open(path, storage_options) as f:
        return _decode_open(f, size, color)


def decode_bytes(data, size=(128, 128), color="gray") -> np.ndarray:
    """:func:`decode_image` of a file's content already in memory (Spark's ``binaryFile``).

    The same steps as :func:`decode_image`, so the arrays are identical bit for bit.
    """
    return _decode_open(io.BytesIO(data), size, color)


def _decode_open(f, size, color):
    from PIL import Image, ImageOps

    h, w = size
    with Image.open(f) as im:
        if im.format == "JPEG":
            # Draft for the larger side so an EXIF rotation of 90 degrees still leaves enough
            # pixels in both directions; the final resize then only shrinks.
            side = max(h, w)
            im.draft("L" if color == "gray" else "RGB", (side, side))
        im = ImageOps.exif_transpose(im)
    return _to_array(im, h, w, color)


def _to_array(im, h, w, color):
    mode = im.mode
    if mode == "F":
        _check_float_pixels(np.asarray(im, dtype=np.float32))
    if mode in _HIGH_DEPTH_MODES or mode == "F":
        # Resample in float so no precision is lost to 8 bits; scale by the real depth.
        scale = np.float32(65535.0 if mode != "F" else 1.0)
        im = im.convert("F")
        if im.size != (w, h):
            im = im.resize((w, h), _RESAMPLE)
        a = np.asarray(im, dtype=np.float32) / scale
        np.clip(a, 0.0, 1.0, out=a)  # bicubic overshoot and mode "I" values above 16 bits
        a = a[:, :, None]
        return np.repeat(a, 3, axis=2) if color == "rgb" else a
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("1", "LA", "PA", "La"):
        im = im.convert("L")
    target = "L" if color == "gray" else "RGB"
    if im.mode != target:
        im = im.convert(target)  # RGBA -> RGB/L drops alpha, like Keras' load_img
    if im.size != (w, h):
        im = im.resize((w, h), _RESAMPLE)
    a = np.asarray(im, dtype=np.float32) / np.float32(255.0)
    return a[:, :, None] if a.ndim == 2 else a


def _check_float_pixels(a):
    """Float images must already be in [0, 1]: NaN/inf or other ranges are refused, not clipped.

    Clipping a 0-255 float image to [0, 1] turned 99.6% of its pixels white; dividing by a
    guessed maximum would be a silent guess too. The file is named by the caller's error.
    """
    finite = np.isfinite(a)
    if not finite.all():
        raise ValueError(
            f"float image holds {int((~finite).sum())} NaN or infinite pixel(s); fix the file "
            "or pass errors='skip' to leave it out"
        )
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float image has values in [{lo:g}, {hi:g}], outside [0, 1]; dasktrain reads "
            "float images as already normalised. Rescale the file to [0, 1] (e.g. divide a "
            "0-255 image by 255) or save it as 8/16-bit integers"
        )


def decode_many(paths, size, color, storage_options=None, n_threads=1):
    """Decode files into one array; return ``(X, failures)`` with failed rows left as zeros.

    With ``n_threads`` > 1 (the local engine), runs of files are decoded side by side on the
    local engine's pool: Pillow releases the GIL while it decodes and resizes. ``failures``
    are ``(row, path, reason)`` in row order either way.
    """
    h, w = size
    out = np.zeros((len(paths), h, w, COLORS[color]), dtype=np.float32)

    def run(rows):
        failures = []
        for i in rows:
            try:
                out[i] = decode_image(paths[i], size, color, storage_options)
            except RemoteTimeoutError:
                raise  # a stalled store, not a bad file
            except Exception as exc:  # noqa: BLE001 - reported with the file name below
                failures.append((i, paths[i], reason(exc)))
        return failures

    if n_threads <= 1 or len(paths) < 2:
        return out, run(range(len(paths)))
    # A few runs per thread, so one slow run (large files) does not leave the others idle.
    step = max(1, -(-len(paths) // (4 * n_threads)))
    runs = [range(s, min(s + step, len(paths))) for s in range(0, len(paths), step)]
    parts = local_pool(n_threads).map(run, runs)
    return out, [f for part in parts for f in part]


def read_block(paths, size, color, storage_options=None):
    """Dask task: decode one chunk of files; raise ImageReadError naming the failures."""
    X, failures = decode_many(list(paths), size, color, storage_options)
    if failures:
        raise read_error([(p, r) for _, p, r in failures], when="decoded")
    return X


def check_block(paths, size, color, storage_options=None):
    """Dask task for ``errors="skip"``: decode and return only the ``(path, reason)`` failures."""
    _, failures = decode_many(list(paths), size, color, storage_options)
    return [(p, r) for _, p, r in failures]


def mtime(p, storage_options=None):
    """Modification time (ns) of ``p`` (a remote file's version), None when it cannot be read."""
    if is_remote(p):
        return remote_stamp(p, storage_options)
    try:
        return os.stat(p).st_mtime_ns
    except OSError:
        return None
