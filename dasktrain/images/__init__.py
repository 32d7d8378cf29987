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
  ``errors="skip"`` reports it in ``ImageSet.skipped``; it never vanishes silently. A
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
* Every skipped file is listed in ``ImageSet.skipped`` with its reason and counted in one
  :class:`~dasktrain.exceptions.SkippedFilesWarning`.

One module per concern: ``_listing`` (which files, which class), ``_decode`` (open, check,
decode), ``_read`` (:func:`read_images`, :func:`scan_images`), ``_imageset``
(:class:`ImageSet`), ``_workers`` (``files_on="workers"``), ``_errors`` (the messages of this
policy).
"""

# ``X as X``: names for the other rooms of dasktrain (the Spark engine reads with this room's
# decoder and listing), not in __all__: the private modules stay this room's own.
from ._decode import COLORS as COLORS
from ._decode import decode_bytes as decode_bytes
from ._decode import decode_image, probe_image
from ._errors import MAX_NAMED as MAX_NAMED
from ._imageset import ImageSet
from ._listing import IMAGE_EXTENSIONS, list_images
from ._read import list_checked as list_checked
from ._read import read_images
from ._scan import scan_images

__all__ = [
    "read_images",
    "ImageSet",
    "decode_image",
    "list_images",
    "scan_images",
    "probe_image",
    "IMAGE_EXTENSIONS",
]
