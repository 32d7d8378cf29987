"""The per-block kernels of :class:`~dasktrain.models.KMeans`'s dask engine.

Each runs on one row block in a worker (a task of :class:`~dasktrain._dask.BlockRunner`, or a
pass of its direct path) and returns only small arrays: partial sums, counts, inertia, the
rows drawn. They are module-level so workers import them by reference; they are never
pickled with data. The passes that call them, on the client, are in :mod:`._kmeans_dask`;
:class:`Centers` and the ``*_block`` functions without an underscore also serve the fitted
estimator's lazy ``predict`` / ``transform`` / ``score``.
"""

from __future__ import annotations

import functools

import numpy as np


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


#: Bytes of one slice's temporaries (a (rows, k) float64 matrix). Under glibc's mmap threshold
#: (128 kB once MALLOC_TRIM_THRESHOLD_ is set, as Dask's nanny does for every worker), they
#: come from the heap and stay in cache; above it every slice is an mmap, a munmap and a page
#: fault per 4 kB, which made the same pass three times slower in a worker than in a plain
#: process.
_SLICE_BYTES = 64 * 1024


def _slice_rows(k, width=1):
    """Rows per slice so that a (rows, k * width) float64 temporary fits ``_SLICE_BYTES``."""
    return max(64, _SLICE_BYTES // (8 * max(1, k * width)))


def _min_sq_dist(X, C):
    """Nearest-center index and squared distance (clipped at 0) for every row."""
    n = len(X)
    labels = np.empty(n, dtype=np.intp)
    best = np.empty(n, dtype=np.float64)
    cn = np.einsum("ij,ij->i", C, C)[None, :]
    C2 = -2.0 * C.T
    rows = _slice_rows(len(C))
    for start in range(0, n, rows):
        sl = slice(start, start + rows)
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
_DIST_CACHE: dict = {}
_DIST_CACHE_MAX = 64


def _draw(rng, weights_x_l, scale):
    """Bernoulli draws with probability ``min(1, weights_x_l / scale)``."""
    if scale <= 0:
        return np.zeros(len(weights_x_l), dtype=bool)
    return rng.random(len(weights_x_l)) < np.minimum(1.0, weights_x_l / scale)


def stats_block(X, w, *, block_index, row_offset, picks, n_total, l, seeds):
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
        "wxx": float(wf @ _row_norms(Xf)) if finite else 0.0,
        "wmin": float(wf.min()) if len(wf) else 0.0,
        "rows": {row_offset + i: Xf[i].copy() for i in local},
        "draws": draws,
    }


def sample_block(X, w, *, block_index, row_offset, C, n_old, phi, l, seed, token, n_total):
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


def _sklearn_pass(X, w, C, update_centers):
    """One call of scikit-learn's fused, chunked Lloyd kernel on a block, or None.

    The kernel is private to scikit-learn (``_k_means_lloyd.lloyd_iter_chunked_dense``, the
    one its own Lloyd and ``predict`` run): two to four times faster than the same steps in
    numpy at 20 features. Any change of it (a rename, a new signature) gives None and the
    numpy way instead. Returns ``(labels, means, weights)``; the last two are None without
    ``update_centers`` (the weights are then only passed, never read: any weights do).
    """
    try:
        from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
    except ImportError:  # pragma: no cover - another scikit-learn
        return None
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    Xc = np.ascontiguousarray(X, dtype=dtype)
    wc = _ones(len(Xc), dtype) if w is None else np.ascontiguousarray(w, dtype=dtype)
    k = len(C)
    labels = np.empty(len(Xc), dtype=np.int32)
    means = weights = shift = None
    if update_centers:
        means = np.zeros((k, Xc.shape[1]), dtype=dtype)
        weights, shift = np.zeros(k, dtype=dtype), np.zeros(k, dtype=dtype)
    Cc = np.ascontiguousarray(C, dtype=dtype)
    try:
        lloyd_iter_chunked_dense(
            Xc, wc, Cc, means, weights, labels, shift, 1, update_centers=update_centers
        )
    except (TypeError, ValueError):  # pragma: no cover - another signature
        return None
    return labels, means, weights


def _labels_sklearn(X, w, C):
    """Nearest centers by scikit-learn's kernel (labels only), or None: :func:`_min_sq_dist`
    then gives the same labels."""
    done = _sklearn_pass(X, w, C, update_centers=False)
    return None if done is None else done[0]


def _lloyd_sklearn(X, w, C):
    """One Lloyd pass over a block in scikit-learn's kernel, labels and sums together:
    ``(sums, counts, 0.0)`` as :func:`assign_block` returns them, or None.

    The kernel's new centers are the members' weighted means, so their sums are the means
    times the clusters' weights. It also moves an empty cluster's center to a far point (its
    own Lloyd's rule), which is wrong for one block of many: a block where a cluster has no
    member goes the slower way (None), as does another scikit-learn. A 25,000 x 20 block,
    k=8: 1.16 ms, against 1.34 ms for the labels and the sums in numpy slices (0.79 + 0.03 +
    0.52 ms) and 1.06 ms for scikit-learn's own iteration of the same block.
    """
    done = _sklearn_pass(X, w, C, update_centers=True)
    if done is None:
        return None
    labels, means, weights = done
    if np.bincount(labels, minlength=len(C)).min() == 0:
        return None  # an empty cluster was relocated inside this block
    weights = weights.astype(np.float64)
    return means.astype(np.float64) * weights[:, None], weights, 0.0


@functools.lru_cache(maxsize=8)
def _ones(n, dtype):
    out = np.ones(n, dtype=dtype)
    out.flags.writeable = False
    return out


def _nearest(X, w, C):
    """Index of the nearest center of every row (int32)."""
    if len(X) == 0:
        return np.empty(0, dtype=np.int32)
    labels = _labels_sklearn(X, w, C)
    if labels is None:  # pragma: no cover - exercised when scikit-learn's kernel is absent
        labels = _min_sq_dist(X.astype(np.float64, copy=False), C)[0].astype(np.int32)
    return labels


def _member_sums(X, w, labels, k):
    """Per-cluster (weighted) sums of the rows: one-hot (k, rows) @ rows, slice by slice.

    A float32 block is summed in float32 within a slice (at most a few thousand rows) and in
    float64 across slices: no float64 copy of the block on every pass.
    """
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    X = X.astype(dtype, copy=False)
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    ks = np.arange(k, dtype=labels.dtype)[:, None]
    rows = _slice_rows(k)
    for start in range(0, len(X), rows):
        sl = slice(start, start + rows)
        member = (labels[sl] == ks).astype(dtype)
        if w is not None:
            member *= w[sl]
        sums += member @ X[sl]
    return sums


def assign_block(X, w, *, block_index, row_offset, C, sums=True, forget=None):
    """One Lloyd pass over a block: nearest centers; returns weighted (sums, counts, 0.0).

    The inertia is not measured per pass: Lloyd gets it from the sums (see :func:`lloyd`) and
    the final labelling pass measures it exactly.
    """
    if forget is not None:
        _DIST_CACHE.pop((forget, block_index), None)
    if sums and len(X):
        fused = _lloyd_sklearn(X, w, C)
        if fused is not None:
            return fused
    labels = _nearest(X, w, C)
    wf = None if w is None else w.astype(np.float64, copy=False)
    k = len(C)
    counts = np.bincount(labels, weights=wf, minlength=k).astype(np.float64)
    if not sums:
        return None, counts, 0.0
    return _member_sums(X, wf, labels, k), counts, 0.0


def first_row(X, w, *, block_index, row_offset):
    return X[0].astype(np.float64) if len(X) else None


def label_block(X, w, *, block_index, row_offset, C):
    """The final pass: labels and this block's exact (clipped) inertia."""
    labels, d2 = _min_sq_dist(X.astype(np.float64, copy=False), C)
    inertia = float(d2.sum() if w is None else w.astype(np.float64, copy=False) @ d2)
    return labels.astype(np.int32), inertia


def predict_block(X, C):
    return _partial_dist(X.astype(np.float64, copy=False), C).argmin(axis=1).astype(np.int32)


def transform_block(X, C):
    return np.sqrt(_sq_dist(X, C))


class Centers:
    """Fitted centers as a small picklable predictor: it enters a lazy graph once."""

    def __init__(self, C):
        self.C = C

    def predict(self, X):
        return predict_block(X, self.C)

    def transform(self, X):
        return transform_block(X, self.C)


def inertia_block(X, w, C):
    _, d2 = _min_sq_dist(X.astype(np.float64, copy=False), C)
    return np.array([d2.sum() if w is None else float(w @ d2)])
