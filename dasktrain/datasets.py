"""Built-in example data, written as real image files in the layouts users have (no network).

* :func:`make_xray_like`: a synthetic two-class chest-X-ray-like set in the Kaggle
  ``chest_xray`` layout (``train/NORMAL``, ``train/PNEUMONIA``, ``test/...``), mostly 8-bit PNG
  and some 16-bit PNG, deterministic for a given seed.
* :func:`digits_folder`: scikit-learn's bundled 8x8 digits as PNG files in class folders.

Tests, examples and ``dasktrain demo`` read these with :func:`dasktrain.read_images`.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

from ._validation import check_positive_int
from .exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["make_xray_like", "digits_folder", "XRAY_CLASSES"]

#: Class folder names of :func:`make_xray_like`, in label order.
XRAY_CLASSES = ("NORMAL", "PNEUMONIA")


def _chest(rng, n, s):
    """Return ``n`` normal chest-like images of ``s x s`` pixels as float64 in [0, 1]."""
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1.0) * 2.0 - 1.0  # coordinates in [-1, 1]
    yy, xx = yy[None], xx[None]

    def col(lo, hi):  # one random value per image, broadcast over the pixels
        return rng.uniform(lo, hi, size=(n, 1, 1))

    # Body: a soft-edged ellipse of soft tissue on a dark background.
    cy, cx = col(-0.05, 0.05), col(-0.05, 0.05)
    body_d = ((xx - cx) / col(0.8, 0.95)) ** 2 + ((yy - cy) / 1.05) ** 2
    body = 1.0 / (1.0 + np.exp((body_d - 1.0) * 12.0))
    img = col(0.5, 0.65) * body
    # Two lung fields: darker ellipses either side of the spine.
    lungs = np.zeros_like(img)
    for side in (-1.0, 1.0):
        lx = cx + side * col(0.33, 0.4)
        ly = cy + col(-0.1, 0.0)
        d = ((xx - lx) / col(0.22, 0.28)) ** 2 + ((yy - ly) / col(0.5, 0.6)) ** 2
        lungs = np.maximum(lungs, 1.0 / (1.0 + np.exp((d - 1.0) * 10.0)))
    img = img - col(0.25, 0.35) * lungs
    # Ribs: faint bright bands across the lungs; spine: a bright vertical strip.
    ribs = 0.5 + 0.5 * np.sin((yy - cy) * col(16.0, 20.0) + col(0, np.pi))
    img = img + 0.08 * ribs * lungs * body
    img = img + col(0.2, 0.3) * np.exp(-(((xx - cx) / 0.07) ** 2)) * body
    # Heart: a bright blob low and left of the centre (the image's right).
    hd = ((xx - cx - col(0.05, 0.15)) / 0.25) ** 2 + ((yy - cy - col(0.25, 0.35)) / 0.22) ** 2
    img = img + col(0.15, 0.25) * np.exp(-hd * 2.0)
    return img, lungs


def _opacities(rng, lungs, s, counts, lo, hi):
    """Add patchy bright blobs inside the lung fields; ``counts[i]`` blobs on image ``i``."""
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1.0) * 2.0 - 1.0
    out = np.zeros_like(lungs)
    for i, k in enumerate(counts):
        if k == 0:
            continue
        # Blob centres drawn among lung pixels, so opacities sit where pneumonia shows.
        inside = np.flatnonzero(lungs[i].ravel() > 0.5)
        centres = rng.choice(inside, size=k)
        by, bx = yy.ravel()[centres], xx.ravel()[centres]
        r = rng.uniform(0.08, 0.2, size=k)
        a = rng.uniform(lo, hi, size=k)
        dx, dy = xx[None] - bx[:, None, None], yy[None] - by[:, None, None]
        d2 = (dx**2 + dy**2) / r[:, None, None] ** 2
        # Patchy rather than round: modulate the blob with noise.
        patch = np.exp(-d2) * (0.6 + 0.4 * rng.random((k, s, s)))
        out[i] = (a[:, None, None] * patch).sum(axis=0)
    return out * lungs


def make_xray_like(
    path,
    n_per_class=100,
    size=128,
    seed=0,
    *,
    test_size=0.25,
    frac_16bit=0.2,
    noise=0.04,
):
    """Write a synthetic chest-X-ray-like data set in the Kaggle ``chest_xray`` layout.

    Each image shows a body outline, two dark lung fields, ribs, the spine and the heart, with
    random position, size, brightness and noise. ``PNEUMONIA`` images add three to eight patchy
    opacities inside the lungs; ``NORMAL`` images sometimes carry one or two faint ones (vessels,
    overlap), so a simple model learns the task well but not perfectly.

    Parameters
    ----------
    path : str or os.PathLike
        Root folder to create (existing files with the same names are overwritten).
    n_per_class : int
        Images per class over train and test together.
    size : int
        Images are ``size x size`` pixels.
    seed : int
        The same seed writes the same files, byte for byte.
    test_size : float
        Fraction of each class written to ``test/`` (at least one image per class).
    frac_16bit : float
        Fraction of images written as 16-bit grayscale PNG (the rest are 8-bit), as X-ray
        archives mix both.
    noise : float
        Standard deviation of the Gaussian noise added to each pixel.

    Returns
    -------
    pathlib.Path
        The root, holding ``train/NORMAL``, ``train/PNEUMONIA``, ``test/NORMAL`` and
        ``test/PNEUMONIA``.

    Examples
    --------
    >>> root = make_xray_like(tmp_path / "xray", n_per_class=20, size=64)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "train").iterdir())  # doctest: +SKIP
    ['NORMAL', 'PNEUMONIA']
    """
    from PIL import Image

    n_per_class = check_positive_int(n_per_class, "n_per_class", minimum=2)
    size = check_positive_int(size, "size", minimum=16)
    if not 0.0 < float(test_size) < 1.0:
        raise ValidationError(f"test_size={test_size!r} must be a fraction in (0, 1).")
    if not 0.0 <= float(frac_16bit) <= 1.0:
        raise ValidationError(f"frac_16bit={frac_16bit!r} must be a fraction in [0, 1].")
    root = pathlib.Path(path)
    rng = np.random.default_rng(seed)
    n_test = min(n_per_class - 1, max(1, int(round(n_per_class * test_size))))
    for label, name in enumerate(XRAY_CLASSES):
        img, lungs = _chest(rng, n_per_class, size)
        if label == 0:
            counts = rng.choice([0, 0, 1, 1, 2], size=n_per_class)
            img = img + _opacities(rng, lungs, size, counts, 0.03, 0.12)
        else:
            counts = rng.integers(3, 9, size=n_per_class)
            img = img + _opacities(rng, lungs, size, counts, 0.15, 0.35)
        img = img + rng.normal(0.0, noise, size=img.shape)
        img = np.clip(img * rng.uniform(0.9, 1.2, size=(n_per_class, 1, 1)) + 0.05, 0.0, 1.0)
        is16 = rng.random(n_per_class) < frac_16bit
        for i in range(n_per_class):
            split = "test" if i < n_test else "train"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            if is16[i]:
                data = np.round(img[i] * 65535.0).astype(np.uint16)
            else:
                data = np.round(img[i] * 255.0).astype(np.uint8)
            Image.fromarray(data).save(folder / f"{name.lower()}_{i:04d}.png")
    logger.info("wrote %d synthetic chest X-rays per class to %s", n_per_class, root)
    return root


def digits_folder(path, *, n_per_class=None, fmt="png"):
    """Write scikit-learn's bundled digits (8x8, 10 classes) as image files in class folders.

    Parameters
    ----------
    path : str or os.PathLike
        Root folder; images go to ``path/0/`` ... ``path/9/``.
    n_per_class : int, optional
        At most this many images per digit (all ~180 by default).
    fmt : {"png", "bmp", "tiff", "jpeg"}
        File format.

    Returns
    -------
    pathlib.Path
        The root.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    exts = {"png": ".png", "bmp": ".bmp", "tiff": ".tif", "jpeg": ".jpg"}
    if fmt not in exts:
        raise ValidationError(f"fmt={fmt!r} is not supported; use one of {sorted(exts)!r}.")
    if n_per_class is not None:
        n_per_class = check_positive_int(n_per_class, "n_per_class")
    digits = load_digits()
    root = pathlib.Path(path)
    # The digits are 0..16 intensities: stretch them to the full 8-bit range.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    seen = {}
    for i, (im, target) in enumerate(zip(images, digits.target)):
        k = seen.get(target, 0)
        if n_per_class is not None and k >= n_per_class:
            continue
        seen[target] = k + 1
        folder = root / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(os.path.join(folder, f"digit_{i:04d}{exts[fmt]}"))
    return root
