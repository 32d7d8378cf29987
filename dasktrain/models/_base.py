"""Plumbing shared by the model modules: engine dispatch, client lookup, block runners.

Two concerns live here and nowhere else in :mod:`dasktrain.models` (client lookup lives in
:mod:`dasktrain._dask`, re-exported here for the model modules):

* :class:`BlockRunner` runs one small function per row block of persisted dask arrays and
  gathers the (small) results: one scheduler round trip per pass. The iterative algorithms
  (Lloyd, k-means||) call it once per pass with tiny numpy arguments (centers), which is what
  makes them fast compared with building a new dask graph for every step;
* :func:`blockwise_apply` is dask-ml's ``ParallelPostFit`` idea: a fitted estimator applied
  lazily block by block, the estimator entering the graph once as a single key.
"""

from __future__ import annotations

import functools
import logging
import math
import uuid

import numpy as np

from .._dask import (  # noqa: F401  (re-exported for the model modules)
    get_client,
    maybe_client,
    scheduler_workers,
    using_client,
)
from .._dask import (
    total_threads as worker_threads,
)
from .._validation import check_known_chunks, is_dask_collection
from ..exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = [
    "get_client",
    "maybe_client",
    "BlockRunner",
    "blockwise_apply",
    "as_dask",
    "worker_threads",
    "strip_client_state",
]


def strip_client_state(state):
    """``__getstate__`` helper: a client is never pickled with a model."""
    state = dict(state)
    if "client" in state:
        state["client"] = None
    return state


def as_dask(X, n_blocks=None, name="X"):
    """Return ``X`` as a dask array chunked on rows only (numpy input is split in ``n_blocks``)."""
    import dask.array as da

    if is_dask_collection(X):
        check_known_chunks(X, name)
        if X.ndim == 2 and len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        return X
    X = np.asarray(X)
    n = X.shape[0]
    n_blocks = max(1, min(n_blocks or 1, n))
    rows = math.ceil(n / n_blocks)
    chunks = (rows,) + tuple(-1 for _ in X.shape[1:])
    return da.from_array(X, chunks=chunks)


class BlockRunner:
    """Run one function per row block of persisted, row-aligned dask arrays.

    With a ``distributed`` client the arrays are persisted once (a no-op when they already
    are) and each :meth:`map` is ``client.map`` over the block futures plus one ``gather``:
    one scheduler round trip per pass, with the small arguments (centers) shipped as plain
    numpy. Without a client the same passes run through ``dask.compute`` on the local
    scheduler.

    Parameters
    ----------
    arrays : list of dask arrays
        Same row chunks; ``None`` entries are passed to the function as ``None``.
    client : distributed.Client or None
    """

    def __init__(self, arrays, client=None):
        import dask

        self.client = client
        present = [a for a in arrays if a is not None]
        row_chunks = present[0].chunks[0]
        arrays = [
            None if a is None else (a if a.chunks[0] == row_chunks else a.rechunk({0: row_chunks}))
            for a in arrays
        ]
        self.row_chunks = row_chunks
        self.offsets = np.concatenate([[0], np.cumsum(row_chunks)]).astype(np.int64)
        if client is not None:
            persisted = [None if a is None else self._persist_distributed(a) for a in arrays]
            self.arrays = [p[0] if p else None for p in persisted]
            self.blocks = [p[1] if p else [None] * len(row_chunks) for p in persisted]
        else:
            live = dask.persist(*[a for a in arrays if a is not None])
            it = iter(live)
            self.arrays = [None if a is None else next(it) for a in arrays]
            self.blocks = [
                [None] * len(row_chunks) if a is None else list(a.to_delayed().ravel())
                for a in self.arrays
            ]

    @property
    def n_blocks(self):
        return len(self.row_chunks)

    def _persist_distributed(self, a):
        from dask.core import flatten
        from distributed import futures_of, wait

        keys = list(flatten(a.__dask_keys__()))
        have = {f.key: f for f in futures_of(a)}
        if not all(k in have for k in keys):
            # Not persisted with this client yet: persist once, keep it for every pass.
            a = self.client.persist(a)
            have = {f.key: f for f in futures_of(a)}
        futs = [have[k] for k in keys]
        with self.client.as_current():  # wait() looks up the default client
            wait(futs)
        return a, futs

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
        from dask.sizeof import sizeof

        idx = list(range(self.n_blocks))
        offs = [int(o) for o in self.offsets[:-1]]
        prefix = name or getattr(func, "__name__", "block").strip("_").replace("_", "-")
        token = uuid.uuid4().hex
        keys = [f"{prefix}-{token}-{i}" for i in idx]
        if self.client is None:
            import dask

            bound = functools.partial(_call_block, func, (), **kwargs)
            tasks = [
                dask.delayed(bound, pure=False)(i, o, *[b[i] for b in self.blocks], dask_key_name=k)
                for i, o, k in zip(idx, offs, keys)
            ]
            return list(dask.compute(*tasks))
        large = [k for k, v in kwargs.items() if sizeof(v) > SCATTER_BYTES]
        small = {k: v for k, v in kwargs.items() if k not in large}
        # hash=False: a fresh key, so an equal value of an earlier pass being released cannot
        # take this one with it.
        shared = [self.client.scatter(kwargs[k], hash=False) for k in large]
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
        return self.client.gather(futs)


#: Keyword arguments of :meth:`BlockRunner.map` larger than this (bytes) are scattered once
#: per pass instead of travelling inside every task (k-means|| candidates at 8192-d: MBs).
SCATTER_BYTES = 1 << 20


def _call_block(func, shared_names, block_index, row_offset, *args, **kwargs):
    """One block: ``args`` are the blocks, then the values of ``shared_names`` (scattered)."""
    n_blocks = len(args) - len(shared_names)
    kwargs.update(zip(shared_names, args[n_blocks:]))
    return func(*args[:n_blocks], block_index=block_index, row_offset=row_offset, **kwargs)


def blockwise_apply(obj, method, X, *, dtype, n_columns=None):
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
    """
    import dask
    import dask.array as da

    X = as_dask(X)
    model = dask.delayed(obj, pure=True, traverse=False)
    if n_columns is None:
        return da.map_blocks(
            _apply_method,
            X,
            model,
            method,
            dtype=dtype,
            drop_axis=list(range(1, X.ndim)),
            chunks=(X.chunks[0],),
            meta=np.empty((0,), dtype=dtype),
        )
    return da.map_blocks(
        _apply_method,
        X,
        model,
        method,
        dtype=dtype,
        chunks=(X.chunks[0], (n_columns,)),
        meta=np.empty((0, 0), dtype=dtype),
    )


def _apply_method(block, model, method):
    return getattr(model, method)(block)


def _identity(x):
    return x


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
    import dask.array as da
    from distributed import futures_of, wait

    workers = sorted(scheduler_workers(client))
    present = [a for a in arrays if a is not None]
    n = present[0].shape[0]
    nw = len(workers)
    row_chunks = present[0].chunks[0]
    if len(row_chunks) < nw and n >= nw:
        base, extra = divmod(n, nw)
        row_chunks = tuple(base + (i < extra) for i in range(nw))
    arrays = [
        None if a is None else a.rechunk({0: row_chunks, **{i: -1 for i in range(1, a.ndim)}})
        for a in arrays
    ]
    live = client.persist([a for a in arrays if a is not None])
    it = iter(live)
    arrays = [None if a is None else next(it) for a in arrays]

    def block_futures(a):
        have = {f.key: f for f in futures_of(a)}
        keys = a.__dask_keys__()
        keys = keys if a.ndim == 1 else [row[0] for row in keys]
        return [have[k] for k in keys]

    blocks = [None if a is None else block_futures(a) for a in arrays]
    with client.as_current():  # wait() looks up the default client
        wait([f for b in blocks if b for f in b])
    first = next(b for b in blocks if b is not None)
    who = client.who_has(first)
    holders = [(who.get(f.key) or (None,))[0] for f in first]
    quota = -(-len(first) // nw)
    load = {w: 0 for w in workers}
    move = []
    for i, h in enumerate(holders):
        if h in load and load[h] < quota:
            load[h] += 1
        else:
            move.append(i)
    if not move:
        return arrays
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
    with client.as_current():
        wait([f for b in blocks if b for f in b])
    logger.debug("moved %d of %d blocks to balance %d workers", len(move), len(first), nw)
    out = []
    for a, b in zip(arrays, blocks):
        if a is None:
            out.append(None)
            continue
        parts = [
            da.from_delayed(f, shape=(rows,) + a.shape[1:], dtype=a.dtype)
            for f, rows in zip(b, a.chunks[0])
        ]
        out.append(da.concatenate(parts, axis=0))
    return out


def validate_X(X, *, name="X", allow_nan=False):
    """Check a feature matrix: dasktrain's dask-aware check for dask, scikit-learn's for the rest.

    scikit-learn's messages for numpy input ("Reshape your data", "Input X contains NaN",
    sparse input not supported) are the ones users and ``estimator_checks`` expect; its
    ValueErrors are re-raised as :class:`ValidationError` (a ValueError too).
    """
    if is_dask_collection(X):
        from .._validation import check_array

        return check_array(X, name=name, ndim=2, allow_nan=allow_nan)
    from sklearn.utils.validation import check_array as sk_check_array

    try:
        return sk_check_array(
            X, ensure_all_finite="allow-nan" if allow_nan else True, input_name=name
        )
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(str(exc)) from exc


def validate_fitted_X(estimator, X, *, name="X"):
    """``validate_X`` for a fitted estimator: also checks the number of features it was fit on.

    The NaN check of a dask ``X`` runs on the estimator's ``client`` when it has one: a
    client that is not the default must also compute the checks of ``predict`` (an array
    persisted on it is unknown to any other scheduler).
    """
    with using_client(getattr(estimator, "client", None)):
        X = validate_X(X, name=name)
    if X.shape[1] != estimator.n_features_in_:
        raise ValidationError(
            f"{name} has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X


def validate_y(y, X, *, estimator, classifier=True):
    """Check targets: present, 1-d, same length as X and, for a classifier, >= 2 classes.

    Returns ``(y, classes)`` (``classes`` is None for a regressor).
    """
    from .._validation import check_classification_targets, check_consistent_length

    if y is None:
        raise ValidationError(f"{estimator} requires y to be passed, but the target y is None.")
    if is_dask_collection(y):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1:
            raise ValidationError(f"y must be 1-dimensional, got shape {tuple(y.shape)!r}.")
    else:
        from sklearn.utils.validation import column_or_1d

        try:
            y = column_or_1d(y, warn=True)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
    check_consistent_length(X, y)
    if not classifier:
        from .._validation import check_array

        return check_array(y, name="y", ndim=1), None
    if not is_dask_collection(y):
        from sklearn.utils.multiclass import check_classification_targets as sk_targets

        try:
            sk_targets(y)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
    return y, check_classification_targets(y)
