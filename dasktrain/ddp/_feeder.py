"""How a rank gets its chunks: the feeder on its worker and the spool folder between them.

The rank is a process of its own, not a Dask task: it has no client and needs none. The
worker task that supervises it (:func:`~._worker.rank_task`, or a pool's task) runs a
:class:`Feeder` thread beside it, which makes the chunks the rank asks for on the worker
(:func:`~._chunks.fetch`: a lazy chunk is decoded there, a persisted one read from the
worker's memory or fetched from the worker that holds it) and hands each over as a file in a
spool folder private to the rank. The protocol, in files (each written under a temporary
name and renamed, so a reader never sees half of one):

``meta.json``
    written by the worker task before the rank starts: every dataset's :meth:`Feed.meta`.
``req-<seq>.json``
    the rank asks for a stream: ``{"dataset", "chunks" (in reading order), "prefetch",
    "reader"}``. It removes the file when it stops reading (the end of the epoch, a
    ``break``); the feeder then drops the stream. A newer request of the same reader (one
    :class:`~._shard.Shard`) replaces an older one: a reader whose iteration was abandoned
    without being closed holds no chunks for long. Two shards of one dataset are two readers.
``chunk-<seq>-<pos>.npy``
    the ``pos``-th chunk of stream ``seq`` (:func:`~._chunks.write`); the rank removes it once
    read. The feeder keeps at most ``prefetch`` of them waiting per stream: the rank holds the
    chunks of its window, the spool at most ``prefetch`` more, whatever the dataset's size.
``error-<seq>.txt``, ``error-feeder.txt``
    making a chunk of stream ``seq`` failed (a file that does not decode...), or the feeder
    itself stopped: the rank raises :class:`~dasktrain.exceptions.DDPError` with this text,
    naming the chunk and the worker.

:class:`SpoolSource` is the rank's side. Both poll the folder (a few milliseconds apart while
waiting): a chunk takes far longer to train on than to notice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import traceback

from ..exceptions import DDPError
from ._chunks import fetch, read, write
from ._env import ENV_SHARDS

logger = logging.getLogger(__name__)

__all__ = ["Feeder", "SpoolSource", "start_feeder", "META", "write_meta", "read_meta"]

META = "meta.json"
_REQ = re.compile(r"^req-(\d+)\.json$")
# How long the feeder sleeps when it has nothing to do, and the rank's longest wait step.
_IDLE_S = 0.005
_MAX_WAIT_S = 0.02
# Seconds stop() waits for a chunk being made before it leaves the thread to finish alone.
_STOP_WAIT_S = 5.0


def _chunk_name(seq, pos):
    return f"chunk-{seq:06d}-{pos:06d}.npy"


def _error_name(seq):
    # None: the feeder itself stopped, which fails every stream
    return "error-feeder.txt" if seq is None else f"error-{seq:06d}.txt"


def _write_text(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_meta(folder, meta):
    _write_text(os.path.join(folder, META), json.dumps(meta))


def read_meta(folder):
    with open(os.path.join(folder, META), encoding="utf-8") as fh:
        return json.load(fh)


class _Stream:
    def __init__(self, seq, request):
        self.seq = seq
        self.dataset = request["dataset"]
        self.chunks = list(request["chunks"])
        self.prefetch = int(request["prefetch"])
        self.reader = (self.dataset, request.get("reader"))
        self.next = 0  # the position of the next chunk to make
        self.failed = False


class Feeder:
    """On the worker: makes the chunks the rank beside it asks for (see the module docstring).

    Parameters
    ----------
    folder : str
        The rank's spool folder.
    feeds : dict of str -> Feed
    client : distributed.Client or None
        The worker's client, for the chunks that read persisted data.
    worker : distributed.Worker
        This worker: persisted chunks it holds are read from its memory in place.
    futures : dict, optional
        ``{key: Future}`` of the persisted keys, bound to ``client``.
    """

    def __init__(self, folder, feeds, client, worker, futures=None):
        self.folder, self.feeds, self.client = folder, feeds, client
        self.futures = futures or {}
        self.where, self.local = worker.address, worker.data
        self.streams = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="dasktrain-feeder")

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(_STOP_WAIT_S)

    def _run(self):
        try:
            while not self._stop.is_set():
                names = set(os.listdir(self.folder))
                self._sync(names)
                stream = self._due(names)
                if stream is None:
                    self._stop.wait(_IDLE_S)
                    continue
                self._make(stream)
        except Exception:  # noqa: BLE001 - the folder went away with the task, or a bug
            if not self._stop.is_set():
                logger.exception("ddp feeder in %s stopped", self.folder)
                text = f"the chunk feeder on worker {self.where} stopped:\n"
                self._fail(None, text + traceback.format_exc())

    def _sync(self, names):
        """Take new requests, drop the streams the rank closed or replaced."""
        asked = {}
        for name in names:
            m = _REQ.match(name)
            if m:
                asked[int(m.group(1))] = name
        for seq, name in sorted(asked.items()):
            if seq not in self.streams:
                try:
                    with open(os.path.join(self.folder, name), encoding="utf-8") as fh:
                        self.streams[seq] = _Stream(seq, json.load(fh))
                except FileNotFoundError:  # closed again before it was seen
                    del asked[seq]
        newest = {}
        for seq, s in sorted(self.streams.items()):
            newest[s.reader] = seq
        for seq in list(self.streams):
            if seq not in asked or newest[self.streams[seq].reader] != seq:
                self._drop(seq, names)

    def _drop(self, seq, names):
        del self.streams[seq]
        prefix = f"chunk-{seq:06d}-"
        for name in names:
            if name.startswith(prefix):
                _remove(os.path.join(self.folder, name))

    def _due(self, names):
        """The oldest stream with room in its prefetch and chunks left to make."""
        for seq, s in sorted(self.streams.items()):
            if s.failed or s.next >= len(s.chunks):
                continue
            waiting = sum(1 for n in names if n.startswith(f"chunk-{seq:06d}-"))
            if waiting < s.prefetch:
                return s
        return None

    def _make(self, stream):
        feed = self.feeds[stream.dataset]
        chunk = stream.chunks[stream.next]
        try:
            arrays = fetch(feed, chunk, self.client, self.local, self.futures)
        except Exception as exc:  # noqa: BLE001 - the rank raises it
            stream.failed = True
            self._fail(
                stream.seq,
                f"reading chunk {chunk} of {feed.label} on worker {self.where} failed: "
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
            )
            return
        if stream.seq in self.streams:
            write(os.path.join(self.folder, _chunk_name(stream.seq, stream.next)), arrays)
            stream.next += 1

    def _fail(self, seq, text):
        try:
            _write_text(os.path.join(self.folder, _error_name(seq)), text)
        except OSError:
            pass


def start_feeder(folder, spec, blob, held, worker):
    """On the worker: the rank's spool in ``folder`` and its feeder, started: ``(feeder, env)``.

    ``blob`` is the job's feeds, pickled once on the client; ``held`` the name under which
    the client published the futures of the persisted data they read (None: nothing
    persisted); ``env`` tells the rank where its spool is. ``(None, {})`` for a job without
    datasets.
    """
    if blob is None or not spec.datasets:
        return None, {}
    import cloudpickle

    feeds = cloudpickle.loads(blob)
    spool = os.path.join(folder, "shards")
    os.makedirs(spool, exist_ok=True)
    write_meta(spool, spec.datasets)
    client, futures = None, {}
    if held is not None:
        from distributed import get_client

        client = get_client()  # in the task's thread: the worker's own client
        futures = {f.key: f for f in client.get_dataset(held)}
    return Feeder(spool, feeds, client, worker, futures).start(), {ENV_SHARDS: spool}


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class SpoolSource:
    """The rank's side of the spool: asks its worker's feeder for chunks and reads them."""

    def __init__(self, folder):
        self.folder = folder
        self.meta = read_meta(folder)
        self._seq = 0
        self._latest = {}

    def stream(self, dataset, chunks, prefetch, reader=None):
        """The chunks ``chunks`` of ``dataset``, in order (each a tuple of arrays).

        The feeder starts making them at once. ``close()`` the stream to stop it early. A
        newer stream of the same ``reader`` (a token of one shard) ends this one.
        """
        self._seq += 1
        self._latest[(dataset, reader)] = self._seq
        chunks = [int(c) for c in chunks]
        return _SpoolStream(self, self._seq, (dataset, reader), chunks, prefetch)


class _SpoolStream:
    """One stream of chunks from the spool (an iterator; ``close()`` ends it)."""

    def __init__(self, source, seq, reader, chunks, prefetch):
        self.source, self.seq, self.reader, self.n = source, seq, reader, len(chunks)
        self.dataset = reader[0]
        self.folder = source.folder
        self.n_parts = len(source.meta[self.dataset]["kinds"])
        self.pos = 0
        self.request = os.path.join(self.folder, f"req-{seq:06d}.json")
        if chunks:
            request = {
                "dataset": self.dataset,
                "chunks": chunks,
                "prefetch": int(prefetch),
                "reader": reader[1],
            }
            _write_text(self.request, json.dumps(request))

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= self.n:
            self.close()
            raise StopIteration
        if self.source._latest.get(self.reader) != self.seq:
            self.close()
            raise DDPError(
                f"a newer iteration of shard {self.dataset!r} began; this one was closed "
                "(read one iterator of a shard at a time)."
            )
        arrays = self._wait(self.pos)
        self.pos += 1
        return arrays

    def close(self):
        """Stop the stream: the feeder drops it (and the chunks it made for it)."""
        _remove(self.request)

    def _wait(self, pos):
        path = os.path.join(self.folder, _chunk_name(self.seq, pos))
        errors = [os.path.join(self.folder, _error_name(s)) for s in (self.seq, None)]
        delay = 0.0005
        while True:
            if os.path.exists(path):
                arrays = read(path, self.n_parts)
                _remove(path)
                return arrays
            for error in errors:
                if os.path.exists(error):
                    with open(error, encoding="utf-8") as fh:
                        raise DDPError(fh.read())
            time.sleep(delay)
            delay = min(2 * delay, _MAX_WAIT_S)
