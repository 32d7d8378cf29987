"""Arrays chunked along rows: make them, align them, persist them, bring them back.

Every dask array dasktrain works on is chunked along the sample axis only (a block holds whole
rows). This module owns the moves between numpy, lazy dask and persisted dask for such arrays:

* :func:`compute_if_dask` / :func:`compute_all`: a concrete value from a dask collection, the
  rest passed through (the one spelling of "compute it if it is a dask collection");
* :func:`row_chunked`: a numpy or dask array as a dask array chunked on rows only;
* :func:`align_rows`: several arrays with the same row chunks (numpy ones wrapped to match);
* :func:`row_blocks`: the row blocks of an array as delayed objects, in order;
* :func:`split_rows`: consecutive pieces of at most ``size`` rows of anything sliceable;
* :func:`to_cluster`: numpy arrays persisted on the cluster, so many blocks per worker;
* :func:`balanced_persist`: persisted so that every worker holds at least one row block;
* :func:`gather_rows`: dask arrays back to numpy, each block gathered straight to the client.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import check_known_chunks, is_dask_collection, n_samples
from ..exceptions import ValidationError
from .client import maybe_client, scheduler_workers
from .waits import gather, wait_for

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = [
    "compute_if_dask",
    "compute_all",
    "row_chunked",
    "align_rows",
    "row_blocks",
    "row_keys",
    "block_futures",
    "split_rows",
    "to_cluster",
    "balanced_persist",
    "gather_rows",
]


def compute_all(
    values: Iterable[Any], *, client: Client | None = None, scheduler: str | None = None
) -> list[Any]:
    """``values`` with every dask collection computed, in one call (shared inputs read once).

    Parameters
    ----------
    values : list
        Anything; dask collections are computed, the rest (numpy, None) returned unchanged.
    client : distributed.Client, optional
        Compute on this client (which need not be the default one).
    scheduler : str, optional
        Dask scheduler for a computation without ``client`` (``"threads"`` keeps it in this
        process); by default the current one (the default client when there is one).

    Returns
    -------
    list, in the order of ``values``.

    Raises
    ------
    WorkersPausedError
        The computation waited on workers paused for memory (:mod:`.waits`).
    """
    import dask

    values = list(values)
    lazy = [i for i, v in enumerate(values) if is_dask_collection(v)]
    if not lazy:
        return values
    todo = [values[i] for i in lazy]
    if client is None and scheduler is None:
        client = _default_distributed_client()
    if client is not None:
        done = gather(client, client.compute(todo))
    else:
        done = dask.compute(*todo, scheduler=scheduler)
    for i, value in zip(lazy, done):
        values[i] = value
    return values


def _default_distributed_client():
    """The client ``dask.compute`` would use here, or None: so that its wait is watched.

    None inside a task (a worker's own computations are the worker's business) and where the
    dask configuration names another scheduler.
    """
    import dask

    if dask.config.get("scheduler", None) is not None:
        return None
    try:
        from distributed import get_worker

        get_worker()
        return None
    except (ImportError, ValueError):
        pass
    return maybe_client()


def compute_if_dask(value: Any, *, client: Any = None, scheduler: Any = None) -> Any:
    """``value`` computed when it is a dask collection, else ``value`` itself (None stays None).

    See :func:`compute_all` for ``client`` and ``scheduler``.
    """
    return compute_all([value], client=client, scheduler=scheduler)[0]


def row_chunked(X, n_blocks=None, name="X"):
    """``X`` as a dask array chunked on rows only (a numpy ``X`` is split in ``n_blocks``).

    A dask ``X`` must have known chunk sizes; one chunked along columns too is rechunked to
    whole rows.
    """
    import dask.array as da

    if is_dask_collection(X):
        check_known_chunks(X, name)
        if X.ndim >= 2 and any(len(c) > 1 for c in X.chunks[1:]):
            X = X.rechunk({i: -1 for i in range(1, X.ndim)})
        return X
    X = np.asarray(X)
    n = X.shape[0]
    n_blocks = max(1, min(n_blocks or 1, n))
    rows = math.ceil(n / n_blocks)
    chunks = (rows,) + tuple(-1 for _ in X.shape[1:])
    return da.from_array(X, chunks=chunks)


def align_rows(*arrays: Any, names: Sequence[str]) -> list[Any]:
    """Dask arrays with the same row chunks as the first dask one (numpy ones wrapped to match).

    Parameters
    ----------
    *arrays : numpy arrays, dask arrays or None
        At least one is a dask array. None entries stay None.
    names : list of str
        The argument name of each array, for the messages.

    Raises
    ------
    ValidationError
        Unknown chunk sizes, or arrays of different lengths.
    """
    import dask.array as da

    i_ref = next(i for i, a in enumerate(arrays) if a is not None and is_dask_collection(a))
    ref = arrays[i_ref]
    n = n_samples(ref, names[i_ref])
    out: list[Any] = []
    for a, name in zip(arrays, names):
        if a is None:
            out.append(None)
            continue
        if is_dask_collection(a):
            check_known_chunks(a, name)
        else:
            a = np.asarray(a)
        if a.shape[0] != n:
            raise ValidationError(
                f"{names[0]} has {n} samples but {name} has {a.shape[0]}; "
                "they must have the same length."
            )
        chunks = (ref.chunks[0],) + tuple((s,) for s in a.shape[1:])
        a = a.rechunk(chunks) if is_dask_collection(a) else da.from_array(a, chunks=chunks)
        out.append(a)
    return out


def row_blocks(a):
    """The row blocks of dask array ``a`` as delayed objects, in row order.

    ``a`` must be chunked along rows only (see :func:`row_chunked`).
    """
    delayed = a.to_delayed()
    return list(delayed.ravel()) if a.ndim == 1 else [row[(0,) * (a.ndim - 1)] for row in delayed]


def split_rows(values, size):
    """Consecutive pieces of at most ``size`` rows (items) of an array or a list."""
    size = max(1, int(size))
    return [values[i : i + size] for i in range(0, len(values), size)]


def to_cluster(client, *arrays, n_blocks):
    """numpy arrays as dask arrays of ``n_blocks`` row blocks, persisted on the cluster.

    What a comparison gives the dask engine when its input is numpy: the data already on the
    workers (not part of the timed step), one block per worker thread.

    Returns
    -------
    list of dask arrays backed by futures, in the order of ``arrays``.
    """
    out = client.persist([row_chunked(a, n_blocks=n_blocks) for a in arrays])
    wait_for(client, out)
    return out


def _identity(x):
    return x


def row_keys(a):
    """The task keys of the row blocks of dask array ``a`` (chunked on rows only), in order."""
    return [_first_leaf(k) for k in a.__dask_keys__()]


def _first_leaf(key):
    while isinstance(key, list):
        key = key[0]
    return key


def block_futures(a):
    """The futures of the row blocks of a persisted dask array ``a``, in row order."""
    from distributed import futures_of

    have = {f.key: f for f in futures_of(a)}
    return [have[k] for k in row_keys(a)]


def _even_row_chunks(a, n_workers):
    """``a``'s row chunks, or one block per worker when it has fewer blocks than workers."""
    n, row_chunks = a.shape[0], a.chunks[0]
    if len(row_chunks) < n_workers and n >= n_workers:
        base, extra = divmod(n, n_workers)
        row_chunks = tuple(base + (i < extra) for i in range(n_workers))
    return row_chunks


def _blocks_to_move(client, first, workers):
    """Indices of the blocks held beyond their worker's fair share, and the load per worker."""
    who = client.who_has(first)
    holders = [(who.get(f.key) or (None,))[0] for f in first]
    quota = -(-len(first) // len(workers))
    load = {w: 0 for w in workers}
    move = []
    for i, h in enumerate(holders):
        if h in load and load[h] < quota:
            load[h] += 1
        else:
            move.append(i)
    return move, load


def _move_blocks(client, blocks, move, load):
    """Copy the blocks ``move`` (of every array) to the least loaded workers."""
    token = uuid.uuid4().hex
    for i in move:
        target = min(load, key=load.get)
        load[target] += 1
        for j, b in enumerate(blocks):
            if b is not None:
                b[i] = client.submit(
                    _identity,
                    b[i],
                    workers=[target],
                    allow_other_workers=False,
                    pure=False,
                    key=f"rebalance-{token}-{j}-{i}",
                )


def _from_futures(a, futures):
    import dask.array as da

    parts = [
        da.from_delayed(f, shape=(rows,) + a.shape[1:], dtype=a.dtype)
        for f, rows in zip(futures, a.chunks[0])
    ]
    return da.concatenate(parts, axis=0)


def balanced_persist(client, arrays):
    """Persist row-aligned dask arrays so that every worker holds at least one row block.

    xgboost.dask trains only on the workers that hold data, so an unbalanced layout silently
    wastes workers. Fewer blocks than workers: the rows are re-split into one block per
    worker. After ``client.persist`` the placement is read back with ``who_has``; blocks on
    over-full workers are copied to the emptiest ones (``client.rebalance`` would not move
    small data: it only acts above a memory threshold).

    Parameters
    ----------
    client : distributed.Client
    arrays : list of dask arrays or None, same number of rows

    Returns
    -------
    list of dask arrays backed by futures (None entries stay None)
    """
    workers = sorted(scheduler_workers(client))
    row_chunks = _even_row_chunks(next(a for a in arrays if a is not None), len(workers))
    arrays = [
        None if a is None else a.rechunk({0: row_chunks, **{i: -1 for i in range(1, a.ndim)}})
        for a in arrays
    ]
    live = iter(client.persist([a for a in arrays if a is not None]))
    arrays = [None if a is None else next(live) for a in arrays]
    blocks = [None if a is None else block_futures(a) for a in arrays]
    wait_for(client, [f for b in blocks if b for f in b])
    move, load = _blocks_to_move(client, next(b for b in blocks if b is not None), workers)
    if not move:
        return arrays
    _move_blocks(client, blocks, move, load)
    wait_for(client, [f for b in blocks if b for f in b])
    logger.debug("moved %d blocks to balance %d workers", len(move), len(workers))
    return [None if a is None else _from_futures(a, b) for a, b in zip(arrays, blocks)]


def gather_rows(arrays: Sequence[Any], client: Client | None = None) -> list[Any]:
    """Compute dask arrays chunked along axis 0 into numpy, gathering the blocks here.

    ``Array.compute()`` on a cluster concatenates the chunks in a task on one worker, which
    first pulls every other worker's chunks and then sends the whole array to the client: a
    serial tail that costs a third of the read time on 2 workers. Gathering the blocks
    straight to the client, each as soon as it is ready (so transfers overlap the computing of
    later blocks), and concatenating here moves each byte once. An array also chunked along
    another axis (a user rechunked it) is computed the ordinary way.

    Parameters
    ----------
    arrays : list of dask arrays
    client : distributed.Client, optional
        Compute on this client; by default dask's current scheduler.
    """
    parts = [row_blocks(a) if all(n == 1 for n in a.numblocks[1:]) else None for a in arrays]
    flat = [d for a, p in zip(arrays, parts) for d in (p if p is not None else [a])]
    results = _as_they_finish(flat, client) if client is not None else compute_all(flat)
    out, i = [], 0
    for p in parts:
        n = 1 if p is None else len(p)
        chunk = results[i : i + n]
        i += n
        out.append(np.asarray(chunk[0]) if p is None else np.concatenate(chunk, axis=0))
    return out


def _as_they_finish(tasks, client):
    """Compute ``tasks`` on ``client``, gathering the results as soon as they are ready."""
    futures = client.compute(tasks)
    index = {f.key: i for i, f in enumerate(futures)}
    results = [None] * len(futures)
    pending = futures
    while pending:
        done, pending = wait_for(client, pending, return_when="FIRST_COMPLETED")
        for future, value in zip(done, client.gather(done)):
            results[index[future.key]] = value
    return results
