"""Time every step on one host and across hosts (the multi-host rig): warm-up, then repeats.

Not a test (pytest does not collect it) and not an asv benchmark (it needs root to build the
rig). Run from the repository root as root::

    python tests/multihost_times.py --n-per-class 40 --repeat 3 --out times.json

One host: a LocalCluster of 2 workers x 1 thread on 127.0.0.1. Across hosts: the rig, the
scheduler here and one worker (1 thread) in each of two network namespaces. Both clusters get
the same inputs and partitions; each step runs once untimed (imports, model caches), then
``--repeat`` times, and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import multihost as mh  # noqa: E402


def _steps(root, size, chunk):
    import dask.array as da
    import numpy as np

    import dasktrain.ddp as ddp
    from dasktrain.ddp.recipes import train_classifier
    from dasktrain.features import CNNFeatures, HOGFeatures
    from dasktrain.images import read_images
    from dasktrain.models import (
        GaussianNB,
        KMeans,
        LogisticRegression,
        XGBClassifier,
        cross_validate,
    )

    ds = read_images(root, size=size, engine="local")
    X, y = ds.X, ds.y
    F = CNNFeatures("resnet18", engine="local", n_threads=1).fit_transform(X)
    Xd, Fd = da.from_array(X, chunks=chunk), da.from_array(F, chunks=chunk)
    yd = da.from_array(y, chunks=chunk)

    def read(c):
        read_images(root, size=size, engine="dask", chunk_size=chunk).to_numpy(client=c)

    def features(make):
        return lambda c: c.compute(make().fit(Xd).transform(Xd, client=c)).result()

    def cv(make):
        return lambda c: cross_validate(make(), F, y, cv=3, engine="dask", client=c)

    def xgb(c):
        XGBClassifier(n_estimators=20, max_depth=3, engine="dask", client=c).fit(Fd, yd)

    def ddp_run(c):
        ddp.run(
            train_classifier,
            X,
            y,
            client=c,
            timeout=600,
            model="smallcnn",
            epochs=2,
            batch_size=16,
            seed=3,
        )

    steps = {
        "read_images(engine='dask')": read,
        "CNN features (resnet18)": features(lambda: CNNFeatures("resnet18", engine="dask")),
        "HOG features": features(lambda: HOGFeatures(engine="dask")),
        "KMeans (k=8, 512 features)": lambda c: KMeans(8, random_state=0, client=c).fit(Fd),
        "XGBoost (20 trees)": xgb,
        "LogisticRegression cross_validate (cv=3)": cv(
            lambda: LogisticRegression(max_iter=300, engine="local")
        ),
        "GaussianNB cross_validate (cv=3)": cv(lambda: GaussianNB(engine="local")),
        "ddp.run (smallcnn, 2 epochs, gloo)": ddp_run,
    }
    return steps, np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=40)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    reason = mh.unavailable()
    if reason:
        sys.exit(reason)
    from distributed import Client, LocalCluster

    from dasktrain.datasets import make_xray_like

    tmp = Path(tempfile.mkdtemp(prefix="dasktrain-times-"))
    root = make_xray_like(tmp / "xray", n_per_class=args.n_per_class, size=args.size, seed=0)
    steps, _ = _steps(root, args.size, args.chunk)
    times = {name: {} for name in steps}
    one_host = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="4GiB",
    )
    with one_host, Client(one_host) as one, mh.Rig(tmp / "rig") as rig, rig.client() as across:
        for name, step in steps.items():
            for where, c in (("one host", one), ("across hosts", across)):
                with c.as_current():
                    step(c)  # warm-up
                    runs = []
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        step(c)
                        runs.append(time.perf_counter() - t0)
                times[name][where] = round(statistics.median(runs), 3)
            print(
                f"{name:45s} one host {times[name]['one host']:8.3f} s   across hosts "
                f"{times[name]['across hosts']:8.3f} s",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(times, indent=2))


if __name__ == "__main__":
    main()
