"""Image folders as arrays: list, check, decode, resize and normalise, on either engine.

:func:`read_images` turns a class-per-directory folder (``chest_xray/train/NORMAL/x.jpeg``: the
class is the image's parent folder name, at any depth), an explicit list of ``(path, label)``
pairs, or a DataFrame with ``path`` and ``label`` columns into an :class:`ImageSet`.

Both engines call the same :func:`decode_image`, so ``engine="local"`` and ``engine="dask"``
give identical arrays, bit for bit.

The errors policy, decided once for both engines:

* **Listing** ignores files whose extension is not an image and hidden files or folders
  (names starting with ``"."``). A folder that cannot be listed (permissions) is an unreadable
  input like a file: ``errors="raise"`` raises :class:`ImageReadError` naming it,
  ``errors="skip"`` reports it in :attr:`ImageSet.skipped`; it never vanishes silently. A
  folder reached twice through a symbolic link (a class folder linked to a sibling class)
  raises :class:`DatasetLayoutError`: its images would get two labels. A link back up the tree
  is not followed.
* **Only regular files** are opened: a named pipe, socket or device file with an image name
  (which would block the read forever) is an unreadable file, found by the header check.
* **Header check.** Every listed file is opened with :func:`PIL.Image.open`, which parses the
  header only (tens of microseconds, no pixel data is decoded). Files that are not images at all
  (a text file named ``.png``, an empty file, an unsupported format) are found here, on the
  driver, before anything is computed: ``errors="raise"`` raises one :class:`ImageReadError`
  naming all of them, even for the lazy dask engine; ``errors="skip"`` leaves them out.
* **Decode failures** of files whose header is fine (a truncated download) are found when the
  pixels are decoded. ``engine="local"`` decodes at once, so it raises or skips right away.
  ``engine="dask"`` with ``errors="raise"`` stays lazy and raises :class:`ImageReadError` at
  compute time, naming the file(s). ``engine="dask"`` with ``errors="skip"`` must know the
  number of images to keep chunk sizes known, so it first decodes every file once on the
  cluster (in parallel, results discarded) to find the bad ones: that costs one extra read
  and is said here and logged. Use ``errors="raise"`` for a set where nothing is read until
  computed.
* **Float images** (mode ``"F"`` TIFFs) must already be in [0, 1]: NaN, inf or values outside
  [0, 1] make the file unreadable (raised, or skipped with ``errors="skip"``, the reason
  naming the range) instead of being clipped silently.
* Every skipped file is listed in :attr:`ImageSet.skipped` with its reason and counted in one
  :class:`~dasktrain.exceptions.SkippedFilesWarning`.
"""

from __future__ import annotations

import io
import logging
import numbers
import os
import stat
import warnings
from collections import Counter

import numpy as np

from ._validation import check_engine, check_positive_int, is_dask_collection
from .exceptions import (
    DatasetLayoutError,
    ImageReadError,
    InsufficientMemoryError,
    SkippedFilesWarning,
    ValidationError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "read_images",
    "ImageSet",
    "decode_image",
    "list_images",
    "scan_images",
    "IMAGE_EXTENSIONS",
]

#: File extensions (lower case) that are read as images; everything else is ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff"})
#: Number of channels of each ``color``.
COLORS = {"gray": 1, "rgb": 3}
ERRORS = ("raise", "skip")
# Modes whose samples are 16-bit. Pillow opens 16-bit grayscale PNG and TIFF as "I;16"/"I;16B";
# mode "I" (32-bit signed) is what older Pillow gave for 16-bit PNG, so it is read as 16-bit too
# (values above 65535 are clipped).
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Bicubic resampling: Pillow widens the filter support by the scale factor when shrinking, so
# the resize is antialiased.
_RESAMPLE = 3  # PIL.Image.Resampling.BICUBIC (a literal keeps PIL out of import time)
_MAX_NAMED = 10  # files named in one error message


# --------------------------------------------------------------------------- validation


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
    if not isinstance(color, str) or color not in COLORS:
        raise ValidationError(
            f"color={color!r} is not supported; use one of {', '.join(map(repr, COLORS))}."
        )
    return color


def _check_errors(errors):
    if not isinstance(errors, str) or errors not in ERRORS:
        raise ValidationError(
            f"errors={errors!r} is not supported; use 'raise' (stop on the first unreadable "
            "files) or 'skip' (leave them out and list them in ImageSet.skipped)."
        )
    return errors


def _check_classes(classes):
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ValidationError(
            f"classes={classes!r} must be a list of class names (strings), "
            "for example classes=['NORMAL', 'PNEUMONIA']."
        )
    classes = list(classes)
    dup = sorted(c for c, k in Counter(classes).items() if k > 1)
    if dup:
        raise ValidationError(f"classes={classes!r} names {dup!r} more than once.")
    return classes


# --------------------------------------------------------------------------- listing


def _is_image_name(name):
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(path):
    """List the image files under a class-per-directory folder.

    Parameters
    ----------
    path : str or os.PathLike
        Root folder. Each image's class is the name of its parent folder, at any depth, so
        ``root/train/NORMAL/a.png`` and ``root/test/NORMAL/b.png`` are both ``"NORMAL"``.

    Returns
    -------
    paths : list of str
        Absolute paths in a deterministic (sorted) order.
    labels : list of str
        The class name of each path.

    Raises
    ------
    DatasetLayoutError
        When ``path`` is not a folder, holds no image files, holds images directly in the
        root (they have no class folder), or reaches one folder under two names (a class
        folder that is a link to another one: its images would get two labels).
    ImageReadError
        When a folder cannot be listed (permissions): its images would vanish silently.
        :func:`read_images` with ``errors="skip"`` leaves such folders out and reports them.
    """
    paths, labels, unlisted = _walk(path)
    if unlisted:
        raise _unlisted_error(unlisted)
    return paths, labels


def _unlisted_error(unlisted):
    shown = "\n  ".join(f"{p}: {r}" for p, r in unlisted[:_MAX_NAMED])
    return ImageReadError(
        f"{len(unlisted)} folder(s) could not be listed, so their images would be missing:\n"
        f"  {shown}\nFix the permissions, or pass errors='skip' to leave them out (they are "
        "then listed in ImageSet.skipped)."
    )


def _inside(child, parent):
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _walk(path):
    """``(paths, labels, unlisted)``: the images under ``path`` and the folders that could not
    be listed, as ``(folder, reason)``; raises DatasetLayoutError for the layout problems."""
    root = os.path.abspath(os.fspath(path))
    if not os.path.isdir(root):
        raise DatasetLayoutError(
            f"path={os.fspath(path)!r} is not a folder; pass a folder with one sub-folder per "
            "class, a list of (path, label) pairs, or a DataFrame with 'path' and 'label' columns."
        )
    paths, labels, loose, unlisted = [], [], [], []
    seen = {}  # resolved folder -> the first path it was reached by

    def onerror(exc):
        # os.walk skips a folder it cannot list unless told: its images would just vanish.
        unlisted.append((exc.filename or root, _reason(exc)))

    # followlinks: a class folder that is a symlink (a common way to assemble a data set) must
    # not vanish silently.
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            if _inside(os.path.realpath(os.path.dirname(dirpath)), real):
                # A link back up the tree (to an ancestor of itself): a loop, not data.
                logger.debug("not following %s: it links back to %s", dirpath, seen[real])
                continue
            raise DatasetLayoutError(
                f"{seen[real]!r} and {dirpath!r} are the same folder ({real!r}, reached through "
                "a symbolic link): its images would be read twice, under two class names. "
                "Remove the link, or pass an explicit list of (path, label) pairs."
            )
        seen[real] = dirpath
        # Hidden folders (.git, .ipynb_checkpoints) never hold data; sort for a stable order.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in filenames if _is_image_name(f))
        if dirpath == root:
            loose.extend(names)
            continue
        label = os.path.basename(dirpath)
        for name in names:
            paths.append(os.path.join(dirpath, name))
            labels.append(label)
    if not paths and not loose and not unlisted:
        raise DatasetLayoutError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) were found under "
            f"{root!r}. Check the path; hidden files and other extensions are ignored."
        )
    if loose:
        shown = ", ".join(loose[:_MAX_NAMED]) + (" ..." if len(loose) > _MAX_NAMED else "")
        what = "no class sub-folders: " if not paths else ""
        raise DatasetLayoutError(
            f"{what}{len(loose)} image(s) lie directly in {root!r} ({shown}) without a class "
            "folder. Put each image in a sub-folder named after its class (root/NORMAL/x.png, "
            "root/PNEUMONIA/y.png), or pass a list of (path, label) pairs."
        )
    return paths, labels, unlisted


def _pairs_from_input(path):
    """Return ``(paths, labels, unlisted)`` from a folder, a list of pairs, or a DataFrame."""
    if isinstance(path, (str, os.PathLike)):
        return _walk(path)
    columns = getattr(path, "columns", None)
    if columns is not None:
        missing = {"path", "label"} - set(columns)
        if missing:
            raise ValidationError(
                f"the DataFrame has columns {list(columns)!r} but needs 'path' and 'label' "
                f"(missing: {sorted(missing)!r}); rename them with df.rename(columns=...)."
            )
        frame = path[["path", "label"]]
        if is_dask_collection(frame):
            # The listing is small (two columns of names): bring it to the driver so the number
            # of images, and so the chunk sizes, are known.
            frame = frame.compute()
        pairs = list(zip(frame["path"].tolist(), frame["label"].tolist()))
    else:
        try:
            pairs = [tuple(p) for p in path]
        except TypeError:
            pairs = None
        if pairs is None or any(len(p) != 2 for p in pairs):
            raise ValidationError(
                f"path={path!r} must be a folder, a list of (path, label) pairs, or a pandas/dask "
                "DataFrame with 'path' and 'label' columns."
            )
    if not pairs:
        raise DatasetLayoutError(
            "the list of (path, label) pairs is empty; there is nothing to read."
        )
    paths = [os.path.abspath(os.fspath(p)) for p, _ in pairs]
    return paths, [lab for _, lab in pairs], []


def _encode_labels(labels, classes):
    """Map labels to class indices; return ``(keep_mask, y, class_names)``."""
    names = [str(lab) for lab in labels]
    if classes is None:
        # Sort by the labels' own order (so integer labels 2 < 10), then name them as strings.
        try:
            uniq = sorted(set(labels))
        except TypeError:
            uniq = sorted(set(names))
        classes = list(dict.fromkeys(str(u) for u in uniq))
    else:
        found = set(names)
        unknown = [c for c in classes if c not in found]
        if unknown:
            raise DatasetLayoutError(
                f"classes={classes!r}: {unknown!r} not found among the classes present "
                f"{sorted(found)!r}. Check the spelling (class names are folder names)."
            )
    if len(classes) < 2:
        raise DatasetLayoutError(
            f"only one class was found ({classes!r}); a classifier needs at least two. Put the "
            "images of each class in their own folder (root/NORMAL, root/PNEUMONIA)."
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    return y >= 0, y, classes


# --------------------------------------------------------------------------- probing and decoding


def _reason(exc):
    return f"{type(exc).__name__}: {exc}"


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


def probe_image(path):
    """Return ``(format, mode, (width, height))`` from the file header, without decoding pixels.

    Raises
    ------
    OSError
        When the file is missing, is not a regular file (a named pipe, socket or device), or
        is not an image Pillow can read (``UnidentifiedImageError``).
    """
    from PIL import Image

    with _open_regular(path) as f, Image.open(f) as im:
        return im.format, im.mode, im.size


def _probe_all(paths):
    """Header-check every path: return ``(info, bad)`` with info[i] None for bad files."""
    info, bad = [], []
    for p in paths:
        try:
            info.append(probe_image(p))
        except Exception as exc:  # noqa: BLE001 - any failure makes the file unreadable
            info.append(None)
            bad.append((p, _reason(exc)))
    return info, bad


def decode_image(path, size=(128, 128), color="gray"):
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
    size : (int, int)
        ``(height, width)`` of the output.
    color : {"gray", "rgb"}

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
    from PIL import Image, ImageOps

    h, w = size
    with _open_regular(path) as f, Image.open(f) as im:
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


def _decode_many(paths, size, color):
    """Decode files into one array; return ``(X, failures)`` with failed rows left as zeros."""
    h, w = size
    out = np.zeros((len(paths), h, w, COLORS[color]), dtype=np.float32)
    failures = []
    for i, p in enumerate(paths):
        try:
            out[i] = decode_image(p, size, color)
        except Exception as exc:  # noqa: BLE001 - reported with the file name below
            failures.append((i, p, _reason(exc)))
    return out, failures


def _read_error(bad, *, when):
    shown = "\n  ".join(f"{p}: {r}" for p, r in bad[:_MAX_NAMED])
    more = f"\n  ... and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    return ImageReadError(
        f"{len(bad)} file(s) could not be {when}:\n  {shown}{more}\n"
        "Fix or remove them, or pass errors='skip' to leave them out "
        "(they are then listed in ImageSet.skipped)."
    )


def _read_block(paths, size, color):
    """Dask task: decode one chunk of files; raise ImageReadError naming the failures."""
    X, failures = _decode_many(list(paths), size, color)
    if failures:
        raise _read_error([(p, r) for _, p, r in failures], when="decoded")
    return X


def _check_block(paths, size, color):
    """Dask task for ``errors="skip"``: decode and return only the ``(path, reason)`` failures."""
    _, failures = _decode_many(list(paths), size, color)
    return [(p, r) for _, p, r in failures]


def _warn_skipped(skipped):
    if skipped:
        reasons = Counter(r.split(":", 1)[0] for _, r in skipped)
        warnings.warn(
            SkippedFilesWarning(
                f"{len(skipped)} unreadable file(s) were left out "
                f"({', '.join(f'{k}: {v}' for k, v in reasons.most_common())}); "
                "see ImageSet.skipped for each path and reason."
            ),
            stacklevel=3,
        )


# --------------------------------------------------------------------------- public entry point


def _select(path, classes):
    """``(paths, y, classes, unlisted)``: the listed images of the chosen classes, labels
    encoded, and the folders that could not be listed (``(folder, reason)``)."""
    paths, labels, unlisted = _pairs_from_input(path)
    if not paths:  # every image folder was unlisted
        raise _unlisted_error(unlisted)
    try:
        keep, y, classes = _encode_labels(labels, classes)
    except DatasetLayoutError as exc:
        if unlisted:  # a class is missing because its folder could not be listed
            raise _unlisted_error(unlisted) from exc
        raise
    return [p for p, k in zip(paths, keep) if k], y[keep], classes, unlisted


def read_images(
    path,
    *,
    size=(128, 128),
    color="gray",
    engine="local",
    chunk_size=256,
    errors="raise",
    classes=None,
    files_on="client",
):
    """Read an image folder (or a list of files) into an :class:`ImageSet`.

    Parameters
    ----------
    path : str, os.PathLike, list of (path, label) pairs, or DataFrame
        A folder with one sub-folder per class at any depth (the class is the image's parent
        folder name, so ``chest_xray/train/NORMAL/x.jpeg`` is ``"NORMAL"``); or explicit
        ``(path, label)`` pairs; or a pandas/dask DataFrame with ``path`` and ``label`` columns
        (a dask DataFrame's two columns are computed: they are small). Explicit paths are not
        filtered by extension: a missing file or a non-image is an unreadable file (see
        ``errors``). Labels may be strings or integers; classes are named ``str(label)``.
    size : int or (int, int)
        Output ``(height, width)``; images are resized to it with bicubic antialiasing.
    color : {"gray", "rgb"}
        Output channels: 1 for ``"gray"``, 3 for ``"rgb"`` (gray files are repeated).
    engine : {"local", "dask"}
        ``"local"`` decodes in this process into numpy arrays; ``"dask"`` builds a lazy dask
        array chunked along the sample axis only, ``chunk_size`` files per task, with known
        chunk sizes; nothing is decoded until it is computed (except with ``errors="skip"``,
        see below).
    chunk_size : int
        Files per dask task (and rows per chunk). Checked but unused by ``engine="local"``.
    errors : {"raise", "skip"}
        What to do with files that claim to be images but cannot be read. Headers are checked
        up front on both engines (cheap, no pixels decoded), so files that are not images raise
        at once. ``"skip"`` leaves unreadable files out, lists them in ``ImageSet.skipped`` and
        warns once with :class:`~dasktrain.exceptions.SkippedFilesWarning`. With
        ``engine="dask"``, ``"skip"`` decodes every file once on the cluster first to find the
        bad ones, so the chunk sizes stay known; ``"raise"`` raises at compute time for files
        whose header is fine but whose pixels are not. Folders that cannot be listed, files
        that are not regular files (named pipes, sockets, devices) and float images with
        NaN/inf or values outside [0, 1] are unreadable input too.
    classes : list of str, optional
        Class names in label order (``y == i`` means ``classes[i]``). A subset reads only those
        classes. By default all classes found, sorted.
    files_on : {"client", "workers"}
        Where the files are. ``"client"``: this machine lists the folder and checks the headers
        (the workers must see the same paths to decode them). ``"workers"`` (``engine="dask"``
        only): the files are on the workers' disks and may not exist here; the folder is
        listed on one worker, every worker must see it, and the headers are checked on the
        workers in blocks of ``chunk_size``. ``path`` must then be absolute. Uses the default
        Dask client.

    Returns
    -------
    ImageSet
        ``X`` float32 of shape ``(n, height, width, channels)`` in [0, 1], scaled by each
        file's bit depth (16-bit files are divided by 65535), and ``y`` int64.

    Raises
    ------
    DatasetLayoutError
        Not a folder, no images, images without a class folder, one class only, a name in
        ``classes`` that is not present, or a folder reached twice through a symbolic link.
    ValidationError
        A bad ``size``, ``color``, ``engine``, ``chunk_size``, ``errors``, ``classes`` or
        ``files_on``.
    ImageReadError
        With ``errors="raise"``, for files or folders that cannot be read (all of them are
        named). For the dask engine, files whose header is fine but whose pixels are not raise
        at compute time.
    InsufficientMemoryError
        With ``engine="local"``, before anything is decoded, when the images would need more
        than 90% of the memory available now (the message gives both numbers and suggests
        ``engine="dask"``).

    See Also
    --------
    ImageSet.to_numpy : compute a dask-engine set into a local one.

    Examples
    --------
    >>> from dasktrain.datasets import make_xray_like
    >>> root = make_xray_like(tmp_path / "xray", n_per_class=8, size=32)  # doctest: +SKIP
    >>> ds = read_images(root / "train", size=32, engine="dask")  # doctest: +SKIP
    >>> ds.X.chunks[0]  # doctest: +SKIP
    (12,)
    """
    size = _check_size(size)
    color = _check_color(color)
    errors = _check_errors(errors)
    classes = _check_classes(classes)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    check_engine(engine, allowed=("local", "dask"))
    files_on = _check_files_on(files_on, engine)

    if files_on == "workers":
        paths, y, classes, info, bad, mtimes = _select_on_workers(path, classes, chunk_size)
        skipped = []
    else:
        _check_exists_here(path)
        paths, y, classes, unlisted = _select(path, classes)
        if unlisted and errors == "raise":
            raise _unlisted_error(unlisted)
        skipped = list(unlisted)  # folders that could not be listed (errors="skip")
        info, bad = _probe_all(paths)
        mtimes = None
    if bad:
        if errors == "raise":
            raise _read_error(bad, when="opened as images")
        paths = [p for p, i in zip(paths, info) if i is not None]
        y = y[[i is not None for i in info]]
        if mtimes is not None:
            mtimes = [m for m, i in zip(mtimes, info) if i is not None]
        skipped.extend(bad)
        _check_any_left(paths, skipped)

    if engine == "local":
        _check_fits_in_memory(len(paths), size, color)
        X, failures = _decode_many(paths, size, color)
        if failures:
            bad = [(p, r) for _, p, r in failures]
            if errors == "raise":
                raise _read_error(bad, when="decoded")
            rows = np.ones(len(paths), dtype=bool)
            rows[[i for i, _, _ in failures]] = False
            X, y = X[rows], y[rows]
            paths = [p for p, k in zip(paths, rows) if k]
            skipped.extend(bad)
    else:
        if errors == "skip" and paths:
            bad = _find_undecodable(paths, size, color, chunk_size)
            if bad:
                dropped = {p for p, _ in bad}
                rows = np.array([p not in dropped for p in paths], dtype=bool)
                paths = [p for p, k in zip(paths, rows) if k]
                y = y[rows]
                if mtimes is not None:
                    mtimes = [m for m, k in zip(mtimes, rows) if k]
                skipped.extend(bad)
        labels = y
        X, y = _lazy_arrays(paths, y, size, color, chunk_size, mtimes=mtimes)

    _check_any_left(paths, skipped)
    _warn_skipped(skipped)
    result = ImageSet(
        X,
        y,
        classes=classes,
        paths=paths,
        skipped=skipped,
        size=size,
        color=color,
        _labels=y if engine == "local" else labels,
    )
    logger.info("read_images: %r", result)
    return result


#: The local engine refuses to start when its array needs more than this share of the memory
#: available now: the rest of the process (and the next step) needs some too.
_MEMORY_HEADROOM = 0.9


def _check_fits_in_memory(n, size, color):
    """Raise :class:`InsufficientMemoryError` before decoding ``n`` images that cannot fit.

    The decoded array is allocated lazily by the OS, so without this check the process only
    dies (killed for memory) far into the decoding; the estimate needs no allocation.
    """
    import psutil

    h, w = size
    c = COLORS[color]
    need = n * h * w * c * np.dtype(np.float32).itemsize
    available = psutil.virtual_memory().available
    if need > _MEMORY_HEADROOM * available:
        raise InsufficientMemoryError(
            f"read_images(engine='local') would hold {n} images of {h}x{w}x{c} float32 in "
            f"memory: {need / 2**30:.2f} GiB, but only {available / 2**30:.2f} GiB is available "
            f"(the local engine uses at most {_MEMORY_HEADROOM:.0%} of it). Use engine='dask', "
            "which decodes chunk by chunk on the workers, or read fewer or smaller images "
            "(size=, color='gray')."
        )


def _check_any_left(paths, skipped):
    if not paths:
        raise ImageReadError(
            f"none of the files could be read ({len(skipped)} skipped); first reasons: "
            f"{skipped[:3]!r}."
        )


def _find_undecodable(paths, size, color, chunk_size):
    import dask

    logger.info(
        "read_images(engine='dask', errors='skip'): decoding %d files once on the cluster to "
        "find unreadable ones, so the chunk sizes stay known",
        len(paths),
    )
    tasks = [
        dask.delayed(_check_block, pure=True)(paths[i : i + chunk_size], size, color)
        for i in range(0, len(paths), chunk_size)
    ]
    return [bad for block in dask.compute(*tasks) for bad in block]


def _lazy_arrays(paths, y, size, color, chunk_size, mtimes=None):
    import dask.array as da
    from dask.base import tokenize

    h, w = size
    c = COLORS[color]
    names = np.empty(len(paths), dtype=object)
    names[:] = paths
    # mtimes in the token: a rewritten file must not reuse a result cached on the cluster.
    # (Read on the workers when the files are there only: files_on="workers".)
    if mtimes is None:
        mtimes = [_mtime(p) for p in paths]
    token = tokenize(paths, mtimes, size, color, chunk_size)
    P = da.from_array(names, chunks=chunk_size, name=f"image-paths-{token}")
    X = P.map_blocks(
        _read_block,
        size,
        color,
        dtype=np.float32,
        new_axis=[1, 2, 3],
        chunks=(P.chunks[0], (h,), (w,), (c,)),
        meta=np.empty((0, h, w, c), dtype=np.float32),
        name=f"read-images-{token}",
    )
    return X, da.from_array(y, chunks=(P.chunks[0],), name=f"image-labels-{token}")


def _mtime(p):
    try:
        return os.stat(p).st_mtime_ns
    except OSError:
        return None


# --------------------------------------------------------------------------- ImageSet


class ImageSet:
    """Images and labels read by :func:`read_images`.

    Attributes
    ----------
    X : numpy.ndarray or dask.array.Array of float32, shape (n, height, width, channels)
        Values in [0, 1]. A dask array is chunked along the sample axis only, with known sizes.
    y : numpy.ndarray or dask.array.Array of int64, shape (n,)
        Class index of each image: ``classes[y[i]]`` is its class name.
    classes : list of str
    paths : list of str
        The file of each row.
    skipped : list of (str, str)
        Files left out with ``errors="skip"`` and why.
    engine : {"local", "dask"}
        ``"dask"`` when ``X`` is a dask array.
    """

    def __init__(self, X, y, *, classes, paths, skipped=(), size=None, color=None, _labels=None):
        self.X = X
        self.y = y
        self.classes = list(classes)
        self.paths = list(paths)
        self.skipped = list(skipped)
        self.engine = "dask" if is_dask_collection(X) else "local"
        self.size = tuple(size) if size is not None else tuple(X.shape[1:3])
        self.color = color or ("rgb" if X.shape[-1] == 3 else "gray")
        # Labels are known on the driver for both engines (they come from the listing), so
        # counts, repr and splits never compute anything; read_images passes them along.
        if _labels is None:
            _labels = y.compute() if is_dask_collection(y) else y
        self._labels = np.asarray(_labels, dtype=np.int64)

    def __len__(self):
        return len(self.paths)

    def counts(self):
        """Images per class, as ``{class_name: count}`` in class order."""
        n = np.bincount(self._labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def _replace(self, X, y, paths, labels=None):
        return ImageSet(
            X,
            y,
            classes=self.classes,
            paths=paths,
            skipped=self.skipped,
            size=self.size,
            color=self.color,
            _labels=self._labels if labels is None else labels,
        )

    def train_test_split(self, test_size=0.25, *, stratify=True, seed=0):
        """Split into a train and a test set (rows keep their original order in each).

        Parameters
        ----------
        test_size : float in (0, 1) or int
            Fraction or number of images in the test set.
        stratify : bool
            Keep the class proportions in both parts.
        seed : int
            Random seed; the same seed gives the same split on both engines.

        Returns
        -------
        train, test : ImageSet
            Same engine as this set; a dask set stays lazy with known chunk sizes.
        """
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(self))
        try:
            tr, te = train_test_split(
                idx,
                test_size=test_size,
                stratify=self._labels if stratify else None,
                random_state=seed,
            )
        except ValueError as exc:
            raise ValidationError(
                f"cannot split {len(self)} images with test_size={test_size!r}, "
                f"stratify={stratify!r} (counts per class: {self.counts()}): {exc}"
            ) from exc
        return self._take(np.sort(tr)), self._take(np.sort(te))

    def _take(self, rows):
        paths = [self.paths[i] for i in rows]
        return self._replace(self.X[rows], self.y[rows], paths, self._labels[rows])

    def to_numpy(self, *, client=None):
        """Return a local copy: ``X`` and ``y`` as numpy arrays (computes a dask set).

        Parameters
        ----------
        client : distributed.Client, optional
            Compute on this client; by default Dask's current scheduler.
        """
        if self.engine == "local":
            return self._replace(np.array(self.X), np.array(self.y), self.paths)
        X, y = _compute_rows([self.X, self.y], client)
        return self._replace(X, y, self.paths)

    def persist(self, *, client=None):
        """Decode a dask set into (cluster) memory and return it, still a dask set.

        A local set is already in memory and is returned unchanged.
        """
        if self.engine == "local":
            return self
        if client is not None:
            X, y = client.persist([self.X, self.y])
        else:
            import dask

            X, y = dask.persist(self.X, self.y)
        return self._replace(X, y, self.paths)

    def __repr__(self):
        n, (h, w) = len(self), self.size
        counts = self.counts()
        width = max([len(k) for k in counts] + [5])
        lines = [
            f"ImageSet(engine={self.engine!r}, n={n}, size={(h, w)}, color={self.color!r}, "
            f"classes={len(self.classes)})",
            f"  X: {type(self.X).__module__.split('.')[0]} float32 {tuple(self.X.shape)}",
        ]
        lines += [f"  {k:<{width}} {v:>7}" for k, v in counts.items()]
        if self.engine == "dask":
            sizes = self.X.chunks[0]
            lines.append(
                f"  chunks: {len(sizes)} along samples (up to {max(sizes, default=0)} images "
                "each), sizes known"
            )
        else:
            lines.append(f"  in memory: {self.X.nbytes / 2**20:.1f} MiB")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} file(s), see .skipped")
        return "\n".join(lines)


def _compute_rows(arrays, client=None):
    """Compute dask arrays chunked along axis 0 into numpy, gathering the chunks here.

    ``Array.compute()`` on a cluster concatenates the chunks in a task on one worker, which
    first pulls every other worker's chunks and then sends the whole array to the client: a
    serial tail that costs a third of the read time on 2 workers. Gathering the chunks
    straight to the client, each as soon as it is ready (so transfers overlap the decoding of
    later chunks), and concatenating here moves each byte once.
    """
    import dask

    parts, fallback = [], []
    for a in arrays:
        if all(n == 1 for n in a.numblocks[1:]):
            parts.append(list(a.to_delayed().ravel()))
        else:  # chunked along other axes too (a user rechunked it): the ordinary compute
            parts.append([a])
            fallback.append(len(parts) - 1)
    flat = [d for p in parts for d in p]
    if client is not None:
        from distributed import as_completed

        futures = client.compute(flat)
        index = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(futures)
        with client.as_current():  # as_completed looks the client up; it may not be the default
            for future, value in as_completed(futures, with_results=True):
                results[index[future.key]] = value
    else:
        results = dask.compute(*flat)
    out, i = [], 0
    for k, p in enumerate(parts):
        chunk = results[i : i + len(p)]
        i += len(p)
        out.append(np.asarray(chunk[0]) if k in fallback else np.concatenate(chunk, axis=0))
    return out


# --------------------------------------------------------------------------- folder summary


def scan_images(path, *, classes=None, decode=False):
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
    paths, y, classes, unlisted = _select(path, _check_classes(classes))
    info, bad = _probe_all(paths)
    if decode:
        # Headers can be fine while the pixels are not (a truncated download): decode all.
        header_bad = {p for p, _ in bad}
        for i, p in enumerate(paths):
            if p in header_bad:
                continue
            try:
                decode_image(p, (8, 8), "gray")
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                bad.append((p, f"{type(exc).__name__}: {exc}"))
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


# --------------------------------------------------------------------------- files on the workers

FILES_ON = ("client", "workers")


def _check_files_on(files_on, engine):
    if files_on not in FILES_ON:
        raise ValidationError(f"files_on={files_on!r} must be one of {FILES_ON}.")
    if files_on == "workers" and engine != "dask":
        raise ValidationError(
            f"files_on='workers' needs engine='dask' (got engine={engine!r}): the local engine "
            "reads the files in this process, so they must be on this machine."
        )
    return files_on


def _check_exists_here(path):
    """A folder path that does not exist here: say so, and how to read files on the workers."""
    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path):
        raise DatasetLayoutError(
            f"path={os.fspath(path)!r} is not a folder on this machine (it does not exist "
            "here). If the images are on the Dask workers' disks only, read them with "
            "read_images(..., engine='dask', files_on='workers'): the folder is then listed "
            "and checked on the workers."
        )


def _probe_on_worker(paths):
    """On a worker: header check and mtime of each path (see ``_probe_all``, ``_mtime``)."""
    info, bad = _probe_all(paths)
    return info, bad, [_mtime(p) for p in paths]


def _select_on_workers(path, classes, chunk_size):
    """``_select`` and ``_probe_all`` run on the workers, for files the client cannot see.

    Returns ``(paths, y, classes, info, bad, mtimes)``.
    """
    from ._dask import get_client

    client = get_client(None, what="read_images(files_on='workers')")
    if isinstance(path, (str, os.PathLike)):
        root = os.fspath(path)
        if not os.path.isabs(root):
            raise ValidationError(
                f"path={root!r}: files_on='workers' needs an absolute path (a relative one "
                "would be resolved in each worker's own current folder)."
            )
        seen = client.run(os.path.isdir, root)
        missing = sorted(w for w, ok in seen.items() if not ok)
        if missing:
            raise DatasetLayoutError(
                f"path={root!r} is not a folder on {len(missing)} of {len(seen)} workers "
                f"({', '.join(missing[:_MAX_NAMED])}). With files_on='workers' every worker "
                "must see the same files (the same folder on each host, or a shared file "
                "system)."
            )
        listing = client.submit(list_images, root, pure=False)
        paths, labels = listing.result()
    else:
        paths, labels, _ = _pairs_from_input(path)  # pairs and DataFrames list no folders
    keep, y, classes = _encode_labels(labels, classes)
    paths, y = [p for p, k in zip(paths, keep) if k], y[keep]
    blocks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
    futures = client.map(_probe_on_worker, blocks, pure=False)
    info, bad, mtimes = [], [], []
    for block_info, block_bad, block_mtimes in client.gather(futures):
        info += block_info
        bad += block_bad
        mtimes += block_mtimes
    return paths, y, classes, info, bad, mtimes
