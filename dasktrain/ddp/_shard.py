"""The torch side of :func:`~dasktrain.ddp.shard`: :class:`Shard` and :class:`ShardBatches`.

Imported by :func:`~dasktrain.ddp.shard` only (it imports torch; ``import dasktrain.ddp``
does not). The plan of an epoch is :mod:`._plan`'s; the chunks come from a source with one
method, ``stream(dataset, chunks, prefetch)``: the spool of the rank's worker
(:class:`~._feeder.SpoolSource`) or this process (:class:`~._chunks.LocalSource`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..exceptions import ValidationError
from . import _plan

__all__ = ["Shard", "ShardBatches"]

_READERS = itertools.count()


def _join(parts, window):
    """The rows of a window's pieces, one array per part (views when it is one piece)."""
    if len(window) == 1:
        p = window[0]
        return tuple(a[p.start : p.stop] for a in parts[0])
    n_parts = len(parts[0])
    return tuple(
        np.concatenate([chunk[j][p.start : p.stop] for chunk, p in zip(parts, window)])
        for j in range(n_parts)
    )


class Shard(IterableDataset):
    """This rank's part of a dataset of the job, read chunk by chunk: see :func:`shard`.

    Iterating gives one epoch of this rank's rows, as ``(x, y)`` tensors (one tensor for a
    one-part dataset); each ``iter()`` reads the next epoch (:meth:`set_epoch` sets it). Use
    it in a ``DataLoader(shard, batch_size=...)`` (``num_workers=0``: the chunks are decoded
    on the Dask worker already), or in :func:`~dasktrain.ddp.prepare_loader`, which reads
    whole batches (:meth:`batches`) and keeps the global batch rule.

    Attributes
    ----------
    name : str
    epoch : int
        The epoch the next ``iter()`` reads.
    rank, world_size : int
    shuffle, seed, even, window, prefetch
        As given to :func:`shard`.
    """

    def __init__(self, name, meta, source, *, rank, world_size, **options):
        self.name, self.meta, self.source = name, meta, source
        self.rank, self.world_size = rank, world_size
        self.shuffle = options["shuffle"]
        self.seed = options["seed"]
        self.even = options["even"]
        self.window = options["window"]
        self.prefetch = options["prefetch"]
        self.epoch = 0
        self._resume = None  # (epoch, rows, owners) from load_state_dict
        self._position = None  # [epoch, rows handed out, owners] while an epoch is read
        self._ahead = None  # (epoch, owners, stream) of the next epoch, asked for early
        self._reader = next(_READERS)  # this shard's streams replace each other, no other's

    def __repr__(self):
        return (
            f"Shard({self.name!r}, rank={self.rank}/{self.world_size}, rows={len(self)}, "
            f"chunks={len(self.meta['rows'])}, epoch={self.epoch})"
        )

    def __len__(self):
        """Rows this rank reads per epoch (``total // world_size`` when ``even``)."""
        return _plan.rank_rows(self.meta["rows"], self.world_size, self.rank, even=self.even)

    @property
    def classes(self):
        """The class names of an ImageSet dataset (None for other datasets)."""
        return self.meta.get("classes")

    @property
    def row_shapes(self):
        """The shape of one row of each part (``[(h, w, c), ()]`` for an ImageSet)."""
        return [tuple(s) for s in self.meta["shapes"]]

    def set_epoch(self, epoch):
        """The epoch the next ``iter()`` reads (its chunk order and shuffle)."""
        self.epoch = int(epoch)

    def plan(self, epoch=None, owners=None):
        """This rank's pieces ``(chunk, start, stop)`` of ``epoch``, in reading order."""
        epoch = self.epoch if epoch is None else epoch
        owners = self.meta["owners"] if owners is None else owners
        order = _plan.chunk_order(
            len(self.meta["rows"]), seed=self.seed, epoch=epoch, shuffle=self.shuffle
        )
        dealt = _plan.deal(self.meta["rows"], order, owners, self.world_size, even=self.even)
        return dealt[self.rank]

    def batches(self, batch_size):
        """The same epochs as whole batches of ``batch_size`` rows (the last may be short)."""
        return ShardBatches(self, batch_size)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        """Where the next row comes from: ``{"epoch", "rows", "owners", ...}`` (plain types).

        Save it with the model in a checkpoint taken mid-epoch; :meth:`load_state_dict` on the
        restarted job reads the rest of that epoch exactly, even when its chunks now live on
        other workers (``owners``: where they were when the epoch began).
        """
        if self._resume is not None:
            epoch, rows, owners = self._resume
        elif self._position is None or self._position[1] >= len(self):
            epoch = self.epoch if self._position is None else self._position[0] + 1
            rows, owners = 0, None
        else:
            epoch, rows, owners = self._position
        return {
            "dataset": self.name,
            "epoch": int(epoch),
            "rows": int(rows),
            "owners": None if owners is None else [int(o) for o in owners],
            "world_size": int(self.world_size),
            "chunks": len(self.meta["rows"]),
            "seed": int(self.seed),
            "shuffle": bool(self.shuffle),
        }

    def load_state_dict(self, state):
        """Resume from :meth:`state_dict`: the next ``iter()`` reads the rest of that epoch.

        Raises
        ------
        ValidationError
            The state is of another dataset (chunks), or of a run with another world size,
            seed or shuffle while in the middle of an epoch.
        """
        label = f"shard {self.name!r}"
        if int(state["chunks"]) != len(self.meta["rows"]):
            raise ValidationError(
                f"{label} has {len(self.meta['rows'])} chunks but the state was saved for "
                f"{state['chunks']}: it is of another dataset."
            )
        same = (int(state["world_size"]), int(state["seed"]), bool(state["shuffle"])) == (
            self.world_size, self.seed, self.shuffle,
        )  # fmt: skip
        if int(state["rows"]) and not same:
            raise ValidationError(
                f"{label}: the state was saved mid-epoch by a run with world size "
                f"{state['world_size']}, seed {state['seed']}, shuffle {state['shuffle']}; this "
                f"one has {self.world_size}, {self.seed}, {self.shuffle}. Resume with the same "
                "settings, or at the start of the epoch (state['rows'] = 0)."
            )
        self.epoch = int(state["epoch"])
        self._resume = (self.epoch, int(state["rows"]), state.get("owners"))

    # -- reading -------------------------------------------------------------------------------
    def _begin(self):
        """Start the next epoch: ``(epoch, rows to skip, owners)``."""
        if get_worker_info() is not None:
            raise ValidationError(
                f"shard {self.name!r} is read in a DataLoader worker process; use "
                "num_workers=0: its chunks are made on the Dask worker already, and each "
                "loader process would read the whole shard again."
            )
        epoch, rows, owners = self.epoch, 0, list(self.meta["owners"])
        self.epoch += 1
        if self._resume is not None and self._resume[0] == epoch:
            rows = self._resume[1]
            owners = self._resume[2] if self._resume[2] is not None else owners
        self._resume = None
        self._position = [epoch, rows, owners]
        return epoch, rows, owners

    def _stream(self, epoch, skip, owners, chunks):
        """The chunks of an epoch: the stream asked for early when it is this one, else new."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if (ahead[0], ahead[1]) == (epoch, owners) and skip == 0:
                return ahead[2]
            ahead[2].close()
        return self.source.stream(self.name, chunks, self.prefetch, self._reader)

    def _ask_ahead(self, epoch):
        """Have the next epoch's first chunks made while this one's last window is read.

        Without it every epoch would begin by waiting for its first window. (After the last
        epoch this makes ``prefetch`` chunks that are never read: the price of not knowing.)
        """
        owners = list(self.meta["owners"])
        if self._resume is not None or self._ahead is not None:
            return
        chunks = [p.chunk for p in self.plan(epoch, owners)]
        stream = self.source.stream(self.name, chunks, self.prefetch, self._reader)
        self._ahead = (epoch, owners, stream)

    def _windows(self, epoch, skip, owners):
        """``(arrays, order)`` per window still to read: its rows, and their reading order."""
        wins = _plan.windows(self.plan(epoch, owners), self.window)
        first, offset = _plan.skip(wins, skip)
        todo = wins[first:]
        stream = self._stream(epoch, skip, owners, [p.chunk for w in todo for p in w])
        try:
            for k, window in enumerate(todo):
                arrays = _join([next(stream) for _ in window], window)
                if k == len(todo) - 1:
                    self._ask_ahead(epoch + 1)  # every chunk of this epoch is read
                order = _plan.window_permutation(
                    window, seed=self.seed, epoch=epoch, shuffle=self.shuffle
                )
                yield arrays, order[offset:] if k == 0 else order
        finally:
            stream.close()

    def _hand(self, parts):
        """``parts`` as tensors, counted as read (for :meth:`state_dict`)."""
        self._position[1] += len(parts[0])
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(p)) for p in parts)
        return tensors if len(tensors) > 1 else tensors[0]

    def __iter__(self):
        epoch, skip, owners = self._begin()
        for arrays, order in self._windows(epoch, skip, owners):
            for i in order:
                self._position[1] += 1
                tensors = tuple(torch.from_numpy(np.ascontiguousarray(a[i])) for a in arrays)
                yield tensors if len(tensors) > 1 else tensors[0]
        self._position = None


class ShardBatches(IterableDataset):
    """A :class:`Shard` read as whole batches (``DataLoader(..., batch_size=None)``).

    Batches are consecutive runs of ``batch_size`` rows of the shard's epoch (across its
    windows); every rank of an ``even`` shard gets ``ceil(len(shard) / batch_size)`` of them.
    """

    def __init__(self, shard, batch_size):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValidationError(f"batch_size={batch_size!r} must be a positive integer.")
        self.shard, self.batch_size = shard, batch_size

    def __len__(self):
        return math.ceil(len(self.shard) / self.batch_size)

    def set_epoch(self, epoch):
        self.shard.set_epoch(epoch)

    def state_dict(self):
        return self.shard.state_dict()

    def load_state_dict(self, state):
        self.shard.load_state_dict(state)

    def __iter__(self):
        shard, b = self.shard, self.batch_size
        epoch, skip, owners = shard._begin()
        carry = None
        for arrays, order in shard._windows(epoch, skip, owners):
            pos = 0
            if carry is not None:
                take = order[: b - len(carry[0])]
                carry = tuple(np.concatenate([c, a[take]]) for c, a in zip(carry, arrays))
                pos = len(take)
                if len(carry[0]) < b:
                    continue  # a window smaller than what the batch still lacks
                yield shard._hand(carry)
                carry = None
            while len(order) - pos >= b:
                yield shard._hand(tuple(a[order[pos : pos + b]] for a in arrays))
                pos += b
            if pos < len(order):
                carry = tuple(a[order[pos:]] for a in arrays)
        if carry is not None:
            yield shard._hand(carry)
        shard._position = None
