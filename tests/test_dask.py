"""dasktrain._dask: the Dask plumbing every layer shares, on a real LocalCluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
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
