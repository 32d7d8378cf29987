"""KMeans on both engines: scikit-learn locally, a fast k-means|| + Lloyd on Dask.

The dask engine keeps the data persisted on the workers and sends only tiny numpy arrays
(the current centers) to the row blocks; each block returns its partial sums and counts, which
the client adds up. Every Lloyd iteration and every k-means|| round is exactly one pass over
the blocks. The passes travel over direct connections to one long-running task per worker
(:class:`dasktrain._dask.direct.DirectGroup`): no scheduler round trip per iteration, about 3x
faster than one ``client.map`` + ``gather`` per pass when Lloyd needs many iterations. If a
worker dies, that pass and the next go through the scheduler, which recomputes the lost blocks
(``dasktrain.direct-passes: False`` always uses tasks). This is what makes it much faster than
``dask_ml.cluster.KMeans``, whose k-means|| builds many small dask graphs per round.
dask-ml stays one argument away (``algorithm="dask-ml"``) as the reference.
"""

from __future__ import annotations

import functools
import logging
import numbers
import uuid
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._dask import (
    BlockRunner,
    align_rows,
    compute_if_dask,
    map_row_blocks,
    maybe_client,
    row_chunked,
    scheduler_workers,
    using_client,
    watching,
)
from .._dask.events import emit
from .._validation import (
    check_array,
    check_consistent_length,
    check_positive_int,
    check_positive_number,
    check_weights,
    is_dask_collection,
    resolve_engine,
)
from ..exceptions import ValidationError
from . import _kmeans_dask as lloyd_dask
from ._base import computed_X, fit_X, is_dask_frame, strip_client_state, validate_fitted_X
from ._kmeans_blocks import Centers, inertia_block
from ._output import LazySetOutputMixin, apply_blockwise, dask_columns, wrap_numpy

if TYPE_CHECKING:
    from .._typing import Array, ArrayLike, Client, RandomState, Self

logger = logging.getLogger(__name__)

__all__ = ["KMeans"]

_INITS = ("k-means||", "k-means++", "random")
_ALGORITHMS = ("lloyd", "dask-ml")


class KMeans(
    LazySetOutputMixin,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    BaseEstimator,
    auto_wrap_output_keys=None,  # type: ignore[call-arg]  # set_output is LazySetOutputMixin's
):
    """K-means clustering: scikit-learn on the local engine, k-means|| + Lloyd on Dask.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters; must not exceed the number of samples.
    init : {"k-means||", "k-means++", "random"} or ndarray of shape (n_clusters, n_features)
        Initialisation. The local engine runs scikit-learn's sequential k-means++ for both
        ``"k-means||"`` and ``"k-means++"``; the dask engine runs the parallel k-means|| for
        both (one pass over the blocks per round). ``"random"`` picks ``n_clusters`` rows.
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the total squared center shift is at most ``tol`` times the mean
        per-feature variance of X (scikit-learn's rule).
    random_state : int, RandomState or None
        Seed. Results of the dask engine also depend on the row chunks of X.
    engine : {"auto", "local", "dask"}, default="auto"
        ``"auto"`` follows the input: dask array -> dask, otherwise local.
    algorithm : {"lloyd", "dask-ml"}, default="lloyd"
        ``"dask-ml"`` delegates the dask engine to :class:`dask_ml.cluster.KMeans` (the slow
        reference; no ``sample_weight``; its ``init="k-means++"`` is refused because it is
        broken against current scikit-learn).
    n_init : "auto" or int, default="auto"
        Runs with different seeds, best inertia kept. ``"auto"``: 1 for k-means||/k-means++
        and array init, 10 for ``"random"`` (scikit-learn's rule).
    oversampling_factor : float, default=2
        k-means||: each round samples about ``oversampling_factor * n_clusters`` points.
    init_max_iter : int or None, default=None
        k-means|| rounds, the first one uniform (None: 3; each round is one pass and draws
        about ``oversampling_factor * n_clusters`` candidates, which are then reclustered
        with scikit-learn's weighted k-means++).
    client : distributed.Client or None
        Dask client for the dask engine; None uses the default client if any, else the
        local dask scheduler. Never pickled.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray or dask array of shape (n_samples,)
        Follows the input type. The dask engine computes the labels in one last pass over the
        data it persisted for the fit, so a dask ``labels_`` holds them (it never recomputes
        X); the local engine's ``labels_`` for a dask input is scikit-learn's, rechunked.
    inertia_ : float
        Weighted sum of squared distances to the closest center.
    n_iter_ : int
        Lloyd iterations of the best run.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        The column names of a pandas or dask DataFrame ``X`` at fit (only then); ``predict``,
        ``transform`` and ``score`` refuse unseen, missing or reordered columns.
    engine_ : str
        The engine that ran.

    Notes
    -----
    ``transform`` gives distances named ``kmeans0 ... kmeans{k-1}``
    (``get_feature_names_out``), so ``set_output(transform="pandas")`` works; on dask input it
    returns a lazy dask DataFrame (nothing is computed). A dask DataFrame ``X`` is accepted on
    both engines (see :mod:`dasktrain.models`).

    See Also
    --------
    sklearn.cluster.KMeans : the local engine.
    dask_ml.cluster.KMeans : ``algorithm="dask-ml"``.

    Examples
    --------
    >>> from dasktrain.testing import make_blobs
    >>> X, _ = make_blobs(300, 4, centers=3)
    >>> km = KMeans(3, random_state=0).fit(X)
    >>> km.cluster_centers_.shape
    (3, 4)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | ArrayLike = "k-means||",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: RandomState = None,
        engine: str = "auto",
        algorithm: str = "lloyd",
        n_init: int | str = "auto",
        oversampling_factor: float = 2,
        init_max_iter: int | None = None,
        client: Client | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.engine = engine
        self.algorithm = algorithm
        self.n_init = n_init
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.client = client

    def __getstate__(self):
        return strip_client_state(self.__dict__)

    # ------------------------------------------------------------------ validation
    def _check_params(self, n, d):
        k = check_positive_int(self.n_clusters, "n_clusters")
        if k > n:
            raise ValidationError(
                f"n_clusters={k} is larger than the number of samples ({n}); "
                "use n_clusters <= n_samples."
            )
        check_positive_int(self.max_iter, "max_iter")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ValidationError(f"tol={self.tol!r} must be a number >= 0.")
        if self.algorithm not in _ALGORITHMS:
            raise ValidationError(
                f"algorithm={self.algorithm!r} is not known; use one of {_ALGORITHMS!r}."
            )
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise ValidationError(
                    f"init={self.init!r} is not known; use one of {_INITS!r} or an array of "
                    "shape (n_clusters, n_features)."
                )
        else:
            init = np.asarray(self.init, dtype=np.float64)
            if init.shape != (k, d):
                raise ValidationError(
                    f"init has shape {init.shape!r}; an explicit init must have shape "
                    f"(n_clusters, n_features) = {(k, d)!r}."
                )
            if not np.isfinite(init).all():
                raise ValidationError("init contains NaN or infinite values.")
        if self.n_init != "auto":
            check_positive_int(self.n_init, "n_init")
        check_positive_number(self.oversampling_factor, "oversampling_factor")
        if self.init_max_iter is not None:
            check_positive_int(self.init_max_iter, "init_max_iter")
        return k

    def _n_init(self):
        if self.n_init != "auto":
            return int(self.n_init)
        return 10 if isinstance(self.init, str) and self.init == "random" else 1

    def _check_weight(self, sample_weight, X):
        if sample_weight is None:
            return None
        w = check_array(sample_weight, name="sample_weight", ndim=1, dtype=np.float64)
        check_consistent_length(X, w, y_name="sample_weight")
        check_weights(w)
        return w

    # ------------------------------------------------------------------ fit
    def fit(self, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None) -> Self:
        """Compute the clustering.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask array of shape (n_samples,), optional

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            NaN/inf in X, unknown chunk sizes, n_clusters > n_samples, a bad engine, init or
            algorithm name, ``init="k-means++"`` with ``algorithm="dask-ml"``.
        WorkersPausedError
            The dask engine waited on workers paused for memory for
            ``dasktrain.paused-workers.grace``.
        """
        client = maybe_client(self.client)
        # Behind the paused-worker guard: the input checks and dask-ml wait on the cluster too.
        with using_client(self.client), watching(client, f"{type(self).__name__}.fit"):
            return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight):
        self._sk = None  # a refit on another engine must not predict with the old model
        engine = resolve_engine(self.engine, X, sample_weight)
        dask_in = is_dask_collection(X)
        # A dask X is checked for NaN/inf where it is materialised (the dask engine's first
        # pass, the local engine's compute), never by a pass of its own: for lazy features of
        # images that pass would read and decode every file once more.
        X = fit_X(self, X, allow_nan=dask_in)
        n, d = X.shape
        k = self._check_params(n, d)
        w = self._check_weight(sample_weight, X)
        self.engine_ = engine
        if self.algorithm == "dask-ml":
            self._fit_dask_ml(X, k, w, dask_in)
        elif engine == "local":
            self._fit_local(X, k, w)
        else:
            self._fit_dask(X, k, w, dask_in)
        return self

    def _fit_local(self, X, k, w):
        from sklearn.cluster import KMeans as SKKMeans

        init = self.init
        if isinstance(init, str) and init == "k-means||":
            init = "k-means++"  # the sequential equivalent
        est = SKKMeans(
            n_clusters=k,
            init=init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
            n_init=self._n_init() if self.n_init == "auto" else self.n_init,
            algorithm="lloyd",
        ).fit(computed_X(X), sample_weight=compute_if_dask(w))
        self._sk = est
        self.cluster_centers_ = est.cluster_centers_
        self.labels_ = est.labels_
        self.inertia_ = float(est.inertia_)
        self.n_iter_ = int(est.n_iter_)
        if is_dask_collection(X):
            self.labels_ = row_chunked(self.labels_).rechunk(X.chunks[0])

    def _fit_dask_ml(self, X, k, w, dask_in):
        if isinstance(self.init, str) and self.init == "k-means++":
            raise ValidationError(
                "init='k-means++' with algorithm='dask-ml' is refused: dask-ml 2025.1's "
                "k-means++ is broken against current scikit-learn. Use init='k-means||' "
                "(dask-ml's default) or algorithm='lloyd'."
            )
        if w is not None:
            raise ValidationError(
                "algorithm='dask-ml' does not support sample_weight; use algorithm='lloyd'."
            )
        from dask_ml.cluster import KMeans as DMKMeans

        client = maybe_client(self.client)
        est = DMKMeans(
            n_clusters=k,
            init=self.init,
            oversampling_factor=self.oversampling_factor,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
            init_max_iter=self.init_max_iter,
        )
        with using_client(client):
            est.fit(row_chunked(X, n_blocks=_n_blocks(client)))
        self.cluster_centers_ = np.asarray(est.cluster_centers_)
        self.inertia_ = float(est.inertia_)
        self.n_iter_ = int(est.n_iter_)
        self.labels_ = est.labels_ if dask_in else np.asarray(compute_if_dask(est.labels_))

    def _runner(self, X, w):
        """X (and w) persisted on the cluster, float, for the passes of the dask engine."""
        client = maybe_client(self.client)
        Xd = row_chunked(X, n_blocks=_n_blocks(client))
        if Xd.dtype.kind != "f":
            Xd = Xd.astype(np.float64)
        wd = None if w is None else row_chunked(w).rechunk(Xd.chunks[0])
        return BlockRunner([Xd, wd], client=client, direct="kmeans"), Xd

    def _fit_dask(self, X, k, w, dask_in):
        runner, Xd = self._runner(X, w)
        with runner:
            self._fit_runs(runner, Xd, k, w, dask_in)

    def _fit_runs(self, runner, Xd, k, w, dask_in):
        n = Xd.shape[0]
        rs = check_random_state(self.random_state)
        n_init = self._n_init()
        is_random = isinstance(self.init, str) and self.init == "random"
        is_parallel = isinstance(self.init, str) and not is_random
        seeds = [int(rs.randint(np.iinfo(np.int32).max)) for _ in range(n_init)]
        l = float(self.oversampling_factor) * k
        random_rows = [rs.choice(n, k, replace=False) for _ in range(n_init)] if is_random else []
        stats = lloyd_dask.first_pass(
            runner,
            picks=sorted({int(i) for r in random_rows for i in r}),
            l=l,
            seeds=seeds if is_parallel else [],
            weighted=w is not None,
        )
        tol = stats.variance * self.tol
        best = None
        for run in range(n_init):
            if not isinstance(self.init, str):
                centers = np.asarray(self.init, dtype=np.float64).copy()
            elif is_random:
                centers = np.stack([stats.rows[int(i)] for i in random_rows[run]])
            else:
                first = [d[run] for d in stats.draws if len(d[run])]
                rounds = (self.init_max_iter or 3) - 1
                centers = lloyd_dask.kmeans_parallel(runner, k, first, l, seeds[run], rounds)
            # One live "fit" event per pass: the dashboard page's curve of this run.
            fit_id = f"kmeans-{uuid.uuid4().hex[:8]}-{run}"
            on_pass = functools.partial(emit, "fit", runner.client, fit=fit_id, estimator="KMeans")
            result = lloyd_dask.lloyd(runner, centers, tol, self.max_iter, stats.wxx, on_pass)
            logger.debug("k-means run %d: inertia %.6g after %d iterations", run, *result[1:])
            if best is None or result[1] < best[1]:
                best = result
        labels, inertia = lloyd_dask.final_labels(runner, best[0])
        self._set_result((best[0], inertia, best[2]), Xd, labels, dask_in)

    def _set_result(self, best, Xd, labels, dask_in):
        import dask.array as da

        centers, inertia, n_iter = best
        self.cluster_centers_ = centers.astype(Xd.dtype if Xd.dtype.kind == "f" else np.float64)
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.labels_ = da.from_array(labels, chunks=(Xd.chunks[0],)) if dask_in else labels

    # ------------------------------------------------------------------ predict & co
    @property
    def _n_features_out(self):
        """Columns of ``transform`` (``get_feature_names_out``: ``kmeans0`` ...)."""
        return self.cluster_centers_.shape[0]

    def predict(self, X: ArrayLike) -> Array:
        """Index of the closest center for each sample (lazy dask array for dask input).

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,), int32
        """
        return self._apply("predict", X, np.int32)

    def transform(self, X: ArrayLike) -> Array:
        """Distances to every center (lazy dask array for dask input).

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_clusters)
        """
        return self._apply("transform", X, np.float64, n_columns=len(self.cluster_centers_))

    def _apply(self, method, X, dtype, n_columns=None):
        """``predict`` or ``transform``: lazy and blockwise for dask (``kmeans-<method>``).

        A dask X stays lazy: its blocks are checked for NaN/inf when computed.
        """
        check_is_fitted(self)
        X_in, dask_in = X, is_dask_collection(X)
        X = validate_fitted_X(self, X, allow_nan=dask_in, lengths=False)
        centers = Centers(np.asarray(self.cluster_centers_, dtype=np.float64))
        transform = method == "transform"
        if dask_in:
            return apply_blockwise(
                centers,
                method,
                X_in if is_dask_frame(X_in) else X,
                dtype=dtype,
                n_columns=n_columns,
                name=f"kmeans-{method}",
                columns=dask_columns(self) if transform else None,
            )
        model = self._sk if self._sk is not None else centers
        out = getattr(model, method)(X)
        return wrap_numpy(self, out, X_in) if transform else out

    def score(
        self, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None
    ) -> float:
        """Opposite of the inertia of X (for dask input: one reduction, computed eagerly).

        Returns
        -------
        float
        """
        check_is_fitted(self)
        X = validate_fitted_X(self, X)
        w = self._check_weight(sample_weight, X)
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        if not is_dask_collection(X) and not is_dask_collection(w):
            if self._sk is not None:
                return float(self._sk.score(X, sample_weight=w))
            return -float(inertia_block(X, w, C)[0])
        Xd, wd = align_rows(row_chunked(X), w, names=["X", "sample_weight"])
        parts = map_row_blocks(
            inertia_block,
            Xd,
            wd,
            name="kmeans-score",
            client=maybe_client(self.client),
            C=C,
        )
        return -float(np.sum(parts))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _n_blocks(client):
    """Row blocks for a numpy X on the dask engine: one per worker (2 on the local scheduler)."""
    if client is None:
        return 2
    try:
        return max(1, len(scheduler_workers(client)))
    except Exception:  # pragma: no cover - a client that cannot answer: one block is fine
        return 1
