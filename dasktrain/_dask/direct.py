"""Passes over persisted row blocks without the scheduler: one long-running task per worker.

An iterative algorithm on the cluster (Lloyd, k-means||) makes one pass over the row blocks per
iteration. Through the scheduler a pass is a ``client.map`` plus a ``gather``: client ->
scheduler -> workers -> scheduler -> client, tens of milliseconds however small the work.
:class:`DirectGroup` takes the scheduler out of the loop: one long-running task per worker
that holds row blocks (``<name>-direct-<uuid>-<i>``) keeps its blocks and connects back to the
client; a pass is then one message to each worker (the function and its small arguments) and
one answer from each (the per-block results), well under a millisecond on a LAN.

The client stays the one that combines the results, in block order, exactly as after a
``gather``, so a pass gives the same numbers whichever way it travelled, and
:class:`~.blocks.BlockRunner` falls back to ``client.map`` at any time: when the group cannot
start (the workers cannot reach the client, a TLS cluster) or when it breaks (a worker died:
its connection closes at once). The scheduler then recomputes what the dead worker held, as
for any pass.

Security: the client listens on one address only (the one it reaches the scheduler from, never
all interfaces), and each connection must prove it holds a fresh random key (the mutual HMAC
challenge of :mod:`multiprocessing.connection`) before anything is unpickled on either side.
The key travels in the task's arguments, through the scheduler. A ``tls://`` cluster is never
driven this way: these connections are not encrypted.

Why not distributed's Actors, which offer the same shape with Dask's own means (a stateful
object on a worker, called from the client without the scheduler, over distributed's comm,
TLS included)? Measured with ``benchmarks/_actors.py`` (the same 8 scattered blocks of
``n x 20`` float64, one ``BlockHolder`` Actor per worker against this group, interleaved,
median of 100 passes, 2 workers x 1 thread, quiet machine, two runs, 2026-12-07), in ms
per pass, direct / Actor::

    rows        empty pass            Lloyd pass (k=8)       Actor / direct: empty; Lloyd
    200,000     0.31-0.38 / 3.0-3.4   6.5-7.0 / 10.7-11.3    8.8-9.8x; 1.61-1.64x
    2,000,000   0.25-0.33 / 3.1       41.7-43.7 / 45.1-47.4  9.5-12.1x; 1.08x

An Actor call costs about 3 ms of its own against 0.3 ms here, so a pass at 200k rows (where
KMeans makes most of its passes) is 1.6x slower, past the 1.5x the change needed (issue 28,
item 5): the group stays; a TLS cluster keeps falling back to tasks.
"""

from __future__ import annotations

import logging
import queue
import secrets
import socket
import threading
import time

from .activity import reporting
from .client import connect_timeout, live_workers
from .keys import task_keys
from .paused import StallWatch

logger = logging.getLogger(__name__)

__all__ = ["DirectGroup", "GroupLost", "direct_enabled"]

#: Seconds a worker's task waits for the client's next pass before it gives up and ends.
IDLE_S = 300.0
#: How often (s) the client, waiting for an answer, checks that the group's workers are alive.
_CHECK_S = 0.5
#: Seconds an accepted connection has to prove it holds the key and say who it is: a local
#: process that connects and stays silent costs the group this much, not its direct passes.
HANDSHAKE_S = 2.0
#: How often (s) the accepting thread looks whether the group stopped waiting.
_POLL_S = 0.1


def direct_enabled():
    """The ``dasktrain.direct-passes`` setting (True unless turned off)."""
    from .. import _config

    return bool(_config.get("direct-passes", True))


class GroupLost(ConnectionError):
    """The direct group broke (a worker died or stopped answering): redo the pass by tasks."""


def _scheduler_address(client):
    """``tcp://host:port`` this client reaches the scheduler from, or None."""
    try:
        comm = client.scheduler_comm.comm
        return comm.local_address
    except AttributeError:
        return None


def _usable(client):
    """The host the group listens on: the client's own on a plain ``tcp://`` cluster."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    local = _scheduler_address(client)
    if not local:
        return None
    scheme, loc = parse_address(local)
    if scheme != "tcp":
        return None  # tls: not encrypted here; inproc/ucx: nothing to gain or no sockets
    return parse_host_port(loc)[0]


# -------------------------------------------------------------------------------- worker side
def _connect(address, authkey, timeout):
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(None)
    conn = Connection(sock.detach())
    answer_challenge(conn, authkey)
    deliver_challenge(conn, authkey)
    return conn


def _run_pass(func, blocks, indices, offsets, kwargs):
    return [
        (i, func(*b, block_index=i, row_offset=o, **kwargs))
        for i, o, b in zip(indices, offsets, blocks)
    ]


def serve(address, authkey, indices, offsets, n_arrays, *flat):
    """The long-running task: hold the blocks, run every pass the client sends, until "stop".

    ``flat`` holds the blocks of this worker, ``n_arrays`` per block index.
    """
    from distributed import get_worker, secede

    worker = get_worker().address
    # Out of the worker's thread pool: a group never blocks the worker's other tasks, and two
    # groups sharing workers cannot wait on each other for a thread.
    secede()
    blocks = [flat[j * n_arrays : (j + 1) * n_arrays] for j in range(len(indices))]
    with _connect(tuple(address), authkey, float(IDLE_S)) as conn:
        conn.send(("ready", worker))
        while conn.poll(IDLE_S):
            message = conn.recv()
            if message[0] == "stop":
                return len(indices)
            _, func, kwargs = message
            try:
                reply = ("ok", _run_pass(func, blocks, indices, offsets, kwargs))
            except Exception as exc:  # noqa: BLE001 - the client raises it, as after gather
                reply = ("error", exc)
            try:
                conn.send(reply)
            except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
                conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
                logger.debug("could not send the pass's result", exc_info=exc)
    return len(indices)


# -------------------------------------------------------------------------------- client side
def _timeouts(sock, seconds):
    """Kernel send/receive timeouts on a blocking socket (0: none).

    A :class:`multiprocessing.connection.Connection` reads its socket with ``os.read``, so
    Python's own ``settimeout`` (a non-blocking socket) cannot bound its handshake; these
    make a silent peer's read fail with ``OSError`` after ``seconds``.
    """
    import struct

    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        sock.setsockopt(socket.SOL_SOCKET, option, value)


def _handshake(sock, authkey):
    """The mutual HMAC challenge and the worker's greeting on an accepted socket, each read
    within :data:`HANDSHAKE_S`."""
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

    sock.setblocking(True)
    _timeouts(sock, HANDSHAKE_S)
    conn = Connection(sock.detach())
    try:
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        _ready = conn.poll(HANDSHAKE_S)  # the worker says who it is at once
    except BaseException:
        conn.close()
        raise
    if not _ready:
        conn.close()
        raise TimeoutError(f"no greeting within {HANDSHAKE_S:g} s")
    # The group's own passes may take long: no kernel timeout after the handshake.
    with socket.socket(fileno=conn.fileno()) as view:
        _timeouts(view, 0)
        view.detach()
    return conn


def _accept_all(listener, count, authkey, got, stop):
    """Put ``count`` authenticated connections on ``got``; refuse the others; end on ``stop``.

    The listener is polled (:data:`_POLL_S`), so the thread ends soon after ``stop`` is set:
    a blocking ``accept()`` is not woken by closing the socket, and would keep it listening.
    """
    listener.settimeout(_POLL_S)
    while count and not stop.is_set():
        try:
            sock, peer = listener.accept()
        except TimeoutError:
            continue
        except OSError as exc:  # the listener closed under it
            got.put(exc)
            return
        try:
            conn = _handshake(sock, authkey)
        except Exception as exc:  # noqa: BLE001 - a stranger or a silent peer: the next one
            sock.close()
            logger.info("direct group: refused a connection from %s (%r)", peer, exc)
            continue
        got.put(conn)
        count -= 1


def _owners(client, blocks):
    """``{worker: [block index, ...]}``: every block on one worker holding it, or None."""
    first = next(b for b in blocks if b is not None and b[0] is not None)
    who = client.who_has(first)
    owners = {}
    for i, f in enumerate(first):
        holders = sorted(who.get(f.key) or ())
        if not holders:
            return None
        # The least loaded holder: balanced when blocks are replicated.
        w = min(holders, key=lambda h: len(owners.get(h, ())))
        owners.setdefault(w, []).append(i)
    return owners


class DirectGroup:
    """One long-running task per worker that holds row blocks, driven over direct connections.

    Parameters
    ----------
    client : distributed.Client
    blocks : list of lists of futures (or None)
        Per array, the futures of its row blocks (persisted), as in ``BlockRunner.blocks``.
    offsets : list of int
        First row of each block.
    name : str
        Key prefix on the dashboard (``kmeans`` -> ``kmeans-direct-<uuid>-<i>``).
    """

    def __init__(self, client, blocks, offsets, name):
        self.client, self.blocks, self.offsets, self.name = client, blocks, offsets, name
        self.conns = {}  # worker -> Connection
        self.owned = {}  # worker -> [block index]
        self.futures = []
        self._listener = None

    # -- start -----------------------------------------------------------------------------------
    def start(self, timeout=None):
        """Submit the tasks and wait for their connections; False (and closed) when it cannot.

        The listener, the accepting thread and every connection not handed to the group are
        closed on every way out (a failed start, an error, an interrupt).
        """
        host = _usable(self.client)
        owners = _owners(self.client, self.blocks) if host else None
        if not owners:
            return False
        timeout = connect_timeout() if timeout is None else timeout
        authkey = secrets.token_bytes(32)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, 0), family=family)
            self._submit(owners, self._listener.getsockname()[:2], authkey)
            self._accept(owners, authkey, time.monotonic() + timeout)
        except (OSError, EOFError, GroupLost) as exc:
            logger.info("direct passes unavailable (%s); passes go through the scheduler", exc)
            self.close()
            return False
        except BaseException:
            self.close()
            raise
        finally:
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
        return True

    def _submit(self, owners, address, authkey):
        keys = task_keys(f"{self.name}-direct", len(owners))
        n_arrays = len(self.blocks)
        for key, (worker, idx) in zip(keys, sorted(owners.items())):
            flat = [None if b is None else b[i] for i in idx for b in self.blocks]
            self.futures.append(
                self.client.submit(
                    serve,
                    address,
                    authkey,
                    idx,
                    [self.offsets[i] for i in idx],
                    n_arrays,
                    *flat,
                    workers=[worker],
                    allow_other_workers=False,
                    pure=False,
                    key=key,
                )
            )
            self.owned[worker] = idx

    def _accept(self, owners, authkey, deadline):
        """Accept one authenticated connection per worker, from a thread of its own.

        A connection that does not complete the handshake within :data:`HANDSHAKE_S` (a
        process on this machine that connects and stays silent, a wrong key) is closed and
        the next one accepted: it costs the group seconds, never its direct passes.
        """
        got, stop = queue.Queue(), threading.Event()
        thread = threading.Thread(
            target=_accept_all,
            args=(self._listener, len(owners), authkey, got, stop),
            daemon=True,
            name="direct-accept",
        )
        thread.start()
        try:
            self._collect(owners, got, deadline)
        finally:
            stop.set()
            thread.join()  # it looks at ``stop`` at least every _POLL_S + HANDSHAKE_S
            while not got.empty():  # accepted after the group gave up: not handed over
                item = got.get()
                if not isinstance(item, Exception):
                    item.close()

    def _collect(self, owners, got, deadline):
        """Take the accepted connections from ``got`` until every worker of ``owners`` is in."""
        pending = list(owners)
        # The tasks start on paused workers as late as on any: not the connect timeout, then
        # the task passes' own wait, but an error once they are stuck (WorkersPausedError).
        stall = StallWatch(self.client, f"the direct passes of {self.name}")
        while pending:
            try:
                item = got.get(timeout=max(0.0, min(_CHECK_S, deadline - time.monotonic())))
            except queue.Empty:
                self._check_futures()
                stall.check([f.key for f in self.futures])
                if time.monotonic() >= deadline:
                    raise GroupLost(f"{len(pending)} worker(s) did not connect in time") from None
                continue
            if isinstance(item, Exception):
                raise GroupLost(f"the listener failed: {item!r}")
            _, worker = item.recv()
            if worker not in pending:
                item.close()
                raise GroupLost(f"an unexpected worker ({worker!r}) connected")
            pending.remove(worker)
            self.conns[worker] = item

    def _check_futures(self):
        for f in self.futures:
            if f.status != "pending":
                raise GroupLost(f"the direct task {f.key} ended: {f.status}")

    # -- passes ----------------------------------------------------------------------------------
    def map(self, func, n_blocks, kwargs):
        """``func``'s results for every block, in block order; raise GroupLost when broken.

        The pass is reported as compute (:mod:`.activity`): the workers compute it inside a
        task that the task stream never shows.
        """
        with reporting("compute"):
            return self._map(func, n_blocks, kwargs)

    def _map(self, func, n_blocks, kwargs):
        message = ("map", func, kwargs)
        try:
            for conn in self.conns.values():
                conn.send(message)
        except OSError as exc:
            raise GroupLost(f"could not send a pass: {exc!r}") from exc
        out = [None] * n_blocks
        # Every answer is read before an error is raised: a stale answer left in a
        # connection would be taken for the next pass's.
        answers = [self._answer(worker, conn) for worker, conn in self.conns.items()]
        for status, value in answers:
            if status == "error":
                raise value
            for i, result in value:
                out[i] = result
        return out

    def _answer(self, worker, conn):
        while True:
            try:
                if conn.poll(_CHECK_S):
                    return conn.recv()
            except (EOFError, OSError) as exc:
                raise GroupLost(f"worker {worker} left the direct group ({exc!r})") from exc
            if worker not in live_workers(self.client):
                raise GroupLost(f"worker {worker} left the cluster")
            self._check_futures()

    # -- end -------------------------------------------------------------------------------------
    def close(self):
        """Tell every task to stop, close the connections, release the tasks."""
        for conn in self.conns.values():
            try:
                conn.send(("stop",))
                conn.close()
            except Exception:  # noqa: BLE001 - a dead worker's connection: nothing to stop
                pass
        self.conns = {}
        if self.futures:
            try:
                self.client.cancel(self.futures, force=True)
            except Exception:  # noqa: BLE001 - a client closing at the same time
                logger.debug("could not cancel the direct tasks", exc_info=True)
        self.futures = []
