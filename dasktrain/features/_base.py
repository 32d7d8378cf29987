"""Plumbing shared by every feature extractor: input checks, engine dispatch, chunking, progress.

A concrete extractor (CNN, Keras, HOG, histogram) only says

* how to validate its parameters and the image shape (``_validate`` / ``_check_images``),
* how many features it returns for an image shape (``_n_features``),
* which module-level *block function* turns a numpy chunk of images into features, and the
  small picklable keyword arguments it needs (``_block_kwargs``), including a hashable
  ``spec`` when it needs a model built once per process through :mod:`dasktrain._cache`.

This module then runs that block function on either engine:

* ``engine="local"``: in this process, mini-batch by mini-batch (a tqdm bar with
  ``progress=True``); a dask input is computed here first with the threaded scheduler.
* ``engine="dask"``: a dask input becomes a lazy ``map_blocks`` over the sample axis (output
  chunks known); a numpy input is split, scattered to the cluster, mapped with
  ``client.map`` and gathered back piece by piece (a tqdm bar with ``progress=True``). A
  piece lost with a worker is scattered again from the driver's copy and resubmitted
  (:func:`map_scattered`), so a killed worker costs time, not the result.

The task graph only ever holds the block function (pickled by reference) and its small
keyword arguments; never a model object (dask-ml #842).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .. import _config, _malloc
from .._dask import (
    compute_if_dask,
    get_client,
    map_scattered,
    scatter_data,
    scheduler_workers,
    split_rows,
    watching,
)
from .._dask.events import emit
from .._threads import check_n_threads, local_pool
from .._validation import check_array, check_engine, is_dask_collection
from ..exceptions import ValidationError
from ._user import Shipped

if TYPE_CHECKING:
    from .._typing import Array, ArrayLike, Client, Images, NDArray, Self

logger = logging.getLogger(__name__)


def unpack_images(X):
    """The image array of ``X``: ``X.X`` for an ImageSet-like object (``.X``, ``.y``,
    ``.classes``), else ``X`` itself."""
    if (
        not isinstance(X, np.ndarray)
        and not is_dask_collection(X)
        and all(hasattr(X, a) for a in ("X", "y", "classes"))
    ):
        return X.X
    return X


def check_images(X, name="X"):
    """Validate a stack of images without computing a dask array.

    Accepts ``(n, h, w)`` (gray) or ``(n, h, w, c)`` float arrays, numpy or dask (chunk sizes
    known). NaN/inf are checked chunk by chunk when the features are computed (so a lazy input
    stays lazy), see :func:`check_finite_block`.

    Returns
    -------
    X : ndarray or dask array of float32, 4-d ``(n, h, w, c)``.
    """
    X = check_array(X, name=name, ndim=(3, 4), allow_nan=True, min_samples=1)
    if X.dtype.kind != "f":
        raise ValidationError(
            f"{name} has dtype {X.dtype!s}; images must be floats in [0, 1] (as read_images "
            f"returns them). Convert with `{name} = {name}.astype('float32') / 255` for 8-bit "
            "images."
        )
    if X.ndim == 3:
        X = X[..., None]
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    if is_dask_collection(X) and any(len(c) > 1 for c in X.chunks[1:]):
        # Blocks must hold whole images: only the sample axis may be chunked.
        X = X.rechunk({1: -1, 2: -1, 3: -1})
    return X


def check_finite_block(block: NDArray) -> None:
    """Raise a ValidationError when a chunk of images holds NaN or infinite values."""
    if not np.isfinite(block).all():
        bad = np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))
        raise ValidationError(
            f"X contains NaN or infinite values (in {len(bad)} image(s) of this chunk, local "
            f"indices {bad[:5].tolist()!r}); fix or drop those images before extracting features."
        )


def _block_with_event(fn, block, *args, **kwargs):
    """``fn`` on one chunk in a task, and a ``features`` event (images/s per worker, live)."""
    t0 = time.perf_counter()
    out = fn(block, *args, **kwargs)
    emit("features", images=len(block), seconds=time.perf_counter() - t0)
    return out


def as_channels(block, channels):
    """Repeat a gray chunk ``(n, h, w, 1)`` to ``channels``; raise for other mismatches."""
    c = block.shape[-1]
    if c == channels:
        return block
    if c == 1:
        return np.repeat(block, channels, axis=-1)
    raise ValidationError(
        f"X has {c} channels; this extractor takes {channels} (or 1, repeated). Pass gray "
        "(n, h, w) / (n, h, w, 1) or RGB (n, h, w, 3) images."
    )


class BaseImageFeatures(TransformerMixin, BaseEstimator):
    """Base class of the image feature extractors (not public).

    Subclasses store their parameters in ``__init__`` (which must include ``engine``,
    ``n_threads`` and ``progress``) and implement ``_validate``, ``_check_images``,
    ``_n_features``, ``_block_kwargs`` and the class attribute ``_block_fn``.
    """

    #: images per task-free local step (the CNN extractors use their ``batch_size``)
    _local_step = 256
    #: whether the local engine may run ``n_threads`` steps at once, one thread each (False
    #: where the framework threads by itself: TensorFlow's session threads for Keras)
    _threaded_local = True

    # -- hooks ---------------------------------------------------------------------------------
    def _validate(self):  # pragma: no cover - abstract
        """Check the constructor parameters; raise ValidationError."""
        raise NotImplementedError

    def _check_images(self, shape):
        """Check the (n, h, w, c) image shape is usable (image size, channels)."""

    def _n_features(self, shape):  # pragma: no cover - abstract
        raise NotImplementedError

    def _block_kwargs(self, shape):  # pragma: no cover - abstract
        raise NotImplementedError

    def _model_arg(self):
        """A model object the block function takes as ``model=`` (a user's instance), or None.

        It is never bound into each task: the lazy path makes it one graph key, the eager
        path scatters it once to every worker (dask-ml #842).
        """
        return None

    # -- scikit-learn API ----------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Stateless: transform works without fit (fit only validates).
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        # Features are float32 whatever the images' float dtype (scikit-learn's default for a
        # transformer says float64 is kept).
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def fit(self, X: Images | None = None, y: object = None) -> Self:
        """Validate the parameters (and the image shape of ``X`` if given); nothing is learned.

        ``X`` is never computed: a dask array is only checked for its shape and dtype.

        Returns
        -------
        self
        """
        self._validate()
        if X is not None:
            images = check_images(unpack_images(X))
            self._check_images(tuple(images.shape))
            self.n_features_out_ = self._n_features(tuple(images.shape))
        return self

    def transform(self, X: Images, *, client: Client | None = None) -> Array:
        """Turn images into feature vectors.

        Parameters
        ----------
        X : ndarray, dask array or ImageSet of shape (n_samples, height, width[, channels])
            Float images in [0, 1]. Gray images are repeated to the channels the backbone
            needs. A dask array may be chunked along the sample axis only (other axes are
            rechunked to whole images).
        client : distributed.Client, optional
            Cluster for ``engine="dask"`` with a numpy input (and for progress); defaults to
            ``distributed.get_client()``.

        Returns
        -------
        features : ndarray or dask array of shape (n_samples, n_features), float32
            numpy for a numpy input, a lazy dask array (same sample chunks) for a dask input,
            unless ``engine`` forces the other path: ``engine="local"`` computes a dask input
            here (eager); ``engine="dask"`` sends a numpy input to the cluster and returns
            numpy. With ``progress=True`` a lazy dask result is persisted on the cluster and
            its progress shown.

        Raises
        ------
        ValidationError
            Wrong number of dimensions, non-float dtype, NaN/inf values (raised when the chunk
            holding them is computed), images too small for the extractor.
        """
        self._validate()
        images = check_images(unpack_images(X))
        shape = tuple(images.shape)
        self._check_images(shape)
        engine = check_engine(self.engine)
        if engine == "auto":
            engine = "dask" if is_dask_collection(images) else "local"
        kwargs = self._block_kwargs(shape)
        n_out = self._n_features(shape)
        fn = type(self)._block_fn
        model = self._model_arg()
        if engine == "local":
            kwargs = kwargs if model is None else {**kwargs, "model": model}
            return self._transform_local(fn, images, kwargs, n_out)
        fn = functools.partial(_block_with_event, fn)  # a "features" event per chunk
        if is_dask_collection(images):
            if model is not None:
                import dask

                # One key every block depends on; a fresh name per call (no hashing of it).
                shipped = dask.delayed(Shipped(model), pure=False, traverse=False)
                kwargs = {**kwargs, "model": shipped}
            return self._transform_dask_lazy(fn, images, kwargs, n_out, client)
        return self._transform_dask_eager(fn, images, kwargs, n_out, client, model)

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> NDArray:
        """Names ``<class>0 ... <class>{d-1}`` (needs ``fit(X)`` to know d)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_features_out_")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_features_out_)], dtype=object)

    # -- engines -------------------------------------------------------------------------------
    def _transform_local(self, fn, X, kwargs, n_out):
        # engine="local" on a dask input: compute it in this process (threads), eagerly.
        X = compute_if_dask(X, scheduler="threads")
        n_threads = check_n_threads(self.n_threads)
        step = max(1, int(self._local_step))
        starts = range(0, len(X), step)
        # Several pieces at once, one thread each (as Dask's workers run chunks): torch's own
        # threads inside one small convolution gained nothing on 2 cores (smallcnn: 0.92x one
        # thread), whole pieces side by side do (benchmarks/parity.py efficiency).
        threads = min(n_threads, len(starts)) if self._threaded_local else 1
        per_piece = 1 if threads > 1 else n_threads

        def piece(s):
            return fn(X[s : s + step], n_threads=per_piece, **kwargs)

        # The network's temporaries stay in the heap from batch to batch (no page faults);
        # the pool starts every piece at once, so it starts inside.
        with _malloc.large_buffers():
            parts = local_pool(threads).map(piece, starts) if threads > 1 else map(piece, starts)
            if self.progress:
                from tqdm.auto import tqdm

                total = math.ceil(len(X) / step)
                parts = tqdm(parts, total=total, unit="batch", desc=type(self).__name__)
            parts = list(parts)
        return np.concatenate(parts, axis=0) if parts else np.empty((0, n_out), np.float32)

    def _transform_dask_lazy(self, fn, X, kwargs, n_out, client):
        out = X.map_blocks(
            fn,
            n_threads=None,  # inside a worker: the worker's own thread count
            **kwargs,
            chunks=(X.chunks[0], (n_out,)),
            drop_axis=[2, 3],
            dtype=np.float32,
            meta=np.empty((0, 0), dtype=np.float32),
            token=type(self).__name__.lower(),
        )
        if self.progress:
            from distributed import progress

            client = get_client(client)
            # The guard watches the futures made inside it: the persist too.
            with watching(client, f"{type(self).__name__}.transform"):
                out = client.persist(out)
                progress(out)
        return out

    def _transform_dask_eager(self, fn, X, kwargs, n_out, client, model=None):
        client = get_client(client)
        # broadcast: a copy on every worker, so losing one worker does not lose the model.
        shared = ()
        if model is not None:
            what = f"{type(self).__name__}.transform"
            shipped = scatter_data(client, Shipped(model), what=what, broadcast=True, hash=False)
            shared = (shipped,)
        n_workers = max(1, len(scheduler_workers(client)))
        chunk = int(_config.get("images.chunk-size", 256))
        # At least two chunks per worker when there are enough images, so no worker idles.
        chunk = max(1, min(chunk, math.ceil(len(X) / (2 * n_workers))))
        # partial: client.map has keywords of its own (batch_size, key...) that must not clash.
        func = functools.partial(fn, n_threads=None, **kwargs)
        name = type(self).__name__.lower()
        desc = type(self).__name__ if self.progress else None
        parts = map_scattered(
            client, func, split_rows(X, chunk), name=f"{name}-piece", progress=desc, args=shared
        )
        return np.concatenate(parts, axis=0) if parts else np.empty((0, n_out), np.float32)
