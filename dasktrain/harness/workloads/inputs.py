"""The inputs the built-in workloads share, prepared once per data size, outside every timing.

The decoded images, the features (CNN, or HOG without torch) and the train/test splits are
built with the local engine before any timed run, so every engine starts from identical data; a
failure to build one is kept and raised again in each run that needs it (its row says
``unavailable`` or ``error``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..._compat import import_optional
from ..._dask import compute_if_dask
from ...exceptions import OptionalDependencyError, Unavailable, WorkloadError
from ..settings import WorkloadOptions

logger = logging.getLogger(__name__)

__all__ = ["Inputs", "image_root"]


class Inputs:
    """The data of one comparison size, prepared lazily and cached (outside timed regions).

    Parameters
    ----------
    data : str, Path, ImageSet, tuple (X, y)
        A class-per-directory folder, an ImageSet, images ``(X, y)`` with X of shape
        ``(n, h, w, c)``, or a feature matrix ``(X, y)`` with X of shape ``(n, d)``.
    size : int, optional
        Use only this many samples (balanced over classes for a folder).
    workdir : Path, optional
        Scratch space (subset folders).
    seed : int
        Seed of the subsets, splits and the CNN trunk.
    options : WorkloadOptions or dict, optional
        The built-in workloads' settings (``image_size``, ``backbone``, ``model_features``).
    n_threads : int
        Cores the local engine may use to build the features.
    """

    def __init__(self, data, *, size=None, workdir=None, seed=0, options=None, n_threads=1) -> None:
        self.data = data
        self.size = size
        self.workdir = Path(workdir) if workdir is not None else None
        self.seed = seed
        self.options = WorkloadOptions.from_dict(options)
        self.n_threads = n_threads
        self._cache: dict = {}

    @property
    def kind(self) -> str:
        """What the user's data is: ``"path"``, ``"images"``, ``"features"``, ``"imageset"``
        or ``"other"``."""
        d = self.data
        if isinstance(d, (str, os.PathLike)):
            return "path"
        if isinstance(d, tuple):
            X = d[0]
            return "features" if getattr(X, "ndim", 0) == 2 else "images"
        if hasattr(d, "X") and hasattr(d, "y"):
            return "imageset"
        return "other"

    def _cached(self, key, build):
        if key not in self._cache:
            try:
                self._cache[key] = ("ok", build())
            except (Unavailable, OptionalDependencyError, WorkloadError) as exc:
                self._cache[key] = ("failed", exc)
            except Exception as exc:
                self._cache[key] = ("failed", WorkloadError(f"preparing the {key} failed: {exc!r}"))
        status, value = self._cache[key]
        if status == "ok":
            return value
        raise value

    @property
    def path(self) -> Path:
        """Image folder (a balanced subset of symlinks when ``size`` is set)."""
        return self._cached("image folder", self._build_path)

    def _build_path(self):
        if self.kind != "path":
            raise Unavailable(
                f"this workload reads an image folder; data is {type(self.data).__name__}, "
                "pass the folder path instead"
            )
        root = image_root(self.data)
        if self.size is None:
            return root
        return _subset_folder(root, self.size, self.workdir / f"subset-{self.size}", self.seed)

    @property
    def images(self) -> tuple:
        """``(X, y, classes)``: numpy images (n, h, w, c) float32 and int64 labels."""
        return self._cached("images", self._build_images)

    def _build_images(self):
        kind = self.kind
        if kind == "path":
            from ...images import read_images

            size = self.options.image_size
            iset = read_images(self.path, size=size, color="gray", engine="local")
            X, y, classes = np.asarray(iset.X), np.asarray(iset.y), list(iset.classes)
        elif kind == "imageset":
            d = self.data
            X, y, classes = _np(d.X), _np(d.y), list(getattr(d, "classes", []))
            X, y = _take(X, y, self.size, self.seed)
        elif kind == "images":
            X, y = _np(self.data[0]), _np(self.data[1])
            X, y = _take(X, y, self.size, self.seed)
            classes = sorted(np.unique(y).tolist())
        else:
            raise Unavailable("this workload needs images; data is a feature matrix")
        if len(X) == 0:
            raise WorkloadError(f"the data set {self.data!r} has no images; check the folder.")
        return X, y, classes

    @property
    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """``(F, y)``: a 2-d numpy feature matrix and its labels."""
        return self._cached("features", self._build_features)

    def _build_features(self):
        if self.kind == "features":
            F, y = _np(self.data[0]), _np(self.data[1])
            return _take(F, y, self.size, self.seed)
        X, y, _ = self.images
        ext = self._extractor()
        F = ext.fit(X).transform(X)
        return np.asarray(F, dtype=np.float32), y

    def _extractor(self):
        """The models' features: CNN (``backbone``) or HOG, by ``options["model_features"]``.

        ``"auto"`` (the default) takes the CNN when torch is installed and HOG otherwise, so a
        core install without torch still compares every model workload.
        """
        from ...features import CNNFeatures, HOGFeatures

        kind = self.options.model_features
        if kind == "auto":
            kind = "cnn" if _importable("torch") else "hog"
            logger.info("model workloads use %s features", kind.upper())
        if kind == "hog":
            return HOGFeatures(engine="local", n_threads=self.n_threads)
        backbone = self.options.backbone
        return CNNFeatures(backbone, engine="local", seed=self.seed, n_threads=self.n_threads)

    @property
    def split(self) -> tuple:
        """Stratified train/test split of the features: ``(Ftr, Fte, ytr, yte)``."""
        return self._cached("feature split", lambda: _split(*self.features, self.seed))

    @property
    def image_split(self) -> tuple:
        """Stratified train/test split of the images: ``(Xtr, Xte, ytr, yte)``."""

        def build():
            X, y, _ = self.images
            return _split(X, y, self.seed)

        return self._cached("image split", build)

    def prepare(self, names) -> None:
        """Build the named inputs now (untimed); failures are cached and re-raised in the run."""
        for name in names:
            try:
                value = getattr(self, name)
                if callable(value):
                    value()
            except Exception:  # reported by the workload's own runs (unavailable / error)
                pass

    def for_user(self) -> object:
        """The data handed to a user's workload callable (subsampled when ``size`` is set)."""
        kind = self.kind
        if self.size is None or kind == "other":
            return self.data
        if kind == "path":
            return self.path
        if kind == "features":
            return self.features
        X, y, _ = self.images
        return X, y


def _importable(name) -> bool:
    try:
        import_optional(name)
    except OptionalDependencyError:
        return False
    return True


def image_root(path) -> Path:
    """The folder whose sub-folders are the classes: ``path/train`` when it has one.

    Raises
    ------
    WorkloadError
        The folder is missing, a file, or holds no files.
    """
    root = Path(path)
    if not root.exists():
        raise WorkloadError(f"data folder {str(root)!r} does not exist; check the path.")
    if not root.is_dir():
        raise WorkloadError(f"data={str(root)!r} is a file; pass a class-per-directory folder.")
    train = root / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        root = train
    n = sum(1 for p in root.rglob("*") if p.is_file())
    if n == 0:
        raise WorkloadError(
            f"data folder {str(root)!r} is empty: expected one sub-folder of images per class "
            "(e.g. NORMAL/, PNEUMONIA/)."
        )
    return root


def _subset_folder(root, size, dest, seed):
    """A folder of symlinks holding ``size`` images balanced over the classes of ``root``."""
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise WorkloadError(f"{str(root)!r} has no class sub-folders.")
    rng = np.random.default_rng(seed)
    per = {c: sorted(f for f in c.iterdir() if f.is_file()) for c in classes}
    total = sum(len(v) for v in per.values())
    if size > total:
        raise WorkloadError(f"size {size} is larger than the {total} images in {str(root)!r}.")
    k = max(1, size // len(classes))
    for c, files in per.items():
        out = dest / c.name
        out.mkdir(parents=True, exist_ok=True)
        pick = rng.permutation(len(files))[:k]
        for i in sorted(pick):
            link = out / files[i].name
            if not link.exists():
                link.symlink_to(files[i].resolve())
    return dest


def _np(x):
    """``x`` as a numpy array, computed first when it is a dask collection."""
    return np.asarray(compute_if_dask(x))


def _take(X, y, size, seed):
    if size is None:
        return X, y
    if size > len(X):
        raise WorkloadError(f"size {size} is larger than the data ({len(X)} samples).")
    idx = np.sort(np.random.default_rng(seed).permutation(len(X))[:size])
    return X[idx], y[idx]


def _split(X, y, seed):
    from sklearn.model_selection import train_test_split

    # np.unique, not bincount: labels may be strings ("NORMAL") or negative integers.
    strat = y if np.unique(np.asarray(y), return_counts=True)[1].min() >= 2 else None
    return train_test_split(X, y, test_size=0.25, random_state=seed, stratify=strat)
