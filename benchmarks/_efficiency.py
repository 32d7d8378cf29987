"""Every core at full work: each engine's throughput against one core and the 2-core ceiling.

Issue "Every core at full work". For each step the same work is timed, interleaved, on

* one plain single-thread process and two of them side by side (:mod:`benchmarks._calibrate`:
  one core, and the machine's two-process ceiling, measured in this run);
* the local engine in this process (1 and 2 threads);
* ``dasktrain.connect`` clusters of 1 worker x 1 thread and 2 workers x 1 thread;
* with ``--before``: the same clusters with Dask's own allocator setting
  (``dasktrain.malloc.workers: False``) and the local engine with ``dasktrain.malloc.local:
  False``, to show what the allocator settings changed in the same run.

and printed with its per-core efficiency (throughput / (cores x one core)) and, for 2-core
contenders, its fraction of the ceiling. Each cluster lives for its own timed run only (started,
data persisted, one untimed pass, the timed pass, closed): idle Dask processes take CPU that two
busy cores do not have to spare (:func:`cluster`)::

    nice -n -10 .venv/bin/python benchmarks/parity.py efficiency features --n 8192 --before
    nice -n -10 .venv/bin/python benchmarks/parity.py efficiency features \
        --backbone resnet18 --n 1024
    nice -n -10 .venv/bin/python benchmarks/parity.py efficiency fused --n 8192 --data /tmp/x8k
    nice -n -10 .venv/bin/python benchmarks/parity.py efficiency ddp --before
    nice -n -10 .venv/bin/python benchmarks/parity.py efficiency all --data /tmp/x30k

``all`` prints every row of the issue's table in turn: the three above, then the KMeans,
30,000-image pipeline, read_images and XGBoost rows of :mod:`benchmarks.parity`.

``features``: images persisted on the workers (in memory here), so only extraction is timed.
``fused``: image files read lazily and extracted in the same tasks (``read_images(engine=
"dask")`` -> ``CNNFeatures``), against the same read + extraction in the plain processes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks._calibrate import Calibration, of_ceiling, per_core

SIDE = 128
CHUNK = 256


def _load():
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def images(n, side=SIDE, seed=0):
    """``n`` deterministic gray images in [0, 1], float32."""
    return np.random.default_rng(seed).random((n, side, side, 1), dtype=np.float32)


# ----------------------------------------------------------------- work of the plain processes
def features_work(backbone, n, side=SIDE):
    """One core's version of a task's work: the chunks of ``n`` images through the trunk."""
    import torch

    from dasktrain.features import CNNFeatures
    from dasktrain.features.cnn import cnn_block

    torch.set_num_threads(1)
    X = images(n, side)
    kw = CNNFeatures(backbone)._block_kwargs(X.shape)
    chunks = [X[i : i + CHUNK] for i in range(0, n, CHUNK)]

    def work():
        for c in chunks:
            cnn_block(c, n_threads=1, **kw)

    return work


def mixed(pairs):
    """``(path, label)`` pairs with the classes taking turns: a chunk of them (one task's
    files, the warm-up's first chunks) holds every class, as ``read_images`` requires."""
    by_class = {}
    for pair in pairs:
        by_class.setdefault(pair[1], []).append(pair)
    turns = itertools.zip_longest(*by_class.values())
    return [pair for turn in turns for pair in turn if pair is not None]


def fused_work(backbone, root, n):
    """One core's version of a fused task: read and decode 256 files, then extract."""
    import torch

    from benchmarks import bench_scale
    from dasktrain.features import CNNFeatures
    from dasktrain.images import read_images

    torch.set_num_threads(1)
    pairs = mixed(bench_scale.select(root, n))
    fe = CNNFeatures(backbone, engine="local", n_threads=1)

    def work():
        for i in range(0, n, CHUNK):
            ds = read_images(pairs[i : i + CHUNK], size=SIDE, engine="local")
            fe.transform(ds.X)

    return work


# --------------------------------------------------------------------------------- clusters
#: (label suffix, dasktrain.malloc.workers) of the clusters a row times
KINDS = (("", True), (", Dask's malloc", False))


def cluster_names(before):
    """``{name: (workers, tuned)}`` of the clusters a row times (Dask's own with ``before``)."""
    kinds = KINDS if before else KINDS[:1]
    return {f"dask {w}x1{label}": (w, tuned) for label, tuned in kinds for w in (1, 2)}


@contextlib.contextmanager
def cluster(workers, tuned):
    """A ``dasktrain.connect`` cluster alive for one timed run only.

    Idle Dask processes are not free: an idle worker takes about 4% of a core (heartbeats,
    its system monitor, the 10 ms stack profiler), and four idle clusters took 36% of one,
    which on two cores brought the two-process ceiling of smallcnn from 1.8x to 1.5x. So no
    cluster is alive while another contender is timed.
    """
    import dask

    import dasktrain

    with dask.config.set({"dasktrain.malloc.workers": tuned}):
        c = dasktrain.connect(
            n_workers=workers, threads_per_worker=1, memory_limit="4GiB",
            dashboard_address="127.0.0.1:0", gpu=False,
        )  # fmt: skip
    try:
        c.wait_for_workers(workers)
        yield c
    finally:
        c.close()


def timed(fn, warmup=None):
    """Seconds of ``fn()``, after ``warmup()`` (untimed) when given."""
    if warmup is not None:
        warmup()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rounds(contenders, repeat):
    """``{name: [seconds, ...]}``: each contender returns its own timed seconds; every round
    runs them all in turn (A B C ... A B C ...) after one untimed round."""
    for fn in contenders.values():
        fn()
    out = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            out[name].append(fn())
    return out


def _local(backbone, threads, tuned=True):
    import dask

    from dasktrain.features import CNNFeatures

    fe = CNNFeatures(backbone, engine="local", n_threads=threads)

    def run(X):
        with dask.config.set({"dasktrain.malloc.local": tuned}):
            return fe.transform(X)

    return run


# ----------------------------------------------------------------------------------- report
def cores_of(name):
    return 2 if ("2x1" in name or "2 threads" in name or name.startswith("two")) else 1


def report(title, times, n):
    """Print each contender's median, images/s, per-core efficiency and fraction of ceiling."""
    med = {k: statistics.median(v) for k, v in times.items()}
    t1, t2 = med["one core (plain process)"], med["two plain processes"]
    print(f"{title}; {_load()}")
    print(f"  two-process ceiling {2 * t1 / t2:.2f}x one core (same work, same run)")
    print(
        f"  {'contender':34s} {'median s':>9s} {'img/s':>7s} {'per core':>9s} {'of ceiling':>10s}"
    )
    for name, t in med.items():
        c = cores_of(name)
        imgs = n * (2 if name.startswith("two") else 1) / t
        eff = per_core(t1, t / (2 if name.startswith("two") else 1), c)
        ceil = f"{of_ceiling(t1, t2, t):10.2f}" if c == 2 and not name.startswith("two") else ""
        spread = f"  ({min(times[name]):.2f}-{max(times[name]):.2f})"
        print(f"  {name:34s} {t:9.3f} {imgs:7.0f} {eff:9.2f} {ceil:>10s}{spread}")
    return med


def features_row(backbone="smallcnn", n=4096, repeat=3, before=False):
    """Extraction of persisted images: every engine against one core and the ceiling."""
    X = images(n)
    with Calibration("benchmarks._efficiency:features_work", backbone=backbone, n=n) as cal:
        fns = {"one core (plain process)": cal.one, "two plain processes": cal.two}
        for threads in (1, 2):
            fns[f"local, {threads} thread{'s' * (threads > 1)}"] = _local_run(backbone, threads, X)
        if before:
            fns["local, 2 threads, glibc's malloc"] = _local_run(backbone, 2, X, tuned=False)
        for name, (workers, tuned) in cluster_names(before).items():
            fns[name] = functools.partial(_persisted_dask, backbone, X, workers, tuned)
        times = rounds(fns, repeat)
    title = f"{backbone} features of {n:,} persisted {SIDE}x{SIDE} images, {CHUNK}-image chunks"
    return report(title, times, n)


def _local_run(backbone, threads, X, tuned=True):
    import dask

    from dasktrain.features import CNNFeatures

    fe = CNNFeatures(backbone, engine="local", n_threads=threads)

    def run():
        with dask.config.set({"dasktrain.malloc.local": tuned}):
            return timed(lambda: fe.transform(X))

    return run


def _persisted_dask(backbone, X, workers, tuned):
    """Seconds of one extraction on a fresh cluster, the images persisted and the models
    built first (one untimed pass)."""
    import dask.array as da

    from dasktrain._dask import balanced_persist
    from dasktrain.features import CNNFeatures

    ext = CNNFeatures(backbone, engine="dask")
    with cluster(workers, tuned) as c:
        # Spread evenly, as a persisted read leaves them: persisting from_array chunks put 19
        # of 32 on one worker and 13 on the other (they compute instantly, whoever is free
        # takes them), which alone caps 2 workers at 0.84 of their ceiling.
        (Xd,) = balanced_persist(c, [da.from_array(X, chunks=(CHUNK, SIDE, SIDE, 1))])

        def run():
            c.compute(ext.transform(Xd, client=c)).result()

        return timed(run, warmup=run)


def fused_row(backbone="smallcnn", n=8192, repeat=3, data=None):
    """Lazy read fused with extraction: every engine against one core and the ceiling."""
    from benchmarks import bench_scale
    from dasktrain.images import read_images

    with tempfile.TemporaryDirectory(prefix="efficiency-") as tmp:
        root = data or os.path.join(tmp, "images")
        if not os.path.isdir(root):
            bench_scale.write_images(root, n)
        pairs = mixed(bench_scale.select(root, n))
        work = "benchmarks._efficiency:fused_work"
        with Calibration(work, backbone=backbone, root=root, n=n) as cal:
            fns = {"one core (plain process)": cal.one, "two plain processes": cal.two}

            def local_fused():
                from dasktrain.features import CNNFeatures

                fe = CNNFeatures(backbone, engine="local", n_threads=2)
                return timed(lambda: fe.transform(read_images(pairs, size=SIDE).X))

            fns["local, 2 threads"] = local_fused
            for name, (workers, tuned) in cluster_names(False).items():
                fns[name] = functools.partial(_fused_dask, backbone, pairs, workers, tuned)
            times = rounds(fns, repeat)
    return report(f"read -> {backbone} (fused), {n:,} image files {SIDE}x{SIDE}", times, n)


def _fused_dask(backbone, pairs, workers, tuned):
    """Seconds of one lazy read + extraction on a fresh cluster (models built first)."""
    from dasktrain.features import CNNFeatures
    from dasktrain.images import read_images

    with cluster(workers, tuned) as c:

        def run(part=pairs):
            with c.as_current():
                ds = read_images(part, size=SIDE, engine="dask", chunk_size=CHUNK)
                c.compute(CNNFeatures(backbone, engine="dask").transform(ds.X)).result()

        return timed(run, warmup=lambda: run(pairs[: 2 * workers * CHUNK]))


# ------------------------------------------------------------------------------------- DDP
def step_work(model, per_rank, steps, side=64, seed=0):
    """A rank's training steps without a process group: ``steps`` Adam steps on ``per_rank``
    images, the network built as ``train_classifier`` builds it."""
    import torch
    import torch.nn.functional as F

    from dasktrain.ddp.recipes import _build_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = _build_model(
        model, n_features=0, in_channels=1, num_classes=2, seed=seed, hidden=0, pool="max"
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xb = torch.from_numpy(images(per_rank, side, seed).transpose(0, 3, 1, 2).copy())
    yb = torch.arange(per_rank) % 2

    def work():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            opt.step()

    return work


def ddp_row(model="resnet18", n=512, batch_size=64, epochs=2, repeat=3, before=False):
    """2 ranks / 1 rank against the same steps in 2 plain processes / 1 (no exchange)."""
    from benchmarks.bench_ddp import _images
    from dasktrain import ddp
    from dasktrain.ddp.recipes import train_classifier

    X, y = _images(n, 64)
    steps = epochs * (n // batch_size)
    kw = dict(model=model, epochs=epochs, batch_size=batch_size, seed=0, timeout=600)
    work = "benchmarks._efficiency:step_work"
    sps = {}
    with Calibration(
        work, model=model, per_rank=batch_size // 2, steps=steps, alone={"per_rank": batch_size}
    ) as cal:
        fns = {"one core (plain process)": cal.one, "two plain processes": cal.two}
        for name, (workers, tuned) in cluster_names(before).items():
            if workers != 2:
                continue  # 1 and 2 ranks run on a 2-worker cluster
            for ranks in (1, 2):
                label = f"{ranks} rank{'s' * (ranks > 1)}{name[len('dask 2x1') :]}"
                sps[label] = []

                def fn(ranks=ranks, label=label, tuned=tuned):
                    with cluster(2, tuned) as c:
                        res = ddp.run(train_classifier, X, y, client=c, workers=ranks, **kw)
                    sps[label].append(res[0]["samples_per_s"])
                    return 0.0

                fns[label] = fn
        times = rounds(fns, repeat)
        for v in sps.values():
            del v[0]  # the untimed round
    t1, t2 = (
        statistics.median(times[k]) for k in ("one core (plain process)", "two plain processes")
    )
    ceiling = t1 / t2  # same samples: the pair's half batches make one global batch
    print(f"DDP {model} 64x64, {n} images, global batch {batch_size}, {epochs} epochs; {_load()}")
    print(f"  two-process ceiling (2 x batch {batch_size // 2} / 1 x batch {batch_size}): "
          f"{ceiling:.2f}x")  # fmt: skip
    med = {k: statistics.median(v) for k, v in sps.items()}
    for k, v in sps.items():
        print(f"  {k:28s} {med[k]:7.1f} samples/s  ({min(v):.1f}-{max(v):.1f})")
    for label in [k for k in med if k.startswith("2 ranks")]:
        ratio = med[label] / med["1 rank" + label[len("2 ranks") :]]
        print(f"  {label}: 2 ranks / 1 rank {ratio:.2f}x = {ratio / ceiling:.2f} of the ceiling")
    return med


def all_rows(repeat=3, data=None):
    """Every row of the issue's table, one after the other (about an hour on 2 cores)."""
    from benchmarks import parity

    features_row("smallcnn", 8192, repeat, before=True)
    features_row("resnet18", 1024, repeat, before=True)
    fused_row("smallcnn", 8192, repeat, data)
    ddp_row(repeat=repeat, before=True)
    parity.kmeans_row(200_000, 20, 8, "two-blobs", repeat=repeat)
    parity.kmeans_row(2_000_000, 20, 8, "two-blobs", repeat=repeat)
    parity.pipeline_row(30_000, "smallcnn", max(2, repeat - 1), True, data)
    parity.images_row(["-n", "2000", "--repeat", str(repeat)])
    parity.xgb_row(["--n", "200000", "--rounds", "50", "--repeat", str(repeat)])


def main(argv=None):
    p = argparse.ArgumentParser(prog="parity.py efficiency")
    p.add_argument("row", choices=("features", "fused", "ddp", "all"))
    p.add_argument("--backbone", default="smallcnn")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--before", action="store_true", help="also Dask's and glibc's malloc")
    p.add_argument("--data", default=None, help="image folder to reuse or create (fused)")
    p.add_argument("--model", default="resnet18", help="network of the ddp row")
    p.add_argument("--batch-size", type=int, default=64, help="global batch of the ddp row")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the ddp row")
    a = p.parse_args(argv)
    if a.row == "all":
        return all_rows(a.repeat, a.data)
    if a.row == "features":
        features_row(a.backbone, a.n or 4096, a.repeat, a.before)
    elif a.row == "fused":
        fused_row(a.backbone, a.n or 8192, a.repeat, a.data)
    else:
        ddp_row(a.model, a.n or 512, a.batch_size, a.epochs, a.repeat, a.before)
