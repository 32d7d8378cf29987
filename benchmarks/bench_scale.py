"""The pipeline at growing sizes: read -> features -> KMeans(8), both engines, time and memory.

For each number of 128x128 images and each feature extractor (``smallcnn``, ``hog``), the whole
pipeline runs once per engine, and the process tree (the driver plus, for the dask engine, its
local cluster's workers) is sampled by
:class:`dasktrain.harness.measure.monitor.ResourceMonitor`. From one size to the next the
*growth factor per 4x of data* is reported for time and peak memory:
``(v2 / v1) ** (log 4 / log(n2 / n1))``; 4.0 is linear, 1.0 is flat.

* local engine: ``read_images(engine="local")`` (numpy in memory), the extractor with 2 threads,
  scikit-learn's KMeans; nothing else runs.
* dask engine: ``dasktrain.connect(n_workers=2, threads_per_worker=1, memory_limit="1GB")``;
  ``read_images(engine="dask")`` -> extractor -> ``KMeans`` with no ``persist()`` (KMeans
  persists the features it iterates on); the images are decoded once, inside the fit. The
  cluster's start is not timed; it is the same cluster for every size.

asv (small sizes by default, 2,000 / 8,000 / 30,000 images with ``DASKTRAIN_BENCH_LARGE=1``)::

    asv run --python=same --quick --bench bench_scale

Script (prints the table; ``--sizes`` for the issue's sizes, which take about an hour on 2
cores and write 30,000 images first)::

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --sizes 2000,8000,30000 --json scale.json

The issue's memory target is checked at the end: the dask engine at 30,000 images under 2.5 GB
for the whole process tree.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time

import numpy as np

try:
    from ._common import size
except ImportError:  # run as a script: python benchmarks/bench_scale.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import size

logger = logging.getLogger("bench_scale")

IMAGE_SIZE = 128
N_CLUSTERS = 8
CHUNK_SIZE = 256
MEMORY_LIMIT = "1GB"
N_WORKERS = 2
#: the issue's bound for the dask engine's whole process tree at 30,000 images
TREE_TARGET_BYTES = 2.5e9
SIZES = size([256, 1024], [2000, 8000, 30000])
FEATURES = ("smallcnn", "hog")
ENGINES = ("local", "dask")


# -- data ---------------------------------------------------------------------------------------
def write_images(root, n_images, seed=0):
    """Built-in X-ray-like images, at least ``n_images`` over both classes, at 128x128."""
    from dasktrain.datasets import make_xray_like

    return make_xray_like(root, n_per_class=max(2, -(-n_images // 2)), size=IMAGE_SIZE, seed=seed)


def select(root, n_images):
    """The first ``n_images`` ``(path, label)`` pairs, half from each class (deterministic)."""
    from dasktrain.images import list_images

    paths, labels = list_images(root)
    by_class = {}
    for p, lab in zip(paths, labels):
        by_class.setdefault(lab, []).append(p)
    classes = sorted(by_class)
    per = -(-n_images // len(classes))
    pairs = [(p, c) for c in classes for p in by_class[c][:per]][:n_images]
    if len(pairs) < n_images:
        raise ValueError(f"{root} holds {len(paths)} images, fewer than {n_images}")
    return pairs


# -- the pipeline -------------------------------------------------------------------------------
def _extractor(name, engine, n_threads):
    from dasktrain.features import CNNFeatures, HOGFeatures

    threads = n_threads if engine == "local" else None
    if name == "hog":
        return HOGFeatures(engine=engine, n_threads=threads)
    return CNNFeatures(name, engine=engine, n_threads=threads)


def run_pipeline(pairs, engine, features, *, client=None, n_threads=N_WORKERS, seed=0):
    """read -> features -> KMeans on one engine; returns step times and quality.

    For the dask engine reading and extraction are lazy: their work happens inside the KMeans
    fit (``read_s`` and ``features_s`` are then only the time to build the graph).
    """
    from sklearn.metrics import adjusted_rand_score

    from dasktrain.images import read_images
    from dasktrain.models import KMeans

    t = {"start": time.perf_counter()}
    ds = read_images(pairs, size=IMAGE_SIZE, engine=engine, chunk_size=CHUNK_SIZE)
    t["read"] = time.perf_counter()
    F = _extractor(features, engine, n_threads).fit_transform(ds)
    t["features"] = time.perf_counter()
    km = KMeans(N_CLUSTERS, random_state=seed, engine=engine, client=client).fit(F)
    labels = km.labels_
    if engine == "dask":
        labels = client.compute(labels).result()
    t["kmeans"] = time.perf_counter()
    y = np.asarray(client.compute(ds.y).result() if engine == "dask" else ds.y)
    return {
        "read_s": t["read"] - t["start"],
        "features_s": t["features"] - t["read"],
        "kmeans_s": t["kmeans"] - t["features"],
        "total_s": t["kmeans"] - t["start"],
        "n_features": int(F.shape[1]),
        "adjusted_rand": float(adjusted_rand_score(y, labels)),
    }


def measured(pairs, engine, features, *, client=None, n_threads=N_WORKERS, interval=0.25):
    """:func:`run_pipeline` under a ResourceMonitor: adds the tree's peak RSS and mean CPU."""
    from threadpoolctl import threadpool_limits

    from dasktrain.harness.measure.monitor import ResourceMonitor

    mon = ResourceMonitor(interval=interval, client=client, uss=False)
    with threadpool_limits(n_threads), mon:
        row = run_pipeline(pairs, engine, features, client=client, n_threads=n_threads)
    # The local engine is charged for the driver alone (no cluster runs beside it here).
    s = mon.summary(exclude_roles=("worker", "nanny", "scheduler") if engine == "local" else ())
    row.update(
        peak_tree_bytes=s["peak_rss_bytes"],
        cpu_percent_mean=s["cpu_percent_mean"],
        n_processes=s["n_processes"],
    )
    return row


def start_cluster(memory_limit=MEMORY_LIMIT, n_workers=N_WORKERS):
    """The issue's cluster: ``connect(n_workers=2, threads_per_worker=1, memory_limit="1GB")``."""
    import dasktrain

    client = dasktrain.connect(
        n_workers=n_workers,
        threads_per_worker=1,
        memory_limit=memory_limit,
        dashboard_address="127.0.0.1:0",
        gpu=False,
    )
    client.wait_for_workers(n_workers)
    return client


def growth_per_4x(n1, v1, n2, v2):
    """``(v2 / v1) ** (log 4 / log(n2 / n1))``: the factor per 4x of data (4 = linear)."""
    if not (v1 > 0 and v2 > 0 and n2 > n1):
        return math.nan
    return (v2 / v1) ** (math.log(4) / math.log(n2 / n1))


def add_growth(rows):
    """Per engine and extractor, growth per 4x from the previous size (time and memory)."""
    by = {}
    for r in sorted(rows, key=lambda r: (r["engine"], r["features"], r["n_images"])):
        prev = by.get((r["engine"], r["features"]))
        if prev is None or r.get("status") != "ok" or prev.get("status") != "ok":
            r["time_growth_4x"] = r["memory_growth_4x"] = math.nan
        else:
            n1, n2 = prev["n_images"], r["n_images"]
            r["time_growth_4x"] = growth_per_4x(n1, prev["total_s"], n2, r["total_s"])
            r["memory_growth_4x"] = growth_per_4x(
                n1, prev["peak_tree_bytes"], n2, r["peak_tree_bytes"]
            )
        by[(r["engine"], r["features"])] = r
    return rows


# -- asv ----------------------------------------------------------------------------------------
class ScalePipeline:
    """The whole pipeline per engine, extractor and number of images."""

    params = [list(ENGINES), list(FEATURES), list(SIZES)]
    param_names = ["engine", "features", "n_images"]
    timeout = 3600
    number = 1
    repeat = 1

    def setup_cache(self):
        root = os.path.abspath("scale-images")
        write_images(root, max(SIZES))
        return root

    def setup(self, root, engine, features, n_images):
        self.pairs = select(root, n_images)
        self.client = start_cluster() if engine == "dask" else None

    def teardown(self, root, engine, features, n_images):
        if self.client is not None:
            self.client.close()

    def time_pipeline(self, root, engine, features, n_images):
        run_pipeline(self.pairs, engine, features, client=self.client)

    def track_peak_tree_memory(self, root, engine, features, n_images):
        return measured(self.pairs, engine, features, client=self.client)["peak_tree_bytes"] / 2**20

    track_peak_tree_memory.unit = "MiB"


# -- script -------------------------------------------------------------------------------------
COLUMNS = [
    ("engine", ""),
    ("features", ""),
    ("n_images", "d"),
    ("read_s", ".1f"),
    ("features_s", ".1f"),
    ("kmeans_s", ".1f"),
    ("total_s", ".1f"),
    ("peak_tree_MiB", ".0f"),
    ("time_growth_4x", ".2f"),
    ("memory_growth_4x", ".2f"),
    ("adjusted_rand", ".3f"),
]


def header():
    return " ".join(f"{k:>{max(len(k), 8)}}" for k, _ in COLUMNS)


def format_row(r):
    r = dict(r, peak_tree_MiB=r.get("peak_tree_bytes", math.nan) / 2**20)
    if r.get("status", "ok") != "ok":
        where = f"{r['engine']:>8} {r['features']:>8} {r['n_images']:>8}"
        return f"{where}  {r['status']}: {r['error']}"
    return " ".join(f"{r.get(k, math.nan):>{max(len(k), 8)}{spec}}" for k, spec in COLUMNS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="numbers of images (default: %(default)s)",
    )
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--memory-limit", default=MEMORY_LIMIT, help="per dask worker")
    parser.add_argument(
        "--data",
        default=None,
        help="folder of images to reuse or create (default: a temporary one)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    feats = args.features.split(",")
    engines = args.engines.split(",")

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = args.data or os.path.join(tmp, "images")
        t0 = time.perf_counter()
        if not (os.path.isdir(root) and os.listdir(root)):
            write_images(root, max(sizes))
        print(
            f"{max(sizes)} images of {IMAGE_SIZE}x{IMAGE_SIZE} ready in "
            f"{time.perf_counter() - t0:.0f} s at {root}; os.cpu_count()={os.cpu_count()}, "
            f"loadavg={os.getloadavg()[0]:.1f}",
            flush=True,
        )
        rows = []
        client = start_cluster(args.memory_limit) if "dask" in engines else None
        try:
            for n in sizes:
                pairs = select(root, n)
                for features in feats:
                    for engine in engines:
                        row = {"engine": engine, "features": features, "n_images": n}
                        try:
                            row.update(
                                measured(
                                    pairs,
                                    engine,
                                    features,
                                    client=client if engine == "dask" else None,
                                )
                            )
                            row["status"], row["error"] = "ok", None
                        except Exception as exc:  # a failed cell is reported, the rest runs
                            logger.exception("%s %s %d failed", engine, features, n)
                            row.update(status="error", error=f"{type(exc).__name__}: {exc}")
                        rows.append(row)
                        print(format_row(row), flush=True)
        finally:
            if client is not None:
                client.close()

    add_growth(rows)
    print(
        f"\ndask: {N_WORKERS} workers x 1 thread, memory_limit={args.memory_limit}; local: "
        f"{N_WORKERS} threads. Growth per 4x of data from the previous size (4 = linear). "
        "dask read_s/features_s only build the lazy graph: that work is inside kmeans_s."
    )
    print(header())
    for r in rows:
        print(format_row(r))
    big = [
        r
        for r in rows
        if r["engine"] == "dask" and r["n_images"] >= 30000 and r.get("status") == "ok"
    ]
    for r in big:
        ok = r["peak_tree_bytes"] < TREE_TARGET_BYTES
        print(
            f"target: dask {r['features']} at {r['n_images']} images, whole tree "
            f"{r['peak_tree_bytes'] / 1e9:.2f} GB {'<' if ok else '>='} 2.5 GB: "
            f"{'met' if ok else 'MISSED'}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)
    return rows


if __name__ == "__main__":
    main()
