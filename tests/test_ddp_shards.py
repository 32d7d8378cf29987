"""ddp.run(..., datasets=...) and ddp.shard(): each rank trains on its own part of a dask dataset.

Real ranks (gloo processes) on a real LocalCluster, real torch, real image files. The tables
have few rows but real widths (512 features); row ``i`` of ``X`` holds the value ``i`` and
``y[i] == i``, so each rank can say exactly which rows it read.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time

import cloudpickle
import numpy as np
import pytest

import dasktrain.ddp as ddp
from dasktrain.ddp import _plan
from dasktrain.exceptions import DDPError, ValidationError

torch = pytest.importorskip("torch")

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WIDTH = 512
CHUNKS = (16, 3, 20, 1, 13)  # uneven on purpose
N = sum(CHUNKS)


def _table(chunks=CHUNKS, width=WIDTH):
    """``(X, y)`` dask arrays: every value of row ``i`` of ``X`` is ``i``, and ``y[i] = i``."""
    import dask.array as da

    ids = np.arange(sum(chunks))
    X = np.repeat(ids[:, None].astype(np.float32), width, axis=1)
    return da.from_array(X, chunks=(chunks, width)), da.from_array(ids, chunks=(chunks,))


def _expected_ids(chunks, owners, world_size, rank, *, seed, epoch, even=True):
    """The ids a rank reads in an epoch, from the plan alone."""
    starts = np.cumsum((0,) + tuple(chunks))
    order = _plan.chunk_order(len(chunks), seed=seed, epoch=epoch, shuffle=True)
    pieces = _plan.deal(chunks, order, owners, world_size, even=even)[rank]
    return {int(starts[p.chunk]) + i for p in pieces for i in range(p.start, p.stop)}


# ---------------------------------------------------------------- the plan (no ranks)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("even", [True, False])
def test_the_deal_covers_every_row_once_with_equal_rows(world_size, even):
    rng = np.random.default_rng(world_size)
    for trial in range(20):
        rows = rng.integers(0, 40, size=rng.integers(1, 12)).tolist()
        if sum(rows) < world_size:
            continue
        owners = rng.integers(-1, world_size, size=len(rows)).tolist()
        order = _plan.chunk_order(len(rows), seed=trial, epoch=0, shuffle=True)
        dealt = _plan.deal(rows, order, owners, world_size, even=even)
        got = [(p.chunk, i) for ps in dealt for p in ps for i in range(p.start, p.stop)]
        assert len(got) == len(set(got))  # no row twice
        total, q = sum(rows), sum(rows) // world_size
        counts = [sum(p.rows for p in ps) for ps in dealt]
        if even:
            assert counts == [q] * world_size  # the remainder (< world_size rows) left out
            assert total - len(got) == total % world_size
        else:
            assert len(got) == total and max(counts) - min(counts) <= 1
        for r, ps in enumerate(dealt):
            assert counts[r] == _plan.rank_rows(rows, world_size, r, even=even)
            positions = [list(order).index(p.chunk) for p in ps]
            assert positions == sorted(positions)  # each rank reads in the epoch's order


def test_the_deal_keeps_chunks_on_the_rank_that_holds_them():
    rows = [10] * 8
    owners = [0, 0, 0, 0, 1, 1, 1, 1]
    for epoch in range(5):
        order = _plan.chunk_order(8, seed=0, epoch=epoch, shuffle=True)
        dealt = _plan.deal(rows, order, owners, 2, even=True)
        for rank, pieces in enumerate(dealt):
            assert {p.chunk for p in pieces} == {c for c in range(8) if owners[c] == rank}
    # a worker holding too much: the surplus goes (split if need be) to the other rank
    dealt = _plan.deal([10, 10, 10, 5], [0, 1, 2, 3], [0, 0, 0, 0], 2, even=True)
    assert [sum(p.rows for p in ps) for ps in dealt] == [17, 17]
    # owned and fits: whole on its holder (0, then 3 in the room left); 1 and 2 are dealt
    assert _plan.Piece(0, 0, 10) in dealt[0] and _plan.Piece(3, 0, 5) in dealt[0]
    assert all(p.chunk not in (0, 3) for p in dealt[1])


def test_the_order_changes_every_epoch_and_follows_the_seed():
    a = [_plan.chunk_order(50, seed=1, epoch=e, shuffle=True).tolist() for e in range(3)]
    assert a[0] != a[1] != a[2]
    assert a == [_plan.chunk_order(50, seed=1, epoch=e, shuffle=True).tolist() for e in range(3)]
    assert a[0] != _plan.chunk_order(50, seed=2, epoch=0, shuffle=True).tolist()
    assert _plan.chunk_order(5, seed=1, epoch=3, shuffle=False).tolist() == list(range(5))
    wins = _plan.windows([_plan.Piece(c, 0, 4) for c in range(5)], 2)
    assert [len(w) for w in wins] == [2, 2, 1]
    assert _plan.skip(wins, 0) == (0, 0) and _plan.skip(wins, 9) == (1, 1)
    assert _plan.skip(wins, 20) == (3, 0)


# ---------------------------------------------------------------- train functions (by value)


def _read_epochs(epochs, batch_size):
    """The ids this rank read per epoch through prepare_loader, with a collective per step."""
    import torch.distributed as dist

    info = ddp.rank_info()
    train = ddp.shard("train", seed=5)
    loader = ddp.prepare_loader(train, batch_size)
    out = {"len": len(train), "steps": len(loader), "epochs": [], "batches": []}
    for _ in range(epochs):
        ids, sizes = [], []
        for xb, yb in loader:
            assert tuple(xb.shape[1:]) == (WIDTH,) and bool((xb[:, 0] == yb.float()).all())
            ids.extend(int(i) for i in yb)
            sizes.append(len(yb))
            if info.world_size > 1:
                dist.all_reduce(torch.ones(1))  # unequal steps would hang here
        out["epochs"].append(ids)
        out["batches"].append(sizes)
    out["owners"] = list(train.meta["owners"])
    out["seed6"] = [int(y) for _, y in ddp.shard("train", seed=6)]  # rows, one epoch
    out["val"] = [int(y) for _, y in ddp.shard("val", shuffle=False, even=False)]
    out["names"] = ddp.dataset_names()
    return out


def _image_rows(epochs, window=2):
    """Per epoch, ``(label, pixel sum)`` of every image this rank read, and its plan."""
    train = ddp.shard("train", seed=3, window=window)
    out = {"epochs": [], "plans": [], "classes": train.classes, "shapes": train.row_shapes}
    for epoch in range(epochs):
        out["plans"].append([tuple(p) for p in train.plan(epoch)])
        out["epochs"].append([(int(y), round(float(x.sum()), 3)) for x, y in train])
    return out


def _pairs(X, y):
    return sorted((int(label), round(float(x.sum()), 3)) for x, label in zip(X, y))


# ---------------------------------------------------------------- tests with ranks


def test_every_row_once_per_epoch_equal_steps_and_a_seeded_shuffle(client):
    from dasktrain._dask import block_futures

    X, y = client.persist(list(_table()))
    datasets = {"train": (X, y), "val": _table(chunks=(7, 7, 7))}
    res = ddp.run(_read_epochs, 3, 8, client=client, datasets=datasets, timeout=240)
    q = N // 2
    assert [res[r]["len"] for r in (0, 1)] == [q, q]
    assert res[0]["steps"] == res[1]["steps"] == math.ceil(q / 4)  # global batch 8: 4 a rank
    # which rank's worker holds each chunk: asked of the scheduler, for this attempt
    who = client.who_has(block_futures(X))
    holder = [who[f.key][0] for f in block_futures(X)]
    assert res[0]["owners"] == [[res.workers[0], res.workers[1]].index(h) for h in holder]
    for epoch in range(3):
        per_rank = [res[r]["epochs"][epoch] for r in (0, 1)]
        seen = per_rank[0] + per_rank[1]
        assert len(seen) == len(set(seen)) == 2 * q  # every row once, N % 2 left out
        assert len(set(range(N)) - set(seen)) == N % 2
        assert res[0]["batches"][epoch] == res[1]["batches"][epoch]  # the same steps
        for r in (0, 1):  # exactly the rows of the plan (locality first, then the deal)
            want = _expected_ids(CHUNKS, res[0]["owners"], 2, r, seed=5, epoch=epoch)
            assert set(per_rank[r]) == want
    assert res[0]["epochs"][0] != res[0]["epochs"][1]  # a new shuffle every epoch
    assert res[0]["seed6"] != res[0]["epochs"][0]  # and another with another seed
    assert sorted(res[0]["val"] + res[1]["val"]) == list(range(21))  # validation: all rows
    assert res[0]["names"] == ["train", "val"]
    again = ddp.run(_read_epochs, 3, 8, client=client, datasets=datasets, timeout=240)
    assert [again[r]["epochs"] for r in (0, 1)] == [res[r]["epochs"] for r in (0, 1)]


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    from dasktrain.datasets import make_xray_like

    return make_xray_like(tmp_path_factory.mktemp("shards") / "x", n_per_class=20, size=32)


def _refuse(*args, **kwargs):
    raise AssertionError("the driver computed image data")


def test_lazy_images_are_decoded_on_the_workers_never_on_the_driver(client, xray, monkeypatch):
    import dask

    from dasktrain.images import read_images

    with client.as_current():
        imgs = read_images(xray / "train", size=32, engine="dask", chunk_size=7)
    assert len(imgs.X.chunks[0]) > 2
    # From here on, decoding an image or computing anything with dask on the driver fails.
    with monkeypatch.context() as m, dask.config.set(scheduler=_refuse):
        m.setattr("dasktrain.images._decode.decode_many", _refuse)
        res = ddp.run(_image_rows, 2, client=client, datasets={"train": imgs}, timeout=240)
    # The local twin streams the same chunks in this process: all of them, in the epoch's order.
    twin = ddp.run_local(_image_rows, 2, datasets={"train": imgs})[0]
    local = read_images(xray / "train", size=32, engine="local")
    everything = _pairs(local.X, local.y)
    n, q = len(everything), len(everything) // 2
    for epoch in range(2):
        ranks = res[0]["epochs"][epoch] + res[1]["epochs"][epoch]
        assert len(res[0]["epochs"][epoch]) == len(res[1]["epochs"][epoch]) == q
        assert len(set(ranks)) == len(ranks) and set(ranks) <= set(everything)
        assert sorted(twin["epochs"][epoch]) == everything
        order = _plan.chunk_order(len(imgs.X.chunks[0]), seed=3, epoch=epoch, shuffle=True)
        assert twin["plans"][epoch] == [(c, 0, imgs.X.chunks[0][c]) for c in order]
    assert n - 2 * q == n % 2
    assert res[0]["classes"] == twin["classes"] == imgs.classes
    assert res[0]["shapes"] == [(32, 32, 1), ()]


def _fail_on_chunk_2(x, block_info=None):
    if block_info[0]["chunk-location"][0] == 2:
        raise ValueError("chunk two is broken: marker-5521")
    return x


def _read_all():
    return sum(len(x) for x in ddp.shard("train", shuffle=False).batches(4))


def test_a_chunk_that_fails_names_the_chunk_the_dataset_and_the_worker(client):
    X, _ = _table()
    bad = X.map_blocks(_fail_on_chunk_2, dtype=X.dtype)
    with pytest.raises(DDPError) as info:
        ddp.run(_read_all, client=client, datasets={"train": bad}, timeout=120)
    msg = str(info.value)
    assert "reading chunk 2 of datasets['train'] on worker tcp://" in msg
    assert "marker-5521" in msg


def _frame_rows():
    return [(x.tolist(), float(y)) for x, y in ddp.shard("train", shuffle=False, even=False)]


def test_a_dataframe_dataset(client):
    import dask.dataframe as dd
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(37, 6)), columns=[f"f{i}" for i in range(6)])
    df["label"] = rng.integers(0, 3, size=37)
    ddf = dd.from_pandas(df, npartitions=4)
    features = [f"f{i}" for i in range(6)]
    res = ddp.run(
        _frame_rows, client=client, datasets={"train": (ddf[features], ddf["label"])}, timeout=120
    )
    got = sorted(res[0] + res[1])
    want = sorted((np.float32(r[features]).tolist(), float(r["label"])) for _, r in df.iterrows())
    assert got == want


def test_shards_in_a_rank_pool_match_one_job_ranks(client):
    datasets = {"train": _table(), "val": _table(chunks=(7, 7, 7))}
    cold = ddp.run(_read_epochs, 2, 8, client=client, datasets=datasets, timeout=240)
    with ddp.RankPool(client, timeout=240) as pool:
        first = ddp.run(_read_epochs, 2, 8, pool=pool, datasets=datasets)
        pids = pool.pids()
        warm = ddp.run(_read_epochs, 2, 8, pool=pool, datasets=datasets)
        assert pool.pids() == pids  # the same processes served both jobs
    for res in (first, warm):
        assert [res[r]["epochs"] for r in (0, 1)] == [cold[r]["epochs"] for r in (0, 1)]


def _two_readers(epochs):
    """A training shard and a second shard of the same dataset read in turn, every epoch."""
    train = ddp.shard("train", seed=5)
    whole = ddp.shard("train", shuffle=False, even=False)
    out = {"train": [], "whole": []}
    for _ in range(epochs):
        out["train"].append([int(y) for _, y in train])
        out["whole"].append([int(y) for _, y in whole])
    out["owners"] = list(train.meta["owners"])
    return out


def test_two_shards_of_one_dataset_read_in_turn(client):
    # Regression: a shard asks for its next epoch's chunks early; a second shard of the same
    # dataset read in between replaced that request, and the next epoch failed ("a newer
    # iteration began").
    X, y = client.persist(list(_table()))
    res = ddp.run(_two_readers, 3, client=client, datasets={"train": (X, y)}, timeout=120)
    for epoch in range(3):
        for r in (0, 1):
            want = _expected_ids(CHUNKS, res[0]["owners"], 2, r, seed=5, epoch=epoch)
            assert set(res[r]["train"][epoch]) == want
        assert sorted(res[0]["whole"][epoch] + res[1]["whole"][epoch]) == list(range(N))
    twin = ddp.run_local(_two_readers, 2, datasets={"train": _table()})[0]
    assert twin["whole"] == [list(range(N))] * 2
    assert sorted(twin["train"][0]) == sorted(twin["train"][1]) == list(range(N))
    # the next epoch each shard asked for early is stopped with the job: no thread is left
    assert not [t for t in threading.enumerate() if t.name == "dasktrain-shard-prefetch"]


# ---------------------------------------------------------------- resume after a killed worker


def _resumable(marker, epochs, batch_size):
    """Train-like loop over the shard, checkpointing after every step; ids reported per step."""
    import torch.distributed as dist

    info = ddp.rank_info()
    train = ddp.shard("train", seed=1, window=1)
    loader = ddp.prepare_loader(train, batch_size)
    state = ddp.load_checkpoint()
    epoch, step = 0, 0
    if state is not None:
        loader.load_state_dict(state["data"])
        epoch, step = state["data"]["epoch"], state["step"]
    resumed = (epoch, step)
    while epoch < epochs:
        for _, yb in loader:
            dist.all_reduce(torch.ones(1))
            step += 1
            ddp.report(epoch=epoch, step=step, ids=" ".join(str(int(i)) for i in yb))
            if info.checkpoint_dir:
                state = loader.state_dict()
                ddp.save_checkpoint({"data": state, "step": step if state["rows"] else 0})
            if marker and epoch == 1 and step == 3 and info.rank == 0:
                open(marker, "w").close()
            time.sleep(0.3)
        epoch, step = epoch + 1, 0
    return {"resumed": list(resumed), "owners": list(train.meta["owners"])}


def _kill_when(marker, client, address, timeout=120):
    pid = client.run(os.getpid, workers=[address])[address]

    def killer():
        deadline = time.monotonic() + timeout
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def _steps(history, attempt):
    return {
        (r["rank"], r["epoch"], r["step"]): r["ids"] for r in history if r["attempt"] == attempt
    }


def test_resume_mid_epoch_after_a_killed_worker(own_client, tmp_path):
    client = own_client
    X, y = client.persist(list(_table()))
    datasets = {"train": (X, y)}
    ref = ddp.run(_resumable, None, 3, 4, client=client, datasets=datasets, timeout=240)
    reference = _steps(ref.history, 0)
    marker = str(tmp_path / "epoch-1-step-3")
    thread = _kill_when(marker, client, sorted(client.nthreads())[1])
    res = ddp.run(
        _resumable,
        marker,
        3,
        4,
        client=client,
        datasets=datasets,
        timeout=240,
        max_restarts=1,
        checkpoint_dir=tmp_path / "ckpt",
    )
    thread.join(5)
    assert res.attempts == 2 and "left the cluster" in res.failures[0]
    epoch, step = res[0]["resumed"]
    assert epoch == 1 and step >= 3  # within the epoch, where the checkpoint was
    # Up to the end of the interrupted epoch, every step reads exactly the rows of the
    # uninterrupted run: before the checkpoint in the first attempt, after it in the second,
    # though the chunks now live elsewhere (the epoch keeps the deal it began with).
    first, second = _steps(res.history, 0), _steps(res.history, 1)
    done = {k: v for k, v in first.items() if (k[1], k[2]) <= (epoch, step)}
    # (the last reports of the killed worker's rank may be lost with it: those that came match)
    assert all(reference[k] == v for k, v in done.items())
    assert set(second) == {k for k in reference if (k[1], k[2]) > (epoch, step)}
    assert {k: v for k, v in second.items() if k[1] == 1} == {
        k: v for k, v in reference.items() if k[1] == 1 and k[2] > step
    }
    # Later epochs are dealt by where the chunks live now (locality after the restart): the
    # same steps, every row once, each rank exactly its rows of the new deal.
    owners = res[0]["owners"]
    for r in (0, 1):
        ids = [int(i) for k, v in second.items() if k[0] == r and k[1] == 2 for i in v.split()]
        assert len(ids) == len(set(ids))
        assert set(ids) == _expected_ids(CHUNKS, owners, 2, r, seed=1, epoch=2)


@pytest.fixture(scope="module")
def xray_600(tmp_path_factory):
    from dasktrain.datasets import make_xray_like

    return make_xray_like(tmp_path_factory.mktemp("xray") / "x", n_per_class=400, size=64)


def _kill_at_a_mid_epoch_checkpoint(path, pid, timeout=240):
    """SIGKILL ``pid`` once the checkpoint at ``path`` was taken within an epoch >= 1."""

    def killer():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                position = torch.load(path, weights_only=True).get("position")
            except (OSError, RuntimeError, EOFError):
                position = None
            if position and position["epoch"] >= 1:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_the_recipe_resumes_within_the_epoch_and_ends_as_if_never_stopped(
    own_client, xray_600, tmp_path
):
    from dasktrain.ddp.recipes import train_classifier
    from dasktrain.images import read_images

    client = own_client
    with client.as_current():
        sets = {
            name: read_images(xray_600 / folder, size=64, engine="dask", chunk_size=64, shuffle=1)
            for name, folder in (("train", "train"), ("val", "test"))
        }
    kw = dict(model="smallcnn", epochs=3, batch_size=16, lr=1e-2, seed=0, checkpoint_steps=5)
    ref = ddp.run(train_classifier, client=client, datasets=sets, timeout=300, **kw)
    victim = sorted(client.nthreads())[1]
    pid = client.run(os.getpid, workers=[victim])[victim]
    ckpt = tmp_path / "ckpt"
    thread = _kill_at_a_mid_epoch_checkpoint(ckpt / "checkpoint.pt", pid)
    res = ddp.run(
        train_classifier,
        client=client,
        datasets=sets,
        timeout=300,
        max_restarts=1,
        checkpoint_dir=ckpt,
        **kw,
    )
    thread.join(5)
    assert res.attempts == 2 and "left the cluster" in res.failures[0]
    assert res[0]["resumed_from"] >= 1 and res[0]["resumed_step"] > 0
    assert len(res[0]["history"]) == 3
    for got, want in zip(res[0]["history"], ref[0]["history"]):
        assert got["train_accuracy"] == want["train_accuracy"]
        assert got["accuracy"] == want["accuracy"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-9)


# ---------------------------------------------------------------- errors


def _ask(name):
    return len(ddp.shard(name))


def test_what_is_not_a_dataset_is_refused_before_any_rank_starts(client, xray):
    from dasktrain.images import read_images

    X, y = _table()
    local = read_images(xray / "train", size=16, engine="local")
    cases = [
        ({"train": np.zeros((4, 2))}, "not a dask collection"),
        ({"train": local}, "engine='local'"),
        ({"train": (X, y[:10])}, "row chunks"),
        ({"train": (X, np.arange(N))}, "not a dask collection"),
        ([X], "must be a non-empty dict"),
        ({"": X}, "non-empty strings"),
    ]
    for datasets, match in cases:
        with pytest.raises(ValidationError, match=match):
            ddp.run(_ask, "train", client=client, datasets=datasets, timeout=60)
    with pytest.raises(DDPError, match="inside train_fn"):
        ddp.shard("train")
    with pytest.raises(DDPError, match=r"no dataset 'val'; its datasets are \['train'\]"):
        ddp.run(_ask, "val", client=client, datasets={"train": X}, timeout=120)


def test_data_held_in_the_graph_is_refused_naming_the_fix(client, monkeypatch):
    import dasktrain.ddp._datasets as datasets_module

    monkeypatch.setattr(datasets_module, "GRAPH_LIMIT", 50_000)  # our table is 108 kB
    with pytest.raises(ValidationError, match=r"datasets\['train'\] carries .*client.persist"):
        ddp.run(_ask, "train", client=client, datasets={"train": _table()}, timeout=60)


def _loader_with_workers():
    ddp.prepare_loader(ddp.shard("train"), 4, num_workers=2)


def test_shard_options_are_checked():
    X, y = _table()
    with pytest.raises(ValidationError, match="num_workers=2"):
        ddp.run_local(_loader_with_workers, datasets={"train": (X, y)})
    for kw, match in (({"window": 0}, "window=0"), ({"seed": -1}, "seed=-1")):
        with pytest.raises(ValidationError, match=match):
            ddp.run_local(ddp.shard, "train", datasets={"train": X}, **kw)
