"""Benchmarks of dasktrain.ddp: launch latency, DDP scaling, accuracy parity with the local twin.

asv (``asv run --python=same --bench bench_ddp``) times the launch and one training epoch;
``python -m benchmarks.bench_ddp`` prints the comparison the issue asks for, measured in one
run (interleaved repeats, medians):

* launch: from ``run()`` to the end of the first all-reduce, cold (first job on a fresh
  cluster), warm (later jobs) and warm with a ``RankPool`` (rank processes kept alive),
  2 local workers (``_launch_report``);
* scaling: samples/s of 2 ranks x 1 thread vs 1 rank x 1 thread on a compute-bound CNN
  (both through ``run``, throughput measured inside ``train_fn`` so the launch is excluded),
  for each DDP communication variant asked for (``--variants``, see
  :mod:`benchmarks._ddp_scaling`), plus the local twin (``run_local``, 1 torch thread);
* accuracy: final accuracy of 2 ranks vs the local twin, same seeds and global batch.
"""

from __future__ import annotations

import statistics
import sys
import time

import cloudpickle
import numpy as np

from benchmarks import _ddp_scaling
from benchmarks._common import size, start_cluster, stop_cluster

# Rank processes cannot import this benchmark module (asv imports it from the benchmark
# folder): send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _first_allreduce():
    import torch
    import torch.distributed as dist

    t = torch.ones(1)
    dist.all_reduce(t)
    return time.time()


def _images(n, side, seed=0):
    """Synthetic 2-class images (bright blob left vs right), float32 (n, side, side, 1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.3, 0.1, size=(n, side, side, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    half = side // 2
    for i in range(n):
        r = rng.integers(side // 8, side - side // 8)
        c = rng.integers(side // 8, half - side // 8) + (half if y[i] else 0)
        X[i, max(0, r - 3) : r + 3, max(0, c - 3) : c + 3, 0] += 0.5
    return X, y


def _launch_seconds(client, pool=None):
    """Seconds from ``run()`` to the end of the first all-reduce (the slowest rank's)."""
    t0 = time.time()
    from dasktrain import ddp

    if pool is not None:
        res = ddp.run(_first_allreduce, pool=pool, timeout=120)
    else:
        res = ddp.run(_first_allreduce, client=client, timeout=120)
    return max(res.values()) - t0


def _launch_report(client, repeat):
    """Print launch medians: cold, warm without a pool, warm with a RankPool; return them.

    Cold is the first job on a fresh cluster (``client``'s, plus ``repeat - 1`` more fresh
    clusters); the two warm cases run interleaved (A B A B) on ``client``'s workers.
    """
    import os

    from dasktrain import ddp

    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    cold = [_launch_seconds(client)]
    for _ in range(repeat - 1):
        cluster2, client2 = start_cluster(n_workers=2, threads_per_worker=1)
        try:
            cold.append(_launch_seconds(client2))
        finally:
            stop_cluster(cluster2, client2)
    t0 = time.perf_counter()
    pool = ddp.RankPool(client, timeout=120).start()
    pool_start = time.perf_counter() - t0
    warm, pooled = [], []
    try:
        for _ in range(repeat):
            warm.append(_launch_seconds(client))
            pooled.append(_launch_seconds(client, pool))
    finally:
        pool.close()
    out = {"cold": cold, "warm, no pool": warm, "warm, RankPool": pooled}
    print("launch run() -> first all-reduce, 2 workers x 1 thread (medians):")
    for name, values in out.items():
        print(
            f"  {name:15s} {statistics.median(values):6.2f} s  "
            f"({', '.join(f'{v:.2f}' for v in values)})"
        )
    print(
        f"  (RankPool start, paid once: {pool_start:.2f} s; targets: cold <= 2 s, "
        "warm with the pool <= 0.5 s)"
    )
    return out


class DDPLaunch:
    """Time from ``run()`` to the first all-reduce, 2 local workers (warm: after setup)."""

    timeout = 300

    def setup(self):
        from dasktrain import ddp

        self.cluster, self.client = start_cluster(n_workers=2, threads_per_worker=1)
        _launch_seconds(self.client)  # warm the OS page cache and the workers
        self.pool = ddp.RankPool(self.client, timeout=120).start()

    def teardown(self):
        self.pool.close()
        stop_cluster(self.cluster, self.client)

    def time_launch(self):
        _launch_seconds(self.client)

    def track_launch_to_first_allreduce(self):
        return _launch_seconds(self.client)

    track_launch_to_first_allreduce.unit = "seconds"

    def track_launch_with_rank_pool(self):
        return _launch_seconds(self.client, self.pool)

    track_launch_with_rank_pool.unit = "seconds"


class DDPTrainEpoch:
    """One epoch of the small CNN on synthetic images with 1 or 2 ranks (1 thread each)."""

    params = [[1, 2]]
    param_names = ["ranks"]
    timeout = 600

    def setup_cache(self):
        return _images(size(256, 2048), 64)

    def setup(self, data, ranks):
        self.X, self.y = data
        self.cluster, self.client = start_cluster(n_workers=2, threads_per_worker=1)

    def teardown(self, data, ranks):
        stop_cluster(self.cluster, self.client)

    def _run(self, ranks):
        from dasktrain import ddp
        from dasktrain.ddp.recipes import train_classifier

        return ddp.run(
            train_classifier,
            self.X,
            self.y,
            client=self.client,
            workers=ranks,
            epochs=1,
            batch_size=64,
            timeout=600,
        )[0]

    def time_epoch(self, data, ranks):
        self._run(ranks)

    def track_samples_per_s(self, data, ranks):
        return self._run(ranks)["samples_per_s"]

    track_samples_per_s.unit = "samples/s"


def main(repeat=3, model="smallcnn", n=None, side=64, batch_size=64, variants=("none",)):
    from dasktrain import ddp
    from dasktrain.ddp.recipes import train_classifier

    print("(numbers from this machine right now; on a loaded shared 2-core box they are noisy)")
    cluster, client = start_cluster(n_workers=2, threads_per_worker=1)
    try:
        _launch_report(client, repeat)

        X, y = _images(n or size(512, 4096), side)
        kw = dict(model=model, epochs=size(2, 3), batch_size=batch_size, seed=0)
        print(
            f"throughput: {model}, {len(X)} images {side}x{side}, {kw['epochs']} epochs, "
            f"global batch {batch_size}, per communication variant "
            f"({', '.join(variants)}; options of dasktrain.ddp.prepare_model)"
        )
        _ddp_scaling.scaling(client, X, y, kw, variants, repeat, local=True)

        Xa, ya = _images(size(600, 3000), 32, seed=1)
        n_tr = int(len(Xa) * 0.75)
        akw = dict(
            X_val=Xa[n_tr:],
            y_val=ya[n_tr:],
            model="smallcnn",
            epochs=size(5, 8),
            batch_size=32,
            lr=3e-3,
            seed=0,
        )
        loc = ddp.run_local(train_classifier, Xa[:n_tr], ya[:n_tr], **akw)[0]
        dist = ddp.run(train_classifier, Xa[:n_tr], ya[:n_tr], client=client, workers=2, **akw)[0]
        la, da = loc["history"][-1]["accuracy"], dist["history"][-1]["accuracy"]
        print(
            f"final accuracy, same seeds and global batch 32: local twin {la:.3f}, "
            f"2 ranks {da:.3f}, |diff| {abs(la - da):.3f} (target <= 0.02)"
        )
    finally:
        stop_cluster(cluster, client)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="DDP launch, scaling and accuracy")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--model",
        default="smallcnn",
        help="network of the scaling run (resnet18 is compute-bound on a CPU)",
    )
    parser.add_argument("--n", type=int, default=None, help="images of the scaling run")
    parser.add_argument("--side", type=int, default=64, help="image side of the scaling run")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="global batch of the scaling run (split across the ranks)",
    )
    parser.add_argument(
        "--variants",
        default="none",
        help="comma-separated DDP communication variants of the scaling run: "
        + ", ".join(_ddp_scaling.VARIANTS),
    )
    a = parser.parse_args()
    main(
        repeat=a.repeat,
        model=a.model,
        n=a.n,
        side=a.side,
        batch_size=a.batch_size,
        variants=_ddp_scaling.parse_variants(a.variants),
    )
