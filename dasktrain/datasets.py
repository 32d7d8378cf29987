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
from collections.abc import Mapping, Sequence

import numpy as np

from ._compat import check_not_bootstrapping
from ._validation import check_folder_path, check_positive_int
from .exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["make_xray_like", "digits_folder", "XRAY_CLASSES"]

#: Class folder names of :func:`make_xray_like`, in label order.
XRAY_CLASSES = ("NORMAL", "PNEUMONIA")

#: One image to write: ``(label, index, path relative to the root)``.
Job = tuple[int, int, str]


def _grid(s: int) -> np.ndarray:
    """Pixel coordinates in [-1, 1]: ``(yy, xx)`` of shape (s, s), float32.

    float32 throughout: half the memory traffic, and a 128x128 temporary (64 kB) stays below
    glibc's mmap threshold, so the many temporaries per image are not mapped and unmapped
    (page faults cost more than the arithmetic in float64).
    """
    return (np.mgrid[0:s, 0:s] / (s - 1.0) * 2.0 - 1.0).astype(np.float32)


def _chest(rng: np.random.Generator, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One normal chest-like image (float32, about [0, 1]) and its lung mask."""
    yy, xx = grid
    u = rng.uniform
    # Body: a soft-edged ellipse of soft tissue on a dark background.
    cy, cx = u(-0.05, 0.05), u(-0.05, 0.05)
    body_d = ((xx - cx) / u(0.8, 0.95)) ** 2 + ((yy - cy) / 1.05) ** 2
    body = 1.0 / (1.0 + np.exp((body_d - 1.0) * 12.0))
    img = u(0.5, 0.65) * body
    # Two lung fields: darker ellipses either side of the spine.
    lungs = np.zeros_like(img)
    for side in (-1.0, 1.0):
        lx = cx + side * u(0.33, 0.4)
        ly = cy + u(-0.1, 0.0)
        d = ((xx - lx) / u(0.22, 0.28)) ** 2 + ((yy - ly) / u(0.5, 0.6)) ** 2
        lungs = np.maximum(lungs, 1.0 / (1.0 + np.exp((d - 1.0) * 10.0)))
    img = img - u(0.25, 0.35) * lungs
    # Ribs: faint bright bands across the lungs; spine: a bright vertical strip.
    ribs = 0.5 + 0.5 * np.sin((yy - cy) * u(16.0, 20.0) + u(0, np.pi))
    img = img + 0.08 * ribs * lungs * body
    img = img + u(0.2, 0.3) * np.exp(-(((xx - cx) / 0.07) ** 2)) * body
    # Heart: a bright blob low and left of the centre (the image's right).
    hd = ((xx - cx - u(0.05, 0.15)) / 0.25) ** 2 + ((yy - cy - u(0.25, 0.35)) / 0.22) ** 2
    img = img + u(0.15, 0.25) * np.exp(-hd * 2.0)
    return img, lungs


def _opacities(
    rng: np.random.Generator, lungs: np.ndarray, grid: np.ndarray, k: int, lo: float, hi: float
) -> np.ndarray:
    """``k`` patchy bright blobs inside the lung fields of one image."""
    if k == 0:
        return np.zeros_like(lungs)
    yy, xx = grid
    # Blob centres drawn among lung pixels, so opacities sit where pneumonia shows.
    inside = np.flatnonzero(lungs.ravel() > 0.5)
    centres = rng.choice(inside, size=k)
    by, bx = yy.ravel()[centres], xx.ravel()[centres]
    r = rng.uniform(0.08, 0.2, size=k).astype(np.float32)
    a = rng.uniform(lo, hi, size=k).astype(np.float32)
    dx, dy = xx[None] - bx[:, None, None], yy[None] - by[:, None, None]
    d2 = (dx**2 + dy**2) / r[:, None, None] ** 2
    # Patchy rather than round: modulate the blob with noise.
    s = lungs.shape[0]
    patch = np.exp(-d2) * (0.6 + 0.4 * rng.random((k, s, s), dtype=np.float32))
    out: np.ndarray = (a[:, None, None] * patch).sum(axis=0) * lungs
    return out


def _xray_image(
    seed: int, label: int, index: int, grid: np.ndarray, noise: float, frac_16bit: float
) -> np.ndarray:
    """Image ``index`` of class ``label``: a uint8 or uint16 array, from its own generator.

    One generator per image (seeded by ``(seed, label, index)``), so an image does not depend
    on which batch or process draws it: the files are the same for any ``n_jobs``.
    """
    rng = np.random.default_rng([seed, label, index])
    # exp() of a soft edge far outside overflows float32 to inf: 1 / (1 + inf) is the exact 0.
    with np.errstate(over="ignore"):
        img, lungs = _chest(rng, grid)
    if label == 0:
        k = int(rng.choice([0, 0, 1, 1, 2]))
        img = img + _opacities(rng, lungs, grid, k, 0.03, 0.12)
    else:
        k = int(rng.integers(3, 9))
        img = img + _opacities(rng, lungs, grid, k, 0.15, 0.35)
    img = img + np.float32(noise) * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img * np.float32(rng.uniform(0.9, 1.2)) + np.float32(0.05), 0.0, 1.0)
    scale, dtype = (65535.0, np.uint16) if rng.random() < frac_16bit else (255.0, np.uint8)
    out: np.ndarray = np.round(img * scale).astype(dtype)
    return out


def _write_xray_batch(
    root: str, jobs: Sequence[Job], size: int, seed: int, noise: float, frac_16bit: float
) -> int:
    """Write one batch of images: ``jobs`` is a list of ``(label, index, relative path)``.

    Runs in this process or in a pool process; holds one image at a time.
    """
    from PIL import Image

    grid = _grid(size)
    for label, index, rel in jobs:
        data = _xray_image(seed, label, index, grid, noise, frac_16bit)
        Image.fromarray(data).save(os.path.join(root, rel))
    return len(jobs)


#: Images per batch of :func:`make_xray_like` (one pool task; bounds nothing but scheduling).
_XRAY_BATCH = 256
#: Below this many images a process pool costs more to start than it saves.
_XRAY_POOL_MIN = 2000


def _xray_name(name: str, index: int, n: int) -> str:
    """``normal_0042.png``: zero-padded to at least 4 digits, so names sort in index order."""
    width = max(4, len(str(n - 1)))
    return f"{name.lower()}_{index:0{width}d}.png"


def _check_counts(n_per_class: int | Mapping[str, int]) -> dict[str, int]:
    """``{class name: count}`` from an int or a mapping over :data:`XRAY_CLASSES`."""
    if isinstance(n_per_class, Mapping):
        if set(n_per_class) != set(XRAY_CLASSES):
            raise ValidationError(
                f"n_per_class={n_per_class!r} must give a count for each class "
                f"{list(XRAY_CLASSES)!r}, e.g. {{'NORMAL': 1583, 'PNEUMONIA': 4273}}, or be one "
                "int."
            )
        return {
            c: check_positive_int(n_per_class[c], f"n_per_class[{c!r}]", minimum=2)
            for c in XRAY_CLASSES
        }
    n = check_positive_int(n_per_class, "n_per_class", minimum=2)
    return {c: n for c in XRAY_CLASSES}


def _pool_size(n_jobs: int | None, n_images: int) -> int:
    """Processes to write ``n_images`` with: 1 unless a pool pays off and is allowed here."""
    import multiprocessing

    from ._compat import cpu_count

    if n_jobs is None:
        n_jobs = cpu_count() if n_images >= _XRAY_POOL_MIN else 1
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    # A daemonic process (a Dask worker under a nanny) may not start children.
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(n_jobs, -(-n_images // _XRAY_BATCH)))


def _write_in_pool(
    n_proc: int, root: str, batches: list[list[Job]], args: tuple[int, int, float, float]
) -> None:
    """Write the batches in ``n_proc`` processes; in this one if the pool cannot run."""
    import concurrent.futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: the caller may run other threads (a Dask client's event loop, BLAS
    # pools) whose held locks a forked child would inherit.
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(n_proc, mp_context=ctx) as pool:
            for f in [pool.submit(_write_xray_batch, root, b, *args) for b in batches]:
                f.result()
    except BrokenProcessPool as exc:
        # A spawned child re-imports the caller's __main__, which fails in a script without
        # an `if __name__ == "__main__":` guard. Every image has its own generator, so
        # writing them here gives the same files.
        logger.warning(
            "the process pool writing the images failed (%s); writing them in this process. "
            "Guard the script's entry point with `if __name__ == '__main__':` or pass n_jobs=1.",
            exc,
        )
        for batch in batches:
            _write_xray_batch(root, batch, *args)


def _xray_jobs(root: pathlib.Path, counts: Mapping[str, int], test_size: float) -> list[Job]:
    """``[(label, index, relative path)]`` of every image; the class folders are created."""
    jobs: list[Job] = []
    for label, name in enumerate(XRAY_CLASSES):
        n = counts[name]
        n_test = min(n - 1, max(1, int(round(n * test_size))))
        for split in ("train", "test"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            split = "test" if i < n_test else "train"
            jobs.append((label, i, os.path.join(split, name, _xray_name(name, i, n))))
    return jobs


def make_xray_like(
    path: str | os.PathLike[str],
    n_per_class: int | Mapping[str, int] = 100,
    size: int = 128,
    seed: int = 0,
    *,
    test_size: float = 0.25,
    frac_16bit: float = 0.2,
    noise: float = 0.04,
    n_jobs: int | None = None,
) -> pathlib.Path:
    """Write a synthetic chest-X-ray-like data set in the Kaggle ``chest_xray`` layout.

    Each image shows a body outline, two dark lung fields, ribs, the spine and the heart, with
    random position, size, brightness and noise. ``PNEUMONIA`` images add three to eight patchy
    opacities inside the lungs; ``NORMAL`` images sometimes carry one or two faint ones (vessels,
    overlap), so a simple model learns the task well but not perfectly.

    Images are made and written one at a time, in batches of 256 that run in a process pool
    for large sets, so memory stays flat (well under 1 GB) for any ``n_per_class``; each image
    comes from its own generator seeded by ``(seed, class, index)``.

    Parameters
    ----------
    path : str or os.PathLike
        Root folder to create (existing files with the same names are overwritten).
    n_per_class : int or dict
        Images per class over train and test together: one int for every class, or a count
        per class such as ``{"NORMAL": 1583, "PNEUMONIA": 4273}`` (the Kaggle set's balance).
    size : int
        Images are ``size x size`` pixels.
    seed : int
        The same seed writes the same files, byte for byte, whatever ``n_jobs``.
    test_size : float
        Fraction of each class written to ``test/`` (at least one image per class).
    frac_16bit : float
        Fraction of images written as 16-bit grayscale PNG (the rest are 8-bit), as X-ray
        archives mix both.
    noise : float
        Standard deviation of the Gaussian noise added to each pixel.
    n_jobs : int, optional
        Processes that write images. By default one per CPU for 2,000 images or more, and
        this process alone for fewer (a pool costs about a second to start). The pool's
        processes are spawned, so a script needs the usual ``if __name__ == "__main__":``
        guard; without it each pool process stops at once (``UnguardedScriptError`` on its
        stderr: it ran the script again) and, as inside a daemonic process such as a Dask
        worker, the images are written in this process, with a warning in the log.

    Returns
    -------
    pathlib.Path
        The root, holding ``train/NORMAL``, ``train/PNEUMONIA``, ``test/NORMAL`` and
        ``test/PNEUMONIA``.

    Raises
    ------
    ValidationError
        A count below 2, a mapping without both classes, ``size`` below 16, a fraction
        out of range, or a ``path`` that is (or lies under) a file, or goes up (``..``) out
        of a folder that does not exist.
    UnguardedScriptError
        When a process being started by multiprocessing runs it: a script without
        ``if __name__ == "__main__":`` (each pool process would start a pool of its own).

    Examples
    --------
    >>> root = make_xray_like(tmp_path / "xray", n_per_class=20, size=64)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "train").iterdir())  # doctest: +SKIP
    ['NORMAL', 'PNEUMONIA']
    """
    check_not_bootstrapping("dasktrain.datasets.make_xray_like()")
    counts = _check_counts(n_per_class)
    size = check_positive_int(size, "size", minimum=16)
    if not 0.0 < float(test_size) < 1.0:
        raise ValidationError(f"test_size={test_size!r} must be a fraction in (0, 1).")
    if not 0.0 <= float(frac_16bit) <= 1.0:
        raise ValidationError(f"frac_16bit={frac_16bit!r} must be a fraction in [0, 1].")
    root = pathlib.Path(check_folder_path(path))
    jobs = _xray_jobs(root, counts, test_size)
    batches = [jobs[i : i + _XRAY_BATCH] for i in range(0, len(jobs), _XRAY_BATCH)]
    args = (size, int(seed), float(noise), float(frac_16bit))
    n_proc = _pool_size(n_jobs, len(jobs))
    if n_proc == 1:
        for batch in batches:
            _write_xray_batch(str(root), batch, *args)
    else:
        _write_in_pool(n_proc, str(root), batches, args)
    logger.info(
        "wrote %s synthetic chest X-rays to %s (%d process(es))",
        ", ".join(f"{counts[c]} {c}" for c in XRAY_CLASSES),
        root,
        n_proc,
    )
    return root


def digits_folder(
    path: str | os.PathLike[str], *, n_per_class: int | None = None, fmt: str = "png"
) -> pathlib.Path:
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
    root = pathlib.Path(check_folder_path(path))
    digits = load_digits()
    # The digits are 0..16 intensities: stretch them to the full 8-bit range.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    seen: dict[int, int] = {}
    for i, (im, target) in enumerate(zip(images, digits.target)):
        k = seen.get(target, 0)
        if n_per_class is not None and k >= n_per_class:
            continue
        seen[target] = k + 1
        folder = root / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(os.path.join(folder, f"digit_{i:04d}{exts[fmt]}"))
    return root
