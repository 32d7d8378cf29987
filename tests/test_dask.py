"""dasktrain._dask: the Dask plumbing every layer shares, on a real LocalCluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from _direct_passes import passes_served
from distributed import futures_of, get_task_stream

from dasktrain._dask import (
    align_rows,
    compute_all,
    compute_if_dask,
    current_worker_threads,
    gather_rows,
    map_row_blocks,
    row_chunked,
    split_rows,
    to_cluster,
    total_threads,
)
from dasktrain.exceptions import ValidationError


def _block_sum(x, w):
    return float(x.sum() if w is None else (x.sum(axis=1) * w).sum())


def _threads_here(_):
    return current_worker_threads()


def test_compute_if_dask_passes_the_rest_through(client):
    x = np.arange(5)
    assert compute_if_dask(x) is x and compute_if_dask(None) is None
    lazy = da.arange(5, chunks=2)
    np.testing.assert_array_equal(compute_if_dask(lazy, client=client), x)
    a, b, c = compute_all([lazy, x, None], client=client)
    np.testing.assert_array_equal(a, x)
    assert b is x and c is None


def test_row_chunked_and_align_rows():
    X = np.arange(40.0).reshape(10, 4)
    Xd = row_chunked(X, n_blocks=3)
    assert Xd.chunks == ((4, 4, 2), (4,))
    # A dask X chunked along columns too becomes whole rows.
    assert row_chunked(da.from_array(X, chunks=(5, 2))).chunks == ((5, 5), (4,))
    a, b, none = align_rows(Xd, np.arange(10), None, names=["X", "y", "w"])
    assert b.chunks == ((4, 4, 2),) and none is None
    with pytest.raises(ValidationError, match="X has 10 samples but y has 9"):
        align_rows(Xd, np.arange(9), names=["X", "y"])
    assert [len(p) for p in split_rows(list(range(7)), 3)] == [3, 3, 1]


def test_map_row_blocks_names_its_tasks(client):
    X = da.ones((12, 3), chunks=(4, 3))
    w = da.arange(12.0, chunks=4)
    with get_task_stream(client) as ts:
        parts = map_row_blocks(_block_sum, X, w, name="test-weighted-sum", client=client)
    assert parts == [3.0 * (0 + 1 + 2 + 3), 3.0 * (4 + 5 + 6 + 7), 3.0 * (8 + 9 + 10 + 11)]
    keys = [t["key"] if isinstance(t["key"], str) else t["key"][0] for t in ts.data]
    assert sum(k.startswith("test-weighted-sum-") for k in keys) == 3
    assert map_row_blocks(_block_sum, X, None, name="t", client=client) == [12.0] * 3


def test_to_cluster_persists_one_block_per_thread_and_gathers_back(client):
    X, y = np.arange(60.0).reshape(20, 3), np.arange(20)
    n = total_threads(client)
    Xd, yd = to_cluster(client, X, y, n_blocks=n)
    assert Xd.numblocks[0] == n and yd.chunks[0] == Xd.chunks[0]
    assert all(f.status == "finished" for f in futures_of(Xd))  # already on the cluster
    Xb, yb = gather_rows([Xd, yd], client=client)
    np.testing.assert_array_equal(Xb, X)
    np.testing.assert_array_equal(yb, y)


def test_current_worker_threads_is_one_workers_share(client):
    assert current_worker_threads() is None  # not on a worker
    per_worker = client.gather(client.map(_threads_here, range(4), pure=False))
    assert set(per_worker) == {1} and total_threads(client) == 2


# --------------------------------------------------------------------------- direct passes
def _weighted_stats(x, w, *, block_index, row_offset, scale):
    """A per-block pass: float sums that any change of order or transport would show."""
    if scale < 0:
        raise ValidationError(f"block {block_index} refuses scale={scale}")
    return block_index, row_offset, (x * scale).sum(axis=0) * w.sum()


def test_direct_passes_equal_scheduler_passes_and_leave_no_task_per_pass(client):
    import dask

    from dasktrain._dask import BlockRunner

    rng = np.random.default_rng(0)
    X = da.from_array(rng.normal(size=(6000, 30)), chunks=(500, 30))
    w = da.from_array(rng.random(6000), chunks=500)
    with BlockRunner([X, w], client) as slow:
        want = [slow.map(_weighted_stats, scale=s) for s in (1.0, 0.5)]
    before = passes_served(client)
    with BlockRunner([X, w], client, direct="test") as fast:
        with get_task_stream(client) as ts:
            got = [fast.map(_weighted_stats, scale=s) for s in (1.0, 0.5)]
        assert fast._group, "the direct group did not start"
    # Bit for bit the same, block by block, in block order (offsets included).
    for a, b in zip(want, got):
        assert [r[:2] for r in a] == [r[:2] for r in b] == [(i, 500 * i) for i in range(12)]
        for ra, rb in zip(a, b):
            np.testing.assert_array_equal(ra[2], rb[2])
    assert passes_served(client) - before == 2 * len(client.nthreads())  # one per worker and pass
    # No task per pass: at most the group's own long-running tasks started in that window.
    assert not [t for t in ts.data if "weighted-stats" in str(t.get("key"))]
    # Turned off: the same passes through the scheduler.
    with dask.config.set({"dasktrain.direct-passes": False}):
        with BlockRunner([X, w], client, direct="test") as off:
            assert [r[0] for r in off.map(_weighted_stats, scale=1.0)] == list(range(12))
            assert off._group is False


def test_direct_pass_raises_the_workers_exception_and_keeps_working(client):
    from dasktrain._dask import BlockRunner

    X = da.ones((1200, 4), chunks=(100, 4))
    w = da.ones(1200, chunks=100)
    with BlockRunner([X, w], client, direct="test") as runner:
        # Every block raises, so each worker answers with an error.
        with pytest.raises(ValidationError, match="refuses scale=-1"):
            runner.map(_weighted_stats, scale=-1.0)
        # The group still answers after a pass that raised, with this pass's results (not a
        # stale answer of the failed one), in block order.
        assert runner._group
        for _ in range(3):
            out = runner.map(_weighted_stats, scale=2.0)
            assert [r[0] for r in out] == list(range(12))
            assert all(r[2].tolist() == [20000.0] * 4 for r in out)


def _direct_sockets(port=None):
    """This process's TCP sockets on ``port`` (None: its listening sockets)."""
    import psutil

    proc = psutil.Process()
    conns = (getattr(proc, "net_connections", None) or proc.connections)("tcp")  # psutil < 6
    if port is None:
        return sorted(str(c.laddr) for c in conns if c.status == psutil.CONN_LISTEN)
    return sorted(
        (str(c.laddr), str(c.raddr), c.status)
        for c in conns
        if c.laddr.port == port or (c.raddr and c.raddr.port == port)
    )


def _accept_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "direct-accept"]


def _settled(check, seconds=10.0):
    import time

    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def test_a_silent_connection_costs_the_direct_group_a_handshake_deadline_only(client):
    # Regression: a local process that connected to the listener and said nothing blocked
    # the accepting thread in the handshake; every fit waited the 30 s connect timeout and
    # then gave up the direct passes.
    import socket
    import threading
    import time
    from multiprocessing.connection import Client as Connect

    from dasktrain._dask.direct import HANDSHAKE_S, DirectGroup

    group = DirectGroup(client, [[None]], [0], "test")
    group._listener = socket.create_server(("127.0.0.1", 0))
    address = group._listener.getsockname()
    port = address[1]
    silent = socket.create_connection(address)  # connects first, then says nothing
    answered = []

    def worker():
        conn = Connect(address, authkey=b"k" * 32)
        conn.send(("ready", "tcp://w:1"))
        answered.append(conn)

    thread = threading.Thread(target=worker)
    thread.start()
    t0 = time.monotonic()
    try:
        group._accept({"tcp://w:1": [0]}, b"k" * 32, deadline=time.monotonic() + 30)
        took = time.monotonic() - t0
        assert list(group.conns) == ["tcp://w:1"]
        assert HANDSHAKE_S <= 5 and took < HANDSHAKE_S + 3, took
    finally:
        thread.join(10)
        silent.close()
        group.close()
        for conn in answered:
            conn.close()
        group._listener.close()
    # Nothing left: no socket on the group's port, no accepting thread.
    assert _settled(lambda: not _direct_sockets(port) and not _accept_threads())


def test_a_direct_group_that_cannot_start_leaves_no_socket_or_thread(client):
    # Regression: a failed start left the listener listening and its thread blocked in
    # accept() (closing a socket does not wake a thread in accept on Linux), once per fit.
    from dasktrain._dask import BlockRunner
    from dasktrain._dask.direct import DirectGroup

    X = da.ones((400, 4), chunks=(100, 4))
    with BlockRunner([X], client) as runner:  # persisted blocks, no group of its own
        listening, threads = _direct_sockets(), len(_accept_threads())
        for _ in range(3):
            group = DirectGroup(client, runner.blocks, runner.offsets[:-1].tolist(), "test")
            assert group.start(timeout=0) is False  # its workers cannot connect in no time
            assert not group.futures and not group.conns
        assert _settled(lambda: _direct_sockets() == listening)
        assert _settled(lambda: len(_accept_threads()) == threads)


def test_direct_group_listens_on_the_clients_address_and_refuses_a_wrong_key(client):
    import socket
    import threading
    import time
    from multiprocessing.connection import AuthenticationError
    from multiprocessing.connection import Client as Connect

    from dasktrain._dask.direct import DirectGroup, GroupLost, _usable

    # The address this client reaches the scheduler from: loopback here, never 0.0.0.0.
    assert _usable(client) == "127.0.0.1"
    group = DirectGroup(client, [[None]], [0], "test")
    group._listener = socket.create_server(("127.0.0.1", 0))
    address = group._listener.getsockname()
    refused = []

    def impostor():
        try:
            Connect(address, authkey=b"not the key")
        except (AuthenticationError, OSError, EOFError) as exc:
            refused.append(exc)

    thread = threading.Thread(target=impostor)
    thread.start()
    # Refused, and the group goes on waiting for its own workers (none come here).
    with pytest.raises(GroupLost, match="did not connect in time"):
        group._accept({"tcp://w:1": [0]}, b"k" * 32, deadline=time.monotonic() + 3)
    thread.join(10)
    group._listener.close()
    assert refused and not group.conns


def test_scheduler_workers_lists_every_worker_while_the_client_refreshes(cluster):
    # Regression (CI, stop 31): client.scheduler_info() fetches into an attribute that the
    # client's periodic refresh overwrites with a worker-less identity; read after a refresh it
    # gave no workers on a full cluster, and balanced_persist divided by zero in an XGBoost fit.
    import dask.config
    from distributed import Client

    from dasktrain._dask.client import scheduler_workers

    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}):
        with Client(cluster, set_as_default=False) as fresh:
            counts = {len(scheduler_workers(fresh)) for _ in range(300)}
    assert counts == {2}
