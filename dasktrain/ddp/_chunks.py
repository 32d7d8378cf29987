"""One chunk of a dataset, made where it is read: :func:`fetch`, and the chunk file format.

:func:`fetch` runs the chunk's own tasks (from its :class:`~._datasets.Feed`) in the calling
thread with dask's synchronous scheduler, after fetching the persisted keys the chunk reads
(``client.gather`` takes them from this worker's own memory when it holds them, from another
worker otherwise). The chunk's tasks never go to the scheduler: a lazy ``ImageSet`` chunk is
decoded in the process that asked for it, and nothing else of the dataset is computed.

Where it runs: on each worker of a job, in the feeder beside its rank (:mod:`._feeder`, which
hands the chunk to the rank as a file, :func:`write` / :func:`read`); in
:func:`~dasktrain.ddp.run_local`, in this process (:class:`LocalSource`, the twin's prefetch).
"""

from __future__ import annotations

import os
import queue
import threading
import weakref

import numpy as np

from .._dask import gather
from ..exceptions import DDPError, ValidationError

__all__ = ["fetch", "write", "read", "LocalSource"]

_WHAT = "dasktrain.ddp shard"


def _local(keys, local):
    """The values of ``keys`` this worker holds (read in place, no copy)."""
    found = {}
    for k in keys:
        try:
            found[k] = local[k]
        except KeyError:  # not here (or released meanwhile): fetched from its holder
            pass
    return found


def _external(feed, i, client, local=None, futures=None):
    """The persisted keys chunk ``i`` reads, fetched from the cluster: ``{key: value}``."""
    keys = feed.external[i]
    found = {} if local is None else _local(keys, local)
    keys = [k for k in keys if k not in found]
    if not keys:
        return found
    futures = feed.futures if futures is None else futures
    if any(k not in futures for k in keys):
        raise DDPError(
            f"{feed.label} reads data persisted on a Dask cluster that this process holds no "
            "future of; pass the collection that client.persist returned."
        )
    held = [futures[k] for k in keys]
    # run_local: the client that persisted the data (its futures know it), default or not
    client = held[0].client if client is None else client
    found.update(zip(keys, gather(client, held, what=_WHAT)))
    return found


def _as_numpy(feed, i, values):
    out = []
    for kind, dtype, value in zip(feed.kinds, feed.dtypes, values):
        if kind == "array":
            out.append(np.asarray(value))
        elif kind == "frame":
            out.append(value.to_numpy(dtype=np.float32))
        else:
            out.append(np.asarray(value.to_numpy()).astype(dtype, copy=False))
    lengths = [len(a) for a in out]
    if any(n != feed.rows[i] for n in lengths):
        raise ValidationError(
            f"chunk {i} of {feed.label} has {lengths} rows in its parts where {feed.rows[i]} "
            "were expected: its parts are not aligned row for row (build X and y from the "
            "same partitions) or its data changed since the job started."
        )
    return tuple(out)


def fetch(feed, i, client=None, local=None, futures=None):
    """The parts of chunk ``i`` of ``feed`` as numpy arrays (``(X, y)``: two arrays).

    Parameters
    ----------
    feed : Feed
    i : int
    client : distributed.Client, optional
        Needed when the chunk reads persisted data (on a worker: the worker's client).
    local : mapping, optional
        The data this worker holds (``Worker.data``): persisted keys found there are read in
        place; the others are fetched through ``client``.
    futures : mapping, optional
        ``{key: Future}`` of the persisted keys, bound to ``client`` (on a worker: from
        ``client.get_dataset``); default ``feed.futures``, the client's own.
    """
    import dask

    data = _external(feed, i, client, local, futures)
    if not feed.needs[i]:  # persisted as it is: nothing to compute
        values = [data[k] for k in feed.keys[i]]
    else:
        dsk = {k: feed.graph[k] for k in feed.needs[i]}
        dsk.update(data)
        values = dask.get(dsk, list(feed.keys[i]))
    return _as_numpy(feed, i, values)


def write(path, arrays):
    """Write ``arrays`` to ``path`` (``.npy`` records one after the other), atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        for a in arrays:
            np.save(fh, a, allow_pickle=False)
    os.replace(tmp, path)


def read(path, n_parts):
    """The ``n_parts`` arrays :func:`write` wrote to ``path``."""
    with open(path, "rb") as fh:
        return tuple(np.load(fh, allow_pickle=False) for _ in range(n_parts))


class LocalSource:
    """The local twin's chunks: fetched in this process, ``prefetch`` chunks ahead.

    The same :meth:`stream` as the ranks' spool (:class:`~._feeder.SpoolSource`), so a shard
    reads the same chunks in the same order on both engines.
    """

    def __init__(self, feeds, client=None):
        self.feeds, self.client = feeds, client
        self._streams = weakref.WeakSet()

    def stream(self, dataset, chunks, prefetch, reader=None):
        """The chunks ``chunks`` of ``dataset``, in order (each a tuple of arrays).

        A thread starts making them at once. ``close()`` the stream to stop it early.
        (``reader``: as for the spool; here every stream has its own thread.)
        """
        stream = _LocalStream(self.feeds[dataset], list(chunks), prefetch, self.client)
        self._streams.add(stream)
        return stream

    def close(self):
        """Stop every stream still open (the end of ``run_local``): no thread outlives it."""
        for stream in list(self._streams):
            stream.close()


class _LocalStream:
    """Chunks made by a thread, at most ``prefetch`` waiting (an iterator; ``close()``)."""

    def __init__(self, feed, chunks, prefetch, client):
        self.feed, self.chunks, self.client = feed, chunks, client
        self.ready = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()
        self.left = len(chunks)
        self.thread = threading.Thread(
            target=self._produce, daemon=True, name="dasktrain-shard-prefetch"
        )
        if chunks:
            self.thread.start()

    def _produce(self):
        for c in self.chunks:
            try:
                item = ("ok", fetch(self.feed, c, self.client))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                item = ("error", exc)
            while not self.stop.is_set():
                try:
                    self.ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self.stop.is_set() or item[0] == "error":
                return

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            self.close()
            raise StopIteration
        status, value = self.ready.get()
        if status == "error":
            self.close()
            raise value
        self.left -= 1
        return value

    def close(self):
        """Stop making chunks (waits for the one being made)."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
