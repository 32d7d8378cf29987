"""Which rows each rank reads in an epoch: the seeded chunk order, the deal, the windows.

Pure functions of a few small numbers (the rows of each chunk, the rank that holds a chunk,
the seed, the epoch, the world size), so every rank computes the whole epoch's plan alike
and alone, and the local twin (world size 1) computes the same order without any rank:

1. :func:`chunk_order`: the epoch's order of the chunks across the whole dataset, a seeded
   permutation that differs from epoch to epoch (or the natural order, unshuffled);
2. :func:`deal`: the chunks, in that order, dealt to the ranks. A chunk whose holder is a rank
   of the job goes to that rank while it has room (locality: it is read from the worker's own
   memory); the others go to the rank with the most room left, split at the quota when they
   do not fit, so every rank gets exactly ``total // world_size`` rows (``even``: the last
   ``total % world_size`` rows of the order are left out that epoch, fewer than one per rank)
   or every row once (not ``even``: ranks differ by one row at most). Equal rows mean equal
   steps: no rank waits in an all-reduce for a rank that has finished its epoch;
3. :func:`windows`: a rank's pieces in groups of ``size``; the rows of a window are shuffled
   together (:func:`window_permutation`, seeded by the epoch and the window's first piece), so
   a batch mixes the rows of ``size`` chunks while the rank holds only those chunks;
4. :func:`skip`: where a resumed epoch starts again: whole windows are skipped without being
   read.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Piece", "chunk_order", "deal", "windows", "window_permutation", "skip", "rank_rows"]


class Piece(NamedTuple):
    """Rows ``start:stop`` of chunk ``chunk`` (a whole chunk unless it was split at a quota)."""

    chunk: int
    start: int
    stop: int

    @property
    def rows(self):
        return self.stop - self.start


def chunk_order(n_chunks, *, seed, epoch, shuffle):
    """The epoch's order of the chunks (a seeded permutation, or ``0..n-1`` unshuffled)."""
    if not shuffle:
        return np.arange(n_chunks)
    return np.random.default_rng([seed, epoch, 0]).permutation(n_chunks)


def _quotas(rows, world_size, even):
    total = int(sum(rows))
    q, extra = divmod(total, world_size)
    return [q + (0 if even else int(r < extra)) for r in range(world_size)]


def rank_rows(rows, world_size, rank, *, even):
    """Rows rank ``rank`` reads per epoch (the same every epoch)."""
    return _quotas(rows, world_size, even)[rank]


def deal(rows, order, owners, world_size, *, even):
    """Every rank's pieces for one epoch, each rank's in the epoch's chunk order.

    Parameters
    ----------
    rows : sequence of int
        Rows of each chunk.
    order : sequence of int
        The epoch's chunk order (:func:`chunk_order`).
    owners : sequence of int or None
        The rank whose worker holds each chunk (-1: none of the job's ranks, or lazy data).
    world_size : int
    even : bool
        Exactly ``total // world_size`` rows per rank (the remainder left out), or every row.

    Returns
    -------
    list (one per rank) of lists of :class:`Piece`
    """
    rows = [int(r) for r in rows]
    room = _quotas(rows, world_size, even)
    placed = [[] for _ in range(world_size)]
    rest = []
    for pos, c in enumerate(int(c) for c in order):
        owner = -1 if owners is None else int(owners[c])
        if 0 <= owner < world_size and rows[c] <= room[owner]:
            placed[owner].append((pos, Piece(c, 0, rows[c])))
            room[owner] -= rows[c]
        else:
            rest.append((pos, c))
    for pos, c in rest:
        start = 0
        while start < rows[c]:
            # the most room first, the lower rank on a tie: the same answer on every rank
            r = max(range(world_size), key=lambda k: (room[k], -k))
            if room[r] == 0:
                break  # the remainder of an even deal
            take = min(room[r], rows[c] - start)
            placed[r].append((pos, Piece(c, start, start + take)))
            room[r] -= take
            start += take
    return [[p for _, p in sorted(ps, key=lambda t: (t[0], t[1].start))] for ps in placed]


def windows(pieces, size):
    """``pieces`` in consecutive groups of ``size`` (the last may be shorter)."""
    return [pieces[i : i + size] for i in range(0, len(pieces), size)]


def window_permutation(window, *, seed, epoch, shuffle):
    """The order in which the rows of ``window`` (its pieces concatenated) are read."""
    n = sum(p.rows for p in window)
    if not shuffle:
        return np.arange(n)
    first = window[0]
    return np.random.default_rng([seed, epoch, 1 + first.chunk, first.start]).permutation(n)


def skip(wins, rows):
    """``(first window to read, rows to skip in it)`` after ``rows`` rows were read."""
    for i, window in enumerate(wins):
        n = sum(p.rows for p in window)
        if rows < n:
            return i, rows
        rows -= n
    return len(wins), 0
