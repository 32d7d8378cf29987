"""The :class:`ImageSet` that :func:`~dasktrain.images.read_images` returns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .._dask import compute_if_dask, gather_rows
from .._validation import is_dask_collection
from ..exceptions import ValidationError

if TYPE_CHECKING:
    from .._typing import Array, ArrayLike, Client, NDArray

__all__ = ["ImageSet"]


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

    def __init__(
        self,
        X: Array,
        y: Array,
        *,
        classes: Iterable[str],
        paths: Iterable[str],
        skipped: Iterable[tuple[str, str]] = (),
        size: tuple[int, ...] | None = None,
        color: str | None = None,
        _labels: ArrayLike | None = None,
    ) -> None:
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
            _labels = compute_if_dask(y)
        self._labels = np.asarray(_labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class, as ``{class_name: count}`` in class order."""
        n = np.bincount(self._labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def _replace(
        self, X: Array, y: Array, paths: list[str], labels: NDArray | None = None
    ) -> ImageSet:
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

    def train_test_split(
        self, test_size: float | int = 0.25, *, stratify: bool = True, seed: int | None = 0
    ) -> tuple[ImageSet, ImageSet]:
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

    def _take(self, rows: NDArray) -> ImageSet:
        paths = [self.paths[i] for i in rows]
        return self._replace(self.X[rows], self.y[rows], paths, self._labels[rows])

    def to_numpy(self, *, client: Client | None = None) -> ImageSet:
        """Return a local copy: ``X`` and ``y`` as numpy arrays (computes a dask set).

        Parameters
        ----------
        client : distributed.Client, optional
            Compute on this client; by default Dask's current scheduler.
        """
        if self.engine == "local":
            return self._replace(np.array(self.X), np.array(self.y), self.paths)
        X, y = gather_rows([self.X, self.y], client)
        return self._replace(X, y, self.paths)

    def persist(self, *, client: Client | None = None) -> ImageSet:
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

    def __repr__(self) -> str:
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
            sizes = self.X.chunks[0]  # type: ignore[union-attr]  # engine "dask": a dask array
            lines.append(
                f"  chunks: {len(sizes)} along samples (up to {max(sizes, default=0)} images "
                "each), sizes known"
            )
        else:
            lines.append(f"  in memory: {self.X.nbytes / 2**20:.1f} MiB")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} file(s), see .skipped")
        return "\n".join(lines)
