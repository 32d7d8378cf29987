"""KMeans on both engines: scikit-learn locally, a fast k-means|| + Lloyd on Dask.

The dask engine keeps the data persisted on the workers and sends only tiny numpy arrays
(the current centers) to one small task per row block; each task returns per-block partial
sums, counts and inertia, which the client adds up. So every Lloyd iteration and every
k-means|| round is exactly one pass over the blocks and one scheduler round trip. This is what
makes it much faster than ``dask_ml.cluster.KMeans``, whose k-means|| builds many small dask
graphs per round. dask-ml stays one argument away (``algorithm="dask-ml"``) as the reference.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._validation import (
    check_array,
    check_consistent_length,
    check_positive_int,
    is_dask_collection,
    resolve_engine,
)
from ..exceptions import ValidationError
from ._base import (
    BlockRunner,
    as_dask,
    maybe_client,
    scheduler_workers,
    strip_client_state,
    using_client,
    validate_fitted_X,
    validate_X,
)

logger = logging.getLogger(__name__)

__all__ = ["KMeans"]

_INITS = ("k-means||", "k-means++", "random")
_ALGORITHMS = ("lloyd", "dask-ml")


# --------------------------------------------------------------------------------------------
# per-block kernels (module level: workers import them by reference, they are never pickled
# with data). Each returns only small arrays.
# --------------------------------------------------------------------------------------------


def _row_norms(X):
    return np.einsum("ij,ij->i", X, X)


def _partial_dist(X, C):
    """``-2 x.c + |c|^2`` (n, k): the squared distance minus ``|x|^2``.

    The argmin over centers does not need ``|x|^2``, so only the chosen distance gets it
    added: this keeps the (n, k) work to one GEMM, one add and one argmin.
    """
    d = X @ (-2.0 * C.T)
    d += np.einsum("ij,ij->i", C, C)[None, :]
    return d


_ROWS = 8192  # rows per slice: keeps the (rows, k) distance matrix in cache


def _min_sq_dist(X, C):
    """Nearest-center index and squared distance (clipped at 0) for every row."""
    n = len(X)
    labels = np.empty(n, dtype=np.intp)
    best = np.empty(n, dtype=np.float64)
    cn = np.einsum("ij,ij->i", C, C)[None, :]
    C2 = -2.0 * C.T
    for start in range(0, n, _ROWS):
        sl = slice(start, start + _ROWS)
        d = X[sl] @ C2
        d += cn
        lab = d.argmin(axis=1)
        labels[sl] = lab
        best[sl] = np.take_along_axis(d, lab[:, None], axis=1)[:, 0]
    best += _row_norms(X)
    np.maximum(best, 0.0, out=best)
    return labels, best


def _sq_dist(X, C):
    """Full squared euclidean distances (n, k), clipped at 0."""
    d = _partial_dist(X, C)
    d += _row_norms(X)[:, None]
    np.maximum(d, 0.0, out=d)
    return d


# Per-process cache of each block's distance to the current k-means|| candidates, so a
# round only measures the candidates added since the previous one. Keyed by (fit token,
# block index); a miss (the task ran on another worker) just recomputes in full.
_DIST_CACHE = {}
_DIST_CACHE_MAX = 64


def _draw(rng, weights_x_l, scale):
    """Bernoulli draws with probability ``min(1, weights_x_l / scale)``."""
    if scale <= 0:
        return np.zeros(len(weights_x_l), dtype=bool)
    return rng.random(len(weights_x_l)) < np.minimum(1.0, weights_x_l / scale)


def _stats_block(X, w, *, block_index, row_offset, picks, n_total, l, seeds):
    """First pass: finiteness, per-feature sums (tolerance), and the first k-means|| draw.

    The first draw is uniform (weighted by ``w``), about ``l`` points over all blocks, one
    draw per run seed; it plays the role of Bahmani's single uniform first center.
    """
    Xf = X.astype(np.float64, copy=False)
    finite = bool(np.isfinite(Xf).all())
    wf = np.ones(len(Xf)) if w is None else w.astype(np.float64, copy=False)
    finite = finite and bool(np.isfinite(wf).all())
    local = [p - row_offset for p in picks if row_offset <= p < row_offset + len(Xf)]
    # One (possibly empty) draw per seed from every block, so draws[run] exists even for an
    # empty block (empty chunks are common after boolean filtering).
    draws = [Xf[:0].copy() for _ in seeds]
    if finite and len(Xf):
        # Block-local normalisation: expected draws over all blocks is exactly l.
        scale = float(wf.mean()) * n_total
        for i, seed in enumerate(seeds):
            rng = np.random.default_rng([seed, block_index, 0])
            draws[i] = Xf[_draw(rng, l * wf, scale)].copy()
    return {
        "finite": finite,
        "n": len(Xf),
        "s1": Xf.sum(axis=0) if finite else None,
        "s2": np.einsum("ij,ij->j", Xf, Xf) if finite else None,
        "wmin": float(wf.min()) if len(wf) else 0.0,
        "rows": {row_offset + i: Xf[i].copy() for i in local},
        "draws": draws,
    }


def _sample_block(X, w, *, block_index, row_offset, C, n_old, phi, l, seed, token, n_total):
    """One k-means|| round: cost against C, plus points drawn with prob l * w * d^2 / phi.

    When ``phi`` is unknown (None) the block normalises by its own cost scaled to the whole
    data set, which keeps the expected number of draws at ``l``.
    """
    X = X.astype(np.float64, copy=False)
    key = (token, block_index)
    hit = _DIST_CACHE.get(key)
    if hit is not None and hit[0] == n_old:
        _, d2 = _min_sq_dist(X, C[n_old:]) if len(C) > n_old else (None, hit[1])
        np.minimum(d2, hit[1], out=d2)
    else:
        _, d2 = _min_sq_dist(X, C)
    if len(_DIST_CACHE) >= _DIST_CACHE_MAX:
        _DIST_CACHE.pop(next(iter(_DIST_CACHE)))
    _DIST_CACHE[key] = (len(C), d2)
    wd2 = d2 if w is None else w * d2
    cost = float(wd2.sum())
    if phi is None:
        phi = cost * n_total / max(len(X), 1)
    rng = np.random.default_rng([seed, block_index])
    return cost, X[_draw(rng, l * wd2, phi)].copy()


def _assign_block(X, w, *, block_index, row_offset, C, sums=True, forget=None):
    """One Lloyd pass: nearest center; returns weighted (sums, counts, inertia)."""
    import scipy.sparse as sp

    if forget is not None:
        _DIST_CACHE.pop((forget, block_index), None)

    X = X.astype(np.float64, copy=False)
    labels, best = _min_sq_dist(X, C)
    wf = np.ones(len(labels)) if w is None else w.astype(np.float64, copy=False)
    k = len(C)
    counts = np.bincount(labels, weights=wf, minlength=k)
    inertia = float(wf @ best)
    if not sums:
        return None, counts, inertia
    # sparse (k, n) membership matrix times X: O(n * d), no Python loop over clusters.
    M = sp.csr_matrix((wf, (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    return M @ X, counts, inertia


def _first_row(X, w, *, block_index, row_offset):
    return X[0].astype(np.float64) if len(X) else None


def _label_block(X, w, *, block_index, row_offset, C):
    return _predict_block(X, C)


def _predict_block(X, C):
    return _partial_dist(X.astype(np.float64, copy=False), C).argmin(axis=1).astype(np.int32)


def _transform_block(X, C):
    return np.sqrt(_sq_dist(X, C))


def _inertia_block(X, w, C):
    _, d2 = _min_sq_dist(X.astype(np.float64, copy=False), C)
    return np.array([d2.sum() if w is None else float(w @ d2)])


# --------------------------------------------------------------------------------------------


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
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
    engine_ : str
        The engine that ran.

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
        n_clusters=8,
        *,
        init="k-means||",
        max_iter=300,
        tol=1e-4,
        random_state=None,
        engine="auto",
        algorithm="lloyd",
        n_init="auto",
        oversampling_factor=2,
        init_max_iter=None,
        client=None,
    ):
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
        if not isinstance(self.oversampling_factor, numbers.Real) or self.oversampling_factor <= 0:
            raise ValidationError(
                f"oversampling_factor={self.oversampling_factor!r} must be a number > 0."
            )
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
        if not is_dask_collection(w) and (w < 0).any():
            raise ValidationError("sample_weight has negative values; weights must be >= 0.")
        return w

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, sample_weight=None):
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
        """
        with using_client(self.client):
            return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight):
        self._sk = None  # a refit on another engine must not predict with the old model
        engine = resolve_engine(self.engine, X, sample_weight)
        dask_in = is_dask_collection(X)
        # A dask X is checked for NaN/inf where it is materialised (the dask engine's first
        # pass, the local engine's compute), never by a pass of its own: for lazy features of
        # images that pass would read and decode every file once more.
        X = validate_X(X, allow_nan=dask_in)
        n, d = X.shape
        k = self._check_params(n, d)
        w = self._check_weight(sample_weight, X)
        self.n_features_in_ = d
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

        Xn = validate_X(X.compute()) if is_dask_collection(X) else X
        wn = w.compute() if is_dask_collection(w) else w
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
        ).fit(Xn, sample_weight=wn)
        self._sk = est
        self.cluster_centers_ = est.cluster_centers_
        self.labels_ = est.labels_
        self.inertia_ = float(est.inertia_)
        self.n_iter_ = int(est.n_iter_)
        if is_dask_collection(X):
            self.labels_ = as_dask(self.labels_).rechunk(X.chunks[0])

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
        Xd = as_dask(X, n_blocks=_n_workers(client))
        est = DMKMeans(
            n_clusters=k,
            init=self.init,
            oversampling_factor=self.oversampling_factor,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
            init_max_iter=self.init_max_iter,
        )
        if client is not None:
            with client.as_current():
                est.fit(Xd)
        else:
            est.fit(Xd)
        self.cluster_centers_ = np.asarray(est.cluster_centers_)
        self.inertia_ = float(est.inertia_)
        self.n_iter_ = int(est.n_iter_)
        self.labels_ = est.labels_ if dask_in else np.asarray(est.labels_.compute())

    def _fit_dask(self, X, k, w, dask_in):
        client = maybe_client(self.client)
        Xd = X if is_dask_collection(X) else as_dask(X, n_blocks=_n_workers(client))
        Xd = as_dask(Xd)
        if Xd.dtype.kind != "f":
            Xd = Xd.astype(np.float64)
        wd = None if w is None else as_dask(w).rechunk(Xd.chunks[0])
        runner = BlockRunner([Xd, wd], client=client)
        n, d = Xd.shape
        rs = check_random_state(self.random_state)
        n_init = self._n_init()
        is_random = isinstance(self.init, str) and self.init == "random"
        is_parallel = isinstance(self.init, str) and not is_random
        seeds = [int(rs.randint(np.iinfo(np.int32).max)) for _ in range(n_init)]
        l = float(self.oversampling_factor) * k
        # The first pass checks the values, measures the variance (for tol) and also does
        # the first k-means|| draw or picks the "random" rows: no separate round trip.
        random_rows = [rs.choice(n, k, replace=False) for _ in range(n_init)] if is_random else []
        picks = sorted({int(i) for r in random_rows for i in r})
        stats = runner.map(
            _stats_block,
            name="kmeans-stats",
            picks=picks,
            n_total=n,
            l=l,
            seeds=seeds if is_parallel else [],
        )
        if not all(s["finite"] for s in stats):
            raise ValidationError(
                "X (or sample_weight) contains NaN or infinite values; drop or impute them "
                "first (for example sklearn.impute.SimpleImputer)."
            )
        if w is not None and min(s["wmin"] for s in stats) < 0:
            raise ValidationError("sample_weight has negative values; weights must be >= 0.")
        rows = {i: r for s in stats for i, r in s["rows"].items()}
        s1 = sum(s["s1"] for s in stats)
        s2 = sum(s["s2"] for s in stats)
        var = s2 / n - (s1 / n) ** 2
        tol = float(np.mean(np.maximum(var, 0))) * self.tol

        best = None
        for run in range(n_init):
            if not isinstance(self.init, str):
                centers = np.asarray(self.init, dtype=np.float64).copy()
            elif is_random:
                centers = np.stack([rows[int(i)] for i in random_rows[run]])
            else:
                # Empty when the uniform draw found nothing (tiny data): the init then starts
                # from the first row of the first non-empty block.
                first = [s["draws"][run] for s in stats if len(s["draws"][run])]
                centers = self._kmeans_parallel_init(runner, k, first, l, seeds[run])
            result = self._lloyd(runner, centers, tol)
            logger.debug(
                "k-means run %d: inertia %.6g after %d iterations", run, result[1], result[2]
            )
            if best is None or result[1] < best[1]:
                best = result
        centers, inertia, n_iter = best
        self.cluster_centers_ = centers.astype(Xd.dtype if Xd.dtype.kind == "f" else np.float64)
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        # One more pass over the persisted blocks: labels_ never recomputes X (for features
        # of images, that would read and decode every file again).
        import dask.array as da

        labels = np.concatenate(runner.map(_label_block, name="kmeans-labels", C=centers)).astype(
            np.int32, copy=False
        )
        self.labels_ = da.from_array(labels, chunks=(Xd.chunks[0],)) if dask_in else labels

    def _kmeans_parallel_init(self, runner, k, first, l, seed):
        """k-means|| (Bahmani et al. 2012): one pass per round, then weighted k-means++.

        The first round is the uniform draw of the first pass. Round r then draws with
        probability ``l * w * d^2 / phi`` where phi is the cost against the candidates of
        the round before (one round stale: an over-estimate, so slightly fewer points are
        drawn; for the second round each block scales its own cost). Every round is one
        pass; each block only measures the candidates added since its previous round.
        """
        import uuid

        from sklearn.cluster import KMeans as SKKMeans

        if first:
            C = np.vstack(first).astype(np.float64)
        else:
            rows = runner.map(_first_row, name="kmeans-first-row")
            C = next(r for r in rows if r is not None)[None, :]
        token = uuid.uuid4().hex
        rounds = (self.init_max_iter or 3) - 1
        ss = np.random.SeedSequence(seed)
        phi, n_old = None, 0
        for _ in range(rounds):
            rseed = int(ss.spawn(1)[0].generate_state(1)[0])
            out = runner.map(
                _sample_block,
                name="kmeans-init-sample",
                C=C,
                n_old=n_old,
                phi=phi,
                l=l,
                seed=rseed,
                token=token,
                n_total=int(runner.offsets[-1]),
            )
            n_old = len(C)
            phi = sum(o[0] for o in out)
            new = [o[1] for o in out if len(o[1])]
            if new:
                C = np.vstack([C] + new)
            if phi <= 0:
                break
        C = np.unique(C, axis=0)
        # The weighting pass also returns each candidate's sum of points, so the reclustered
        # candidates give a first M-step for free: center j = mean of the points whose
        # nearest candidate is in group j. Lloyd then usually converges in one pass.
        sums, weights, _ = _combine(
            runner.map(_assign_block, name="kmeans-init-weights", C=C, forget=token)
        )
        if len(C) <= k:
            if len(C) < k:
                # Fewer distinct candidates than clusters (heavily duplicated data): pad with
                # copies; Lloyd leaves the empty ones where they are.
                C = np.vstack([C, np.repeat(C[:1], k - len(C), axis=0)])
            return C
        keep = weights > 0
        if keep.sum() >= k:
            C, weights, sums = C[keep], weights[keep], sums[keep]
        km = SKKMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed % (2**31))
        km.fit(C, sample_weight=weights)
        centers = km.cluster_centers_.astype(np.float64)
        group_w = np.bincount(km.labels_, weights=weights, minlength=k)
        group_s = np.zeros_like(centers)
        np.add.at(group_s, km.labels_, sums)
        ok = group_w > 0
        centers[ok] = group_s[ok] / group_w[ok, None]
        return centers

    def _lloyd(self, runner, centers, tol):
        """Lloyd iterations, one pass each; empty clusters keep their previous center.

        The pass that detects convergence measured the inertia against the centers it was
        given; the returned inertia is that of the final (mean) centers for the same labels,
        ``inertia - sum_j w_j |new_j - old_j|^2`` (exact, by the parallel-axis identity), so
        no extra pass is needed.
        """
        n_iter = 0
        inertia = np.inf
        for n_iter in range(1, self.max_iter + 1):  # noqa: B007 - returned after the loop
            sums, counts, inertia = _combine(
                runner.map(_assign_block, name="kmeans-lloyd", C=centers)
            )
            new = centers.copy()
            nz = counts > 0
            new[nz] = sums[nz] / counts[nz, None]
            moved = ((new - centers) ** 2).sum(axis=1)
            centers = new
            inertia = max(inertia - float(counts @ moved), 0.0)
            if float(moved.sum()) <= tol:
                break
        return centers, inertia, n_iter

    # ------------------------------------------------------------------ predict & co
    def _check_X(self, X):
        check_is_fitted(self)
        X = validate_fitted_X(self, X)
        return X

    def predict(self, X):
        """Index of the closest center for each sample (lazy dask array for dask input).

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,), int32
        """
        X = self._check_X(X)
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        if is_dask_collection(X):
            X = as_dask(X)
            return X.map_blocks(
                _predict_block,
                C,
                dtype=np.int32,
                drop_axis=1,
                chunks=(X.chunks[0],),
                meta=np.empty((0,), dtype=np.int32),
            )
        if getattr(self, "_sk", None) is not None:
            return self._sk.predict(X)
        return _predict_block(X, C)

    def transform(self, X):
        """Distances to every center (lazy dask array for dask input).

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_clusters)
        """
        X = self._check_X(X)
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        if is_dask_collection(X):
            X = as_dask(X)
            return X.map_blocks(
                _transform_block,
                C,
                dtype=np.float64,
                chunks=(X.chunks[0], (len(C),)),
                meta=np.empty((0, 0), dtype=np.float64),
            )
        if getattr(self, "_sk", None) is not None:
            return self._sk.transform(X)
        return _transform_block(X, C)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X (for dask input: one reduction, computed eagerly).

        Returns
        -------
        float
        """
        X = self._check_X(X)
        w = self._check_weight(sample_weight, X)
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        if not is_dask_collection(X) and not is_dask_collection(w):
            if getattr(self, "_sk", None) is not None:
                return float(self._sk.score(X, sample_weight=w))
            return -float(_inertia_block(X, w, C)[0])
        Xd = as_dask(X)
        if w is None:
            parts = Xd.map_blocks(
                _inertia_block,
                None,
                C,
                dtype=np.float64,
                drop_axis=1,
                chunks=((1,) * Xd.numblocks[0],),
            )
        else:
            wd = as_dask(w).rechunk(Xd.chunks[0])
            parts = Xd.map_blocks(
                lambda xb, wb: _inertia_block(xb, wb, C),
                wd,
                dtype=np.float64,
                drop_axis=1,
                chunks=((1,) * Xd.numblocks[0],),
            )
        client = maybe_client(self.client)
        total = (
            client.compute(parts.sum()).result() if client is not None else parts.sum().compute()
        )
        return -float(total)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _combine(results):
    sums = [r[0] for r in results]
    total = None if sums[0] is None else np.sum(sums, axis=0)
    return total, np.sum([r[1] for r in results], axis=0), float(sum(r[2] for r in results))


def _n_workers(client):
    if client is None:
        return 2
    try:
        return max(1, len(scheduler_workers(client)))
    except Exception:  # pragma: no cover - a client that cannot answer: one block is fine
        return 1
