"""The dask engine of :class:`~dasktrain.models.KMeans`: the passes over the blocks.

The data stays persisted on the workers (a :class:`~dasktrain._dask.BlockRunner`); every pass
sends only tiny numpy arrays (the current centers) to one small task per row block, and each
task (a kernel of :mod:`._kmeans_blocks`) returns per-block partial sums, counts and
inertia, which the client adds up. So every
Lloyd iteration and every k-means|| round is exactly one pass over the blocks and one
scheduler round trip, named on the dashboard (``kmeans-stats``, ``kmeans-init-sample``,
``kmeans-init-weights``, ``kmeans-lloyd``, ``kmeans-labels``).

The public estimator validates; the functions here assume valid input (scikit-learn's split
between ``KMeans`` and its private kernels).
"""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

import numpy as np

from ..exceptions import ValidationError
from ._kmeans_blocks import assign_block, first_row, label_block, sample_block, stats_block


def _combine(results):
    """Add up the ``(sums, counts, inertia)`` of every block."""
    sums = [r[0] for r in results]
    total = None if sums[0] is None else np.sum(sums, axis=0)
    return total, np.sum([r[1] for r in results], axis=0), float(sum(r[2] for r in results))


# --------------------------------------------------------------------------------------------
# passes (on the client: each runner.map is one pass over the blocks)
# --------------------------------------------------------------------------------------------


class FirstPass(NamedTuple):
    """What the first pass learns: tolerance scale, the picked rows, the first draws."""

    variance: float  # mean per-feature variance of X (scikit-learn's tol is relative to it)
    wxx: float  # sum of w |x|^2: with a pass's sums, the inertia of its mean centers
    rows: dict  # row index -> row, for init="random"
    draws: list  # per block, per run: the uniform first k-means|| draw


def first_pass(runner, *, picks, l, seeds, weighted):
    """Check the values, measure the variance and make the first draw, in one pass.

    The first k-means|| draw (about ``l`` rows per seed) and the rows ``picks`` of
    ``init="random"`` come with it: no separate round trip.

    Raises
    ------
    ValidationError
        NaN/inf in X or the weights, or a negative weight.
    """
    n = int(runner.offsets[-1])
    stats = runner.map(stats_block, name="kmeans-stats", picks=picks, n_total=n, l=l, seeds=seeds)
    if not all(s["finite"] for s in stats):
        raise ValidationError(
            "X (or sample_weight) contains NaN or infinite values; drop or impute them "
            "first (for example sklearn.impute.SimpleImputer)."
        )
    if weighted and min(s["wmin"] for s in stats) < 0:
        raise ValidationError("sample_weight has negative values; weights must be >= 0.")
    s1 = sum(s["s1"] for s in stats)
    s2 = sum(s["s2"] for s in stats)
    var = s2 / n - (s1 / n) ** 2
    return FirstPass(
        variance=float(np.mean(np.maximum(var, 0))),
        wxx=float(sum(s["wxx"] for s in stats)),
        rows={i: r for s in stats for i, r in s["rows"].items()},
        draws=[s["draws"] for s in stats],
    )


def _candidates(runner, first, l, seed, rounds):
    """k-means|| rounds after the first: candidates drawn with probability ~ l * w * d^2."""
    if first:
        C = np.vstack(first).astype(np.float64)
    else:
        rows = runner.map(first_row, name="kmeans-first-row")
        C = next(r for r in rows if r is not None)[None, :]
    token = uuid.uuid4().hex
    ss = np.random.SeedSequence(seed)
    phi, n_old = None, 0
    for _ in range(rounds):
        rseed = int(ss.spawn(1)[0].generate_state(1)[0])
        out = runner.map(
            sample_block,
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
    return np.unique(C, axis=0), token


def _recluster(C, weights, sums, k, seed):
    """Weighted k-means++ of the candidates, then one M-step from their sums of points."""
    from sklearn.cluster import KMeans as SKKMeans

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


def kmeans_parallel(runner, k, first, l, seed, rounds):
    """k-means|| (Bahmani et al. 2012): one pass per round, then weighted k-means++.

    The first round is the uniform draw of the first pass (``first``, empty when it found
    nothing: the init then starts from the first row of the first non-empty block). Round r
    then draws with probability ``l * w * d^2 / phi`` where phi is the cost against the
    candidates of the round before (one round stale: an over-estimate, so slightly fewer
    points are drawn; for the second round each block scales its own cost). Every round is
    one pass; each block only measures the candidates added since its previous round.
    """
    C, token = _candidates(runner, first, l, seed, rounds)
    # The weighting pass also returns each candidate's sum of points, so the reclustered
    # candidates give a first M-step for free: center j = mean of the points whose
    # nearest candidate is in group j. Lloyd then usually converges in one pass.
    sums, weights, _ = _combine(
        runner.map(assign_block, name="kmeans-init-weights", C=C, forget=token)
    )
    if len(C) < k:
        # Fewer distinct candidates than clusters (heavily duplicated data): pad with
        # copies; Lloyd leaves the empty ones where they are.
        return np.vstack([C, np.repeat(C[:1], k - len(C), axis=0)])
    if len(C) == k:
        return C
    return _recluster(C, weights, sums, k, seed)


def lloyd(runner, centers, tol, max_iter, wxx, on_pass=None):
    """Lloyd iterations, one pass each; empty clusters keep their previous center.

    A pass returns the (weighted) sums and counts of the points nearest to each center; the
    new centers are their means, and the inertia of those means for the same labels is
    ``wxx - sum_j |S_j|^2 / W_j`` (``wxx``: the data's sum of ``w |x|^2``), so no pass
    measures distances for the inertia. It is what picks the best of ``n_init`` runs; the
    final labelling pass measures the reported inertia exactly.

    ``on_pass(iteration=, metric="inertia", value=, shift=, ms=, path=)``, when given, is
    called after every pass (the live events of :class:`~dasktrain.models.KMeans`).

    Returns
    -------
    centers, inertia, n_iter
    """
    n_iter = 0
    inertia = np.inf
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - returned after the loop
        t0 = time.perf_counter()
        sums, counts, _ = _combine(runner.map(assign_block, name="kmeans-lloyd", C=centers))
        new = centers.copy()
        nz = counts > 0
        new[nz] = sums[nz] / counts[nz, None]
        moved = ((new - centers) ** 2).sum(axis=1)
        centers = new
        inertia = max(wxx - float(np.einsum("ij,ij->", sums[nz], new[nz])), 0.0)
        if on_pass is not None:
            ms, shift = (time.perf_counter() - t0) * 1e3, float(moved.sum())
            on_pass(
                iteration=n_iter,
                metric="inertia",
                value=inertia,
                shift=shift,
                ms=ms,
                path=runner.path,
            )
        if float(moved.sum()) <= tol:
            break
    return centers, inertia, n_iter


def final_labels(runner, centers):
    """One more pass over the persisted blocks: the labels and the exact inertia.

    Never recomputes X: for features of images that would read and decode every file again.

    Returns
    -------
    labels : ndarray of int32
    inertia : float
    """
    out = runner.map(label_block, name="kmeans-labels", C=centers)
    labels = np.concatenate([o[0] for o in out]).astype(np.int32, copy=False)
    return labels, float(sum(o[1] for o in out))
