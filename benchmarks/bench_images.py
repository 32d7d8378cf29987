"""Reading image folders: images per second, ``engine="local"`` vs ``engine="dask"``.

asv: ``ReadJPEGs`` times :func:`dasktrain.read_images` on both engines (small folder by default,
2,000 JPEGs of 512x512 with ``DASKTRAIN_BENCH_LARGE=1``). The dask side is computed back to the
driver, so both engines end with the same numpy array in the same process.

Script: ``python benchmarks/bench_images.py`` writes 2,000 JPEGs of 512x512, reads them at
128x128 gray with both engines (2 workers x 1 thread), interleaved, and prints the medians and
the ratio. The issue's target is dask >= 1.6x local.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np

try:
    from ._common import interleaved, size, start_cluster, stop_cluster
except ImportError:  # run as a script: python benchmarks/bench_images.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import interleaved, size, start_cluster, stop_cluster


def write_jpegs(root, n, side=512, seed=0, quality=90):
    """Write ``n`` photo-like JPEGs (smooth shapes plus grain) in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        fx, fy, ph = rng.uniform(1, 6, 3)
        img = 0.5 + 0.25 * np.sin(2 * np.pi * (fx * xx + ph)) * np.cos(2 * np.pi * fy * yy)
        img = img + rng.normal(0, 0.04, (side, side))
        rgb = np.clip(np.dstack([img, img * rng.uniform(0.8, 1), img * rng.uniform(0.6, 1)]), 0, 1)
        folder = os.path.join(root, "a" if i % 2 else "b")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i:05d}.jpg"), quality=quality
        )
    return root


def _read(root, engine, client, out_size=128, chunk_size=256):
    from dasktrain.images import read_images

    ds = read_images(root, size=out_size, color="gray", engine=engine, chunk_size=chunk_size)
    if engine == "dask":
        ds = ds.to_numpy(client=client)
    return ds


class ReadJPEGs:
    """read_images on a folder of JPEGs, resized to 128x128 gray."""

    params = ["local", "dask"]
    param_names = ["engine"]
    timeout = 600

    def setup_cache(self):
        # 200 files in chunks of 50 (4 tasks for 2 workers), or 2,000 in the default 256.
        n = size(200, 2000)
        root = tempfile.mkdtemp(prefix="dasktrain-bench-images-")
        write_jpegs(root, n)
        return root, n

    def setup(self, cache, engine):
        self.root, self.n = cache
        self.chunk_size = 256 if self.n >= 2000 else 50
        self.cluster = self.client = None
        if engine == "dask":
            import importlib

            self.cluster, self.client = start_cluster(n_workers=2, threads_per_worker=1)
            # Import the reader in the workers now: start-up is not reading time.
            self.client.run(importlib.import_module, "dasktrain.images")

    def teardown(self, cache, engine):
        if self.cluster is not None:
            stop_cluster(self.cluster, self.client)

    def time_read(self, cache, engine):
        _read(self.root, engine, self.client, chunk_size=self.chunk_size)

    def track_images_per_second(self, cache, engine):
        import time

        t0 = time.perf_counter()
        _read(self.root, engine, self.client, chunk_size=self.chunk_size)
        return self.n / (time.perf_counter() - t0)

    track_images_per_second.unit = "images/s"


def _cpu_seconds():
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="number of JPEG files")
    parser.add_argument("--side", type=int, default=512, help="JPEG side in pixels")
    parser.add_argument("--size", type=int, default=128, help="output side in pixels")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=256, help="files per dask task")
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="dasktrain-bench-images-")
    cluster, client = start_cluster(n_workers=args.workers, threads_per_worker=1)
    try:
        write_jpegs(root, args.n, side=args.side)

        def persist():
            from distributed import futures_of, wait

            from dasktrain.images import read_images

            ds = read_images(root, size=args.size, engine="dask", chunk_size=args.chunk_size)
            ds = ds.persist(client=client)
            with client.as_current():
                wait(futures_of(ds.X) + futures_of(ds.y))
            del ds

        fns = {
            "local": lambda: _read(root, "local", None, args.size),
            "dask (computed to driver)": lambda: _read(
                root, "dask", client, args.size, args.chunk_size
            ),
            "dask (persisted on workers)": persist,
        }
        times = interleaved(fns, repeat=args.repeat, warmup=1)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{args.n} JPEGs {args.side}x{args.side} -> {args.size}x{args.size} gray, "
            f"dask: {args.workers} workers x 1 thread, {args.chunk_size} files per task, "
            f"{args.repeat} interleaved repeats"
        )
        for k, v in times.items():
            print(
                f"  {k:<28} median {med[k]:6.2f} s  {args.n / med[k]:7.0f} images/s  "
                f"(min {min(v):.2f}, max {max(v):.2f})"
            )
        for k in fns:
            if k != "local":
                print(f"  ratio {k} / local: {med['local'] / med[k]:.2f}x images/s")
        # CPU seconds of one more run of each, outside the timings: on a loaded machine the
        # wall clock measures the load; CPU time shows the work and how it was shared.
        for k, fn in fns.items():
            w0, d0 = client.run(_cpu_seconds), _cpu_seconds()
            fn()
            w1, d1 = client.run(_cpu_seconds), _cpu_seconds()
            workers = sorted(round(w1[a] - w0[a], 2) for a in w0)
            print(f"  cpu {k:<28} driver {d1 - d0:5.2f} s  workers {workers} s")
        print(f"  load average {os.getloadavg()} on {os.cpu_count()} CPUs")
    finally:
        stop_cluster(cluster, client)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
