"""What dasktrain tells whoever watches: live events on the scheduler, and a local copy.

Every step that has something to show while it runs (a Lloyd pass, a boosting round, a chunk
of features, a DDP attempt, a cell of a comparison) calls :func:`emit` with a *kind* and a few
fields. The record goes

* to the scheduler, as a Dask event on the topic ``"dasktrain"`` (``Worker.log_event`` from a
  task; from the driver, queued and sent by the client's event loop, so the step never waits
  for the scheduler): the ``/dasktrain`` dashboard page
  (:mod:`dasktrain.dashboard`) sees it through its scheduler plugin, so nothing is polled from
  the workers; and
* to every :func:`recording` open in this process, which is how the comparison keeps what was
  shown live for the offline report.

An event never fails the step that sends it: a scheduler that is gone, a value msgpack cannot
carry, are logged at debug level and dropped. The DDP ranks' own metrics keep their per-job
topics (``dasktrain-ddp-<job>``, see :mod:`dasktrain.ddp.launcher`); the page reads those too.

Kinds and their fields (all also carry ``kind`` and ``time``, seconds since the epoch, and
``worker``, the worker's address, when a task sent them):

=================  ===========================================================================
``compare``        ``comparison``, ``state`` (``"start"`` / ``"end"``), ``cells`` (list of
                   ``[workload, setup, size, repeat]``) on start
``cell``           ``comparison``, ``workload``, ``setup``, ``size``, ``repeat``, ``state``
                   (``"running"`` / ``"done"``), ``status``, ``seconds`` when done
``verdict``        ``comparison``, ``workload``, ``outcome``, ``verdict`` (the sentence)
``fit``            ``fit`` (an id), ``estimator``, ``iteration``, ``metric`` (its name),
                   ``value``, ``ms`` (the pass or round), ``path`` (how it ran)
``features``       ``images``, ``seconds`` (one chunk)
``ddp``            ``job``, ``attempt``, ``state`` (``"start"``, ``"failed"``, ``"restart"``,
                   ``"done"``), ``ranks`` (``{rank: {host, worker}}``) on start, ``error``
``ddp-rank``       ``job``, ``attempt``, ``rank``, ``host``, ``worker``, ``pid``, ``lines``
                   (the rank's last log lines)
=================  ===========================================================================
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator

import msgpack

__all__ = ["TOPIC", "DDP_TOPIC_PREFIX", "emit", "keep", "recording"]

logger = logging.getLogger(__name__)

#: The Dask event topic of every dasktrain event but the DDP ranks' own metrics.
TOPIC = "dasktrain"
#: The DDP ranks' :func:`~dasktrain.ddp.report` records go to ``DDP_TOPIC_PREFIX + job``.
DDP_TOPIC_PREFIX = "dasktrain-ddp-"

_recorders: list[list] = []
_lock = threading.Lock()


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:
        return None


def emit(kind: str, /, client=None, *, local_only: bool = False, **fields) -> dict:
    """Send one event of ``kind``; return the record.

    Parameters
    ----------
    kind : str
        One of the kinds in this module's table.
    client : distributed.Client or list of them, optional
        The driver's client (or the clients of every cluster to tell). In a task the worker
        sends the event and ``client`` is not needed.
    local_only : bool
        Only the :func:`recording` contexts get it (the local engine: no cluster to tell, and
        a step timed as the baseline sends nothing over a network).
    **fields
        The event's fields: numbers, strings, lists and dicts of them (msgpack).
    """
    record = {"kind": kind, "time": time.time(), **fields}
    with _lock:
        for rec in _recorders:
            rec.append(record)
    if local_only:
        return record
    try:
        worker = _worker()
        if worker is not None:
            record.setdefault("worker", worker.address)
            worker.log_event(TOPIC, record)
        else:
            # What Worker.log_event and Client.log_event accept; the scheduler RPC the sender
            # uses would pickle anything else.
            msgpack.packb(record)
            for c in client if isinstance(client, (list, tuple)) else [client]:
                if c is not None and c.status == "running":
                    _sender(c).send(record)
    except Exception:  # an event never fails the step that sends it
        logger.debug("could not send the %s event", kind, exc_info=True)
    return record


class _Sender:
    """The events of one client, sent in order by one coroutine on the client's event loop.

    ``Client.log_event`` waits for the scheduler's answer (0.3-0.4 ms here): on the driver's
    thread that was 17% of a 2.4 ms KMeans pass. The caller only queues; the loop sends.
    """

    def __init__(self, client):
        self.client = client
        self.queue = collections.deque()
        self.lock = threading.Lock()
        self.busy = False

    def send(self, record):
        with self.lock:
            self.queue.append(record)
            if self.busy:
                return
            self.busy = True
        self.client.loop.add_callback(self._drain)

    async def _drain(self):
        while True:
            with self.lock:
                if not self.queue:
                    self.busy = False
                    return
                record = self.queue.popleft()
            try:
                await self.client.scheduler.log_event(topic=TOPIC, msg=record)
            except Exception:  # a closed client, a value msgpack cannot carry: dropped
                logger.debug("could not send the %s event", record.get("kind"), exc_info=True)


_senders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sender(client) -> _Sender:
    with _lock:
        sender = _senders.get(client)
        if sender is None:
            sender = _senders[client] = _Sender(client)
        return sender


def keep(record: dict) -> None:
    """Hand a record that arrived from elsewhere (a DDP rank's metrics) to the recordings."""
    with _lock:
        for rec in _recorders:
            rec.append(record)


@contextlib.contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect the events emitted in this process while the block runs (a list)."""
    out: list[dict] = []
    with _lock:
        _recorders.append(out)
    try:
        yield out
    finally:
        with _lock:
            _recorders.remove(out)
