"""Issue 23's table: DDP fed by Dask shards against the in-memory path (``parity.py ddp-shards``).

Every row starts a fresh local cluster of 2 workers x 1 thread (``dasktrain.connect``), so each
worker's lifetime peak memory is the row's:

* **memory**: ``--n`` images (default 30,000) of 128 x 128 gray read lazily
  (``read_images(engine="dask", shuffle=True)``), ``train_classifier`` on
  ``datasets={"train": ...}`` for ``--epochs`` epochs; the driver's RSS sampled every 20 ms
  during ``ddp.run`` (its peak above the RSS just before the call), each rank's peak RSS
  (``ru_maxrss``, reported by the rank), each worker's. Then the rank peak again on ``--big``
  images (default 100,000: the same files listed again, one epoch);
* **throughput** at ``--throughput-n`` images (9,000): samples/s per rank of
  ``train_classifier`` (training time only) from the arrays computed to the driver and passed
  to every rank (the path before shards) against shards, lazy (decoded on the workers while
  training) and persisted (decoded before); interleaved, medians;
* **accuracy** of ``ddp_cnn`` (demo data: 400 images per class, 64 x 64, split 3:1 as
  ``compare()`` does, the workload's recipe): shards (the workload's own ``datasets``) vs the
  arrays, same seeds and epochs;
* **kill and resume**: the sharded ``ddp_cnn`` run with a checkpoint every 5 steps; a worker is
  killed (SIGKILL) at the first checkpoint taken within an epoch >= 1, ``max_restarts=1``:
  where the job resumed, and its final accuracy against the uninterrupted run.

The image folder (``--files`` distinct images, default 30,000) is made once and reused
(``--data``, default a folder under the system's temporary directory).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np

from benchmarks._common import start_cluster, stop_cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

GIB = 2**30
RECIPE = dict(model="smallcnn", epochs=12, batch_size=16, lr=1e-2, seed=0)  # ddp_cnn's


def _train_measured(*args, **kw):
    """``train_classifier`` plus this rank's peak RSS (bytes)."""
    import resource

    from dasktrain.ddp.recipes import train_classifier

    out = train_classifier(*args, **kw)
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def _worker_peak():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Sampler:
    """The driver's RSS every ``interval`` s in a thread: its peak above the start."""

    def __init__(self, interval=0.02):
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _images(folder, n, files=30_000):
    """``n`` images as (path, label) pairs: the folder's files, listed again when n is larger.

    The folder holds ``files`` images (made once; a folder made with another count is made
    again under a name of its own).
    """
    from dasktrain.datasets import make_xray_like

    root = Path(folder) / f"{files}"
    if not (root / "done").exists():
        t0 = time.perf_counter()
        make_xray_like(root / "xray", n_per_class=files // 2, size=128, seed=0)
        (root / "done").write_text(f"{files} images\n")
        print(f"  made {files:,} images in {time.perf_counter() - t0:.0f} s", flush=True)
    files = sorted((root / "xray").rglob("*.png"))
    pairs = [(str(p), p.parent.name) for p in files]
    rng = np.random.default_rng(0)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    return [pairs[i % len(pairs)] for i in range(n)]


def _read(pairs, client, chunk_size=256):
    from dasktrain.images import read_images

    with client.as_current():
        return read_images(pairs, size=128, engine="dask", chunk_size=chunk_size, shuffle=True)


def memory_row(folder, n, big, epochs, files):
    """Driver, rank and worker peaks with shards on ``n`` images; the rank peak on ``big``."""
    from dasktrain import ddp

    out = {}
    for count, n_epochs in ((n, epochs), (big, 1)):
        if not count:
            continue
        cluster, client = start_cluster(2, 1)
        try:
            imgs = _read(_images(folder, count, files), client)
            with _Sampler() as s:
                res = ddp.run(
                    _train_measured,
                    client=client,
                    datasets={"train": imgs},
                    epochs=n_epochs,
                    batch_size=64,
                    lr=3e-3,
                    timeout=7200,
                )
            out[count] = {
                "driver_before": s.before,
                "driver_peak": s.peak - s.before,
                "ranks": [res[r]["peak_rss"] for r in sorted(res)],
                "workers": sorted(client.run(_worker_peak).values()),
                "samples_per_s": res[0]["samples_per_s"] / len(res),
            }
            print(f"  {count} images: {_mem(out[count])}", flush=True)
        finally:
            stop_cluster(cluster, client)
    return out


def _mem(m):
    ranks = " / ".join(f"{r / GIB:.2f}" for r in m["ranks"])
    workers = " / ".join(f"{w / GIB:.2f}" for w in m["workers"])
    return (
        f"driver +{m['driver_peak'] / GIB:.3f} GiB (before {m['driver_before'] / GIB:.2f}), "
        f"ranks {ranks} GiB, workers {workers} GiB, {m['samples_per_s']:.0f} samples/s/rank"
    )


def throughput_row(folder, n, epochs, repeat, files):
    """samples/s per rank: arrays vs lazy shards vs persisted shards, interleaved."""
    from dasktrain import ddp

    kw = dict(epochs=epochs, batch_size=64, lr=3e-3, timeout=7200)
    cluster, client = start_cluster(2, 1)
    try:
        imgs = _read(_images(folder, n, files), client)
        kept = imgs.persist(client=client)
        from distributed import wait

        wait([kept.X, kept.y])

        def arrays():
            local = imgs.to_numpy(client=client)  # the path before shards: all to the driver
            return ddp.run(_train_measured, local.X, local.y, client=client, **kw)

        runs = {
            "arrays": arrays,
            "shards, lazy": lambda: ddp.run(
                _train_measured, client=client, datasets={"train": imgs}, **kw
            ),
            "shards, persisted": lambda: ddp.run(
                _train_measured, client=client, datasets={"train": kept}, **kw
            ),
        }
        got = {name: [] for name in runs}
        for _ in range(repeat):
            for name, fn in runs.items():
                with _Sampler() as s:
                    res = fn()
                got[name].append(
                    (res[0]["samples_per_s"] / len(res), s.peak - s.before, res[0]["peak_rss"])
                )
                print(f"  {name}: {got[name][-1][0]:.1f} samples/s/rank", flush=True)
        return {
            name: tuple(statistics.median(v[i] for v in vals) for i in range(3))
            for name, vals in got.items()
        }
    finally:
        stop_cluster(cluster, client)


def _demo_split():
    from sklearn.model_selection import train_test_split

    from dasktrain.datasets import make_xray_like
    from dasktrain.images import read_images

    tmp = tempfile.mkdtemp(prefix="dasktrain-demo-")
    root = make_xray_like(Path(tmp) / "x", n_per_class=400, size=64, seed=0)
    iset = read_images(root / "train", size=64, color="gray", engine="local")
    X, y = np.asarray(iset.X), np.asarray(iset.y)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def accuracy_row(split):
    """ddp_cnn's final accuracy: arrays vs shards (the workload's datasets), same seeds."""
    from dasktrain import ddp
    from dasktrain.harness.workloads.ddp import _ddp_datasets

    Xtr, Xte, ytr, yte = split
    cluster, client = start_cluster(2, 1)
    try:
        arrays = ddp.run(
            _train_measured, Xtr, ytr, X_val=Xte, y_val=yte, client=client, timeout=3600, **RECIPE
        )
        data = _ddp_datasets(client, Xtr, ytr, Xte, yte)
        shards = ddp.run(
            _train_measured, client=client, datasets=data, num_classes=2, timeout=3600, **RECIPE
        )
        return {
            "arrays": [h["accuracy"] for h in arrays[0]["history"]],
            "shards": [h["accuracy"] for h in shards[0]["history"]],
        }
    finally:
        stop_cluster(cluster, client)


def _kill_at_mid_epoch(path, pid, when):
    import torch

    def killer():
        while True:
            try:
                position = torch.load(path, weights_only=True).get("position")
            except (OSError, RuntimeError, EOFError):
                position = None
            if position and position["epoch"] >= 1:
                os.kill(pid, signal.SIGKILL)
                when.append((position["epoch"], position["step"]))
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def resume_row(split):
    """The sharded ddp_cnn run, a worker killed within epoch >= 1, max_restarts=1."""
    from dasktrain import ddp
    from dasktrain.harness.workloads.ddp import _ddp_datasets

    Xtr, Xte, ytr, yte = split
    cluster, client = start_cluster(2, 1)
    try:
        data = _ddp_datasets(client, Xtr, ytr, Xte, yte)
        ckpt = Path(tempfile.mkdtemp(prefix="dasktrain-ckpt-"))
        victim = sorted(client.nthreads())[1]
        pid = client.run(os.getpid, workers=[victim])[victim]
        when = []
        thread = _kill_at_mid_epoch(ckpt / "checkpoint.pt", pid, when)
        res = ddp.run(
            _train_measured,
            client=client,
            datasets=data,
            num_classes=2,
            timeout=3600,
            max_restarts=1,
            checkpoint_dir=ckpt,
            checkpoint_steps=5,
            **RECIPE,
        )
        thread.join(5)
        return {
            "attempts": res.attempts,
            "killed_at": when[0] if when else None,
            "resumed": (res[0]["resumed_from"], res[0]["resumed_step"]),
            "accuracy": [h["accuracy"] for h in res[0]["history"]],
        }
    finally:
        stop_cluster(cluster, client)


def _table(rows):
    print("\n| what | target | measured |\n| --- | --- | --- |")
    for what, target, measured in rows:
        print(f"| {what} | {target} | {measured} |")


def _rows(args, mem, thr, acc, res):
    rows = []
    if mem:
        m = mem.get(args.n)
        if m:
            rows.append((
                f"driver peak memory during `ddp.run`, {args.n:,} images 128x128, 2 workers, "
                f"{args.epochs} epochs",
                "< 0.5 GiB above before the call",
                f"+{m['driver_peak'] / GIB:.3f} GiB (before: {m['driver_before'] / GIB:.2f} GiB)",
            ))  # fmt: skip
        ranks = "; ".join(
            f"{k:,} images: " + " / ".join(f"{r / GIB:.2f}" for r in v["ranks"]) + " GiB"
            for k, v in mem.items()
        )
        rows.append(("each rank's peak memory", "< 1 GiB, the same at 100,000", ranks))
    if thr:
        base = thr["arrays"][0]
        rows.append((
            f"samples/s per rank, sharded vs in-memory, {args.throughput_n:,} images",
            ">= 0.95x",
            "; ".join(
                f"{k}: {v[0]:.1f} ({v[0] / base:.2f}x)" for k, v in thr.items() if k != "arrays"
            ) + f"; arrays: {base:.1f}",
        ))  # fmt: skip
    if acc:
        a, s = acc["arrays"][-1], acc["shards"][-1]
        rows.append((
            "accuracy of ddp_cnn, sharded vs in-memory (demo data)",
            "within 0.02",
            f"{s:.3f} vs {a:.3f} ({s - a:+.3f})",
        ))  # fmt: skip
    if res:
        ref = acc["shards"][-1] if acc else float("nan")
        got = res["accuracy"][-1]
        rows.append((
            "a worker killed mid-epoch, max_restarts=1 and a checkpoint",
            "resumes within the epoch, same final accuracy within 0.02",
            f"killed at epoch {res['killed_at']}, resumed at (epoch, step) {res['resumed']}, "
            f"{res['attempts']} attempts; accuracy {got:.3f} vs {ref:.3f} uninterrupted",
        ))  # fmt: skip
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="parity.py ddp-shards")
    p.add_argument("--n", type=int, default=30_000, help="images of the memory row")
    p.add_argument("--big", type=int, default=100_000, help="images of the second rank peak")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the memory row")
    p.add_argument("--throughput-n", type=int, default=9_000)
    p.add_argument("--throughput-epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="interleaved throughput repeats")
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "dasktrain-shards"))
    p.add_argument("--files", type=int, default=30_000, help="distinct image files made")
    p.add_argument(
        "--rows", default="memory,throughput,accuracy,resume", help="which rows to measure"
    )
    a = p.parse_args(argv)
    rows = set(a.rows.split(","))
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    mem = thr = acc = res = None
    if "memory" in rows:
        mem = memory_row(a.data, a.n, a.big, a.epochs, a.files)
    if "throughput" in rows:
        thr = throughput_row(a.data, a.throughput_n, a.throughput_epochs, a.repeat, a.files)
    split = _demo_split() if rows & {"accuracy", "resume"} else None
    if "accuracy" in rows:
        acc = accuracy_row(split)
        print(f"  accuracy per epoch: {acc}", flush=True)
    if "resume" in rows:
        res = resume_row(split)
        print(f"  kill and resume: {res}", flush=True)
    _table(_rows(a, mem, thr, acc, res))
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
