"""Feature extraction throughput: torch CNN trunks and classical descriptors, local vs dask.

asv suites (small sizes by default, ``DASKTRAIN_BENCH_LARGE=1`` for 128x128 images)::

    asv run --python=same --quick --bench bench_features

and a script that prints the comparison the issue asks for, interleaved, medians::

    .venv/bin/python benchmarks/bench_features.py [--backbones smallcnn,resnet18] [--repeat 3]

For each backbone, at 128x128 RGB: the local engine with 2 torch threads, the dask engine on
2 workers x 1 thread, and the dask engine on 1 worker x 1 thread (numpy in, ``engine="dask"``,
so scatter and gather are counted). Ratios: dask(2x1) / local(2 threads) (target >= 0.9) and
dask(2x1) / dask(1x1) (target >= 1.8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import interleaved, size, start_cluster, stop_cluster  # noqa: E402


def _images(n, side, seed=0):
    return np.random.default_rng(seed).random((n, side, side, 3), dtype=np.float32)


class CNNFeaturesSuite:
    """CNNFeatures.transform per backbone and engine (dask: 2 workers x 1 thread)."""

    params = (["smallcnn", "resnet18", "resnet34", "vgg19"], ["local", "dask"])
    param_names = ["backbone", "engine"]
    timeout = 600

    def setup_cache(self):
        return {"X": _images(size(16, 128), size(64, 128))}

    def setup(self, cache, backbone, engine):
        from dasktrain.features import CNNFeatures

        self.X = cache["X"]
        self.cluster = self.client = None
        if engine == "dask":
            self.cluster, self.client = start_cluster(n_workers=2, threads_per_worker=1)
        self.est = CNNFeatures(backbone, engine=engine, n_threads=2)
        self._run()  # build the model (once per process / worker) before timing

    def _run(self):
        return self.est.transform(self.X, client=self.client)

    def teardown(self, cache, backbone, engine):
        if self.client is not None:
            stop_cluster(self.cluster, self.client)

    def time_transform(self, cache, backbone, engine):
        self._run()

    def track_images_per_second(self, cache, backbone, engine):
        import time

        t0 = time.perf_counter()
        self._run()
        return len(self.X) / (time.perf_counter() - t0)

    track_images_per_second.unit = "images/s"


class ClassicFeaturesSuite:
    """HOG and histogram features per engine."""

    params = (["hog", "histogram"], ["local", "dask"])
    param_names = ["extractor", "engine"]

    def setup_cache(self):
        return {"X": _images(size(64, 512), size(64, 128))}

    def setup(self, cache, extractor, engine):
        from dasktrain.features import HistogramFeatures, HOGFeatures

        self.X = cache["X"]
        self.cluster = self.client = None
        if engine == "dask":
            self.cluster, self.client = start_cluster(n_workers=2, threads_per_worker=1)
        cls = HOGFeatures if extractor == "hog" else HistogramFeatures
        self.est = cls(engine=engine)

    def teardown(self, cache, extractor, engine):
        if self.client is not None:
            stop_cluster(self.cluster, self.client)

    def time_transform(self, cache, extractor, engine):
        self.est.transform(self.X, client=self.client)


# -- the comparison script ---------------------------------------------------------------------
DEFAULT_N = {"smallcnn": 2048, "resnet18": 256, "resnet34": 128, "vgg19": 32}


def _on_cluster(client, X, n_chunks):
    """``X`` as a dask array persisted on the workers of ``client`` in ``n_chunks`` blocks."""
    import dask.array as da

    rows = max(1, -(-len(X) // n_chunks))
    Xd = client.persist(da.from_array(X, chunks=(rows,) + X.shape[1:]))
    client.wait_for_workers(1)
    client.gather(client.futures_of(Xd))  # wait until every block is on a worker
    return Xd


def compare(backbones, side=128, repeat=3, warmup=1, n_override=None):
    """Interleaved timings; yields one row (images/s and ratios) per backbone."""
    from dasktrain.features import CNNFeatures

    c2, cl2 = start_cluster(n_workers=2, threads_per_worker=1)
    c1, cl1 = start_cluster(n_workers=1, threads_per_worker=1)
    try:
        for backbone in backbones:
            n = n_override or DEFAULT_N[backbone]
            X = _images(n, side)
            local = CNNFeatures(backbone, engine="local", n_threads=2)
            dask_ = CNNFeatures(backbone, engine="dask")
            # The images already on the cluster (as read_images(engine="dask") leaves them):
            # what extraction itself sustains, without shipping the pixels from the driver.
            on2, on1 = (_on_cluster(cl, X, 2 * nw) for cl, nw in ((cl2, 2), (cl1, 1)))
            fns = {
                "local 2 threads": lambda: local.transform(X),
                "dask 2x1": lambda: dask_.transform(X, client=cl2),
                "dask 1x1": lambda: dask_.transform(X, client=cl1),
                "dask 2x1 on cluster": lambda: cl2.compute(
                    dask_.transform(on2, client=cl2)
                ).result(),
                "dask 1x1 on cluster": lambda: cl1.compute(
                    dask_.transform(on1, client=cl1)
                ).result(),
            }
            # same features on both engines, checked on the benchmark data itself
            diff = float(np.abs(fns["local 2 threads"]() - fns["dask 2x1"]()).max())
            times = interleaved(fns, repeat=repeat, warmup=warmup)
            med = {k: statistics.median(v) for k, v in times.items()}
            ips = {k: n / v for k, v in med.items()}
            yield {
                "backbone": backbone,
                "n": n,
                **{f"{k} img/s": v for k, v in ips.items()},
                "dask2x1/local2": ips["dask 2x1"] / ips["local 2 threads"],
                "dask2x1/dask1x1": ips["dask 2x1"] / ips["dask 1x1"],
                "on cluster 2x1/local2": ips["dask 2x1 on cluster"] / ips["local 2 threads"],
                "on cluster 2x1/1x1": ips["dask 2x1 on cluster"] / ips["dask 1x1 on cluster"],
                "max|diff|": diff,
                "spread": {k: (min(v), max(v)) for k, v in times.items()},
            }
    finally:
        stop_cluster(c2, cl2)
        stop_cluster(c1, cl1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="smallcnn,resnet18,resnet34,vgg19")
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--n", type=int, default=None, help="images per run (default per backbone)")
    args = parser.parse_args(argv)
    print(
        f"{args.side}x{args.side} RGB, medians of {args.repeat} interleaved repeats "
        f"(after {args.warmup} warm-up), os.cpu_count()={os.cpu_count()}, "
        f"loadavg at start={os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(
        f"{'backbone':9} {'n':>4} {'local2 img/s':>13} {'dask2x1 img/s':>14} "
        f"{'dask1x1 img/s':>14} {'2x1/local2':>11} {'2x1/1x1':>8} {'max|diff|':>10}",
        flush=True,
    )
    rows = []
    for r in compare(
        args.backbones.split(","),
        side=args.side,
        repeat=args.repeat,
        warmup=args.warmup,
        n_override=args.n,
    ):
        rows.append(r)
        print(
            f"{r['backbone']:9} {r['n']:>4} {r['local 2 threads img/s']:>13.1f} "
            f"{r['dask 2x1 img/s']:>14.1f} {r['dask 1x1 img/s']:>14.1f} "
            f"{r['dask2x1/local2']:>11.2f} {r['dask2x1/dask1x1']:>8.2f} "
            f"{r['max|diff|']:>10.2e}",
            flush=True,
        )
    print(f"targets: 2x1/local2 >= 0.9, 2x1/1x1 >= 1.8; loadavg at end={os.getloadavg()[0]:.1f}")
    print("images already on the cluster (persisted dask input):")
    for r in rows:
        print(
            f"  {r['backbone']:9} dask2x1 {r['dask 2x1 on cluster img/s']:8.1f} img/s  "
            f"dask1x1 {r['dask 1x1 on cluster img/s']:8.1f} img/s  "
            f"2x1/local2 {r['on cluster 2x1/local2']:.2f}  2x1/1x1 {r['on cluster 2x1/1x1']:.2f}"
        )
    for r in rows:
        spread = ", ".join(f"{k} {lo:.2f}-{hi:.2f}s" for k, (lo, hi) in r["spread"].items())
        print(f"  {r['backbone']} min-max: {spread}")


if __name__ == "__main__":
    main()
