"""Run one function per row block on the cluster, with task names a person can read.

* :class:`BlockRunner`: the row-aligned arrays persisted once, then any number of passes of a
  small function over their blocks, one scheduler round trip each (Lloyd, k-means||);
* :func:`map_row_blocks`: one such pass over arrays that need not stay in memory (the
  blockwise reductions of :mod:`dasktrain.metrics`);
* :func:`blockwise_apply`: a fitted model applied lazily block by block, the model entering the
  graph once (dask-ml's ``ParallelPostFit``).

Every pass names its tasks with :func:`~.keys.task_keys` (``kmeans-lloyd-<uuid>-<i>``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .direct import DirectGroup, GroupLost, direct_enabled
from .keys import task_keys
from .rows import block_futures, row_blocks, row_chunked
from .waits import gather, scatter_data, wait_for

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = ["BlockRunner", "map_row_blocks", "blockwise_apply", "SCATTER_BYTES"]

#: Keyword arguments of :meth:`BlockRunner.map` larger than this (bytes) are scattered once
#: per pass instead of travelling inside every task (k-means|| candidates at 8192-d: MBs).
SCATTER_BYTES = 1 << 20


class BlockRunner:
    """Run one function per row block of row-aligned dask arrays.

    With ``persist=True`` (the default) the arrays are persisted once (a no-op when they
    already are): with a ``distributed`` client each :meth:`map` is then ``client.map`` over
    the block futures plus one ``gather``, one scheduler round trip per pass, with the small
    arguments (centers) shipped as plain numpy; without a client the passes run through
    ``dask.compute`` on the local scheduler. With ``persist=False`` every pass computes the
    blocks again (one pass over data that need not stay in memory).

    Parameters
    ----------
    arrays : list of dask arrays
        Chunked on rows only; rechunked to the row chunks of the first one. ``None`` entries
        are passed to the function as ``None``.
    client : distributed.Client or None
    persist : bool
    direct : str or None
        With a ``distributed`` client and ``persist=True``: drive the passes through a
        :class:`~.direct.DirectGroup` named ``direct`` (one long-running task per worker,
        connected straight to the client: no scheduler round trip per pass). Started at the
        first pass; when it cannot start or breaks, the passes go through ``client.map``
        (same results). Close the runner (or use it as a context manager) to end the group.
    """

    def __init__(self, arrays, client=None, *, persist=True, direct=None):
        self.client = client
        self._direct_name = direct
        self._group = None
        row_chunks = next(a for a in arrays if a is not None).chunks[0]
        arrays = [_with_row_chunks(a, row_chunks) for a in arrays]
        self.row_chunks = row_chunks
        self.offsets = np.concatenate([[0], np.cumsum(row_chunks)]).astype(np.int64)
        self._on_futures = persist and client is not None
        if persist:
            arrays = self._persist(arrays)
        self.arrays = arrays
        self.blocks = [
            [None] * self.n_blocks
            if a is None
            else (block_futures(a) if self._on_futures else row_blocks(a))
            for a in arrays
        ]

    @property
    def n_blocks(self):
        return len(self.row_chunks)

    @property
    def path(self) -> str:
        """How the last pass ran: ``"direct"`` (the direct group) or ``"scheduler"`` (tasks)."""
        return "direct" if self._group else "scheduler"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """End the direct group, if one runs (the persisted arrays stay)."""
        group, self._group = self._group, None
        if group:
            group.close()

    def _persist(self, arrays):
        import dask

        if self.client is None:
            live = iter(dask.persist(*[a for a in arrays if a is not None]))
            return [None if a is None else next(live) for a in arrays]
        return [None if a is None else self._persist_on_client(a) for a in arrays]

    def _persist_on_client(self, a):
        from distributed import futures_of

        have = {f.key for f in futures_of(a)}
        if not all(k in have for k in _flat_keys(a)):
            # Not persisted with this client yet: persist once, keep it for every pass.
            a = self.client.persist(a)
        wait_for(self.client, futures_of(a))
        return a

    def map(self, func, *, name=None, **kwargs):
        """Call ``func(*blocks_i, block_index=i, row_offset=o, **kwargs)`` for every block.

        The keyword arguments never reach ``client.map`` as keywords: distributed turns a
        keyword value over 100 kB into a graph node keyed by the argument's *name* (``'C'``),
        the same key in every call, which crashed the scheduler (``AssertionError: <TaskState
        'C' processing>``) and hung the client. They are bound with :func:`functools.partial`
        instead (one copy in the pickled graph); a value over ``SCATTER_BYTES`` is scattered
        once under a fresh key and passed as a future, so each worker fetches it once rather
        than once per task.

        Parameters
        ----------
        func : callable
            Module-level function (pickled by reference).
        name : str, optional
            Key prefix shown on the dashboard (``"kmeans-lloyd"``); ``func``'s name by
            default. Every call gets fresh keys (``<name>-<uuid>-<block>``): results of two
            calls are never shared.
        **kwargs
            Passed to every call of ``func``.

        Returns
        -------
        list
            ``func``'s results, in block order. An exception raised by ``func`` on a worker is
            raised here.
        """
        prefix = name or getattr(func, "__name__", "block").strip("_").replace("_", "-")
        keys = task_keys(prefix, self.n_blocks)
        idx = list(range(self.n_blocks))
        offs = [int(o) for o in self.offsets[:-1]]
        if not self._on_futures:
            return self._map_delayed(func, keys, idx, offs, kwargs)
        group = self._direct_group()
        if group:
            try:
                return group.map(func, self.n_blocks, kwargs)
            except GroupLost as exc:
                logger.warning("%s; this pass and the next go through the scheduler", exc)
                self.close()
        return self._map_futures(func, keys, idx, offs, kwargs)

    def _direct_group(self):
        """The running direct group; started at the first pass (False: not possible/asked)."""
        if self._group is None:
            self._group = False
            if self._direct_name and direct_enabled():
                group = DirectGroup(
                    self.client, self.blocks, self.offsets[:-1].tolist(), self._direct_name
                )
                self._group = group if group.start() else False
        return self._group

    def _map_delayed(self, func, keys, idx, offs, kwargs):
        import dask

        from .rows import compute_all

        bound = functools.partial(_call_block, func, (), **kwargs)
        tasks = [
            dask.delayed(bound, pure=False)(i, o, *[b[i] for b in self.blocks], dask_key_name=k)
            for i, o, k in zip(idx, offs, keys)
        ]
        return compute_all(tasks, client=self.client)

    def _map_futures(self, func, keys, idx, offs, kwargs):
        from dask.sizeof import sizeof

        large = [k for k, v in kwargs.items() if sizeof(v) > SCATTER_BYTES]
        small = {k: v for k, v in kwargs.items() if k not in large}
        # hash=False: a fresh key, so an equal value of an earlier pass being released cannot
        # take this one with it.
        shared = [scatter_data(self.client, kwargs[k], hash=False) for k in large]
        bound = functools.partial(_call_block, func, tuple(large), **small)
        futs = self.client.map(
            bound,
            idx,
            offs,
            *self.blocks,
            *[[f] * len(idx) for f in shared],
            key=keys,
            pure=False,
        )
        return gather(self.client, futs)


def _with_row_chunks(a, row_chunks):
    if a is None or a.chunks[0] == row_chunks:
        return a
    return a.rechunk({0: row_chunks})


def _flat_keys(a):
    from dask.core import flatten

    return list(flatten(a.__dask_keys__()))


def _call_block(func, shared_names, block_index, row_offset, *args, **kwargs):
    """One block: ``args`` are the blocks, then the values of ``shared_names`` (scattered)."""
    n_blocks = len(args) - len(shared_names)
    kwargs.update(zip(shared_names, args[n_blocks:]))
    return func(*args[:n_blocks], block_index=block_index, row_offset=row_offset, **kwargs)


def _without_position(func, *blocks, block_index, row_offset, **kwargs):
    return func(*blocks, **kwargs)


def map_row_blocks(
    func: Callable[..., Any], *arrays: Any, name: str, client: Client | None = None, **kwargs: Any
) -> list[Any]:
    """``[func(*blocks_i, **kwargs) for each row block i]``, computed in one pass.

    The arrays are not persisted: each block is computed, handed to ``func`` and released, so
    a pass over a large X holds only the small results. The keyword arguments are bound as in
    :meth:`BlockRunner.map`.

    Parameters
    ----------
    func : callable
        Module-level function of the blocks (``None`` for a ``None`` array).
    *arrays : dask arrays or None
        Chunked on rows only, with the same row chunks (see :func:`~.rows.align_rows`).
    name : str
        Key prefix shown on the dashboard.
    client : distributed.Client, optional
        Compute on this client; by default dask's current scheduler.

    Returns
    -------
    list, ``func``'s results in block order.
    """
    runner = BlockRunner(list(arrays), client, persist=False)
    return runner.map(functools.partial(_without_position, func), name=name, **kwargs)


def blockwise_apply(obj, method, X, *, dtype, n_columns=None, name=None):
    """Lazily apply ``getattr(obj, method)`` to each row block of dask array ``X``.

    ``obj`` enters the graph once (as one delayed key), never once per block (dask-ml #842).

    Parameters
    ----------
    obj : object
        Fitted estimator (or anything with ``method``).
    method : str
    X : dask array, chunked on rows only
    dtype : numpy dtype of the output
    n_columns : int or None
        None for a 1-d output, else the number of output columns.
    name : str, optional
        Key prefix on the dashboard; ``<method>-<class name>`` by default
        (``predict_proba-logisticregression``).
    """
    import dask
    import dask.array as da

    X = row_chunked(X)
    model = dask.delayed(obj, pure=True, traverse=False)
    token = name or f"{method}-{type(obj).__name__.lower()}"
    if n_columns is None:
        shape = {"drop_axis": list(range(1, X.ndim)), "chunks": (X.chunks[0],)}
        meta = np.empty((0,), dtype=dtype)
    else:
        shape = {"chunks": (X.chunks[0], (n_columns,))}
        meta = np.empty((0, 0), dtype=dtype)
    return da.map_blocks(
        _apply_method, X, model, method, dtype=dtype, meta=meta, token=token, **shape
    )


def _apply_method(block, model, method):
    return getattr(model, method)(block)
