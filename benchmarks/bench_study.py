"""The chest X-ray study at its own size: VGG19 features -> LR / NB / MLP cross-validation.

The study behind dasktrain extracted VGG19 features of 5,856 chest X-rays at 128x128 (1,583
NORMAL, 4,273 PNEUMONIA), flattened to 8192 values, and cross-validated a logistic regression,
naive Bayes and an MLP on them. This benchmark repeats it on the built-in X-ray-like data of
the same size and class balance, on both engines, with :func:`dasktrain.compare`:

1. ``vgg19_features``: read every image (both splits) at 128x128 and extract
   ``CNNFeatures("vgg19", pool="flatten")`` (8192-d, seeded random weights: no download) on
   the engine, ending with the features in the driver. One timed run per engine (it is the
   long part); both engines' features are compared.
2. ``logreg_cv``, ``naive_bayes_cv``, ``mlp_cv``: ``cross_validate`` (stratified 5-fold) on
   those features: folds in process (local) or one task per fold (dask), ``repeat`` timed
   runs each after a warm-up.

Script (the study's size; about an hour on 2 cores, most of it VGG19)::

    OMP_NUM_THREADS=1 python benchmarks/bench_study.py --out study-report

and a tiny check of the same code (a minute)::

    python benchmarks/bench_study.py --normal 12 --pneumonia 30 --size 64 --cv 3 --repeat 1

It prints one table per step (median time, speedup over local, accuracy, peak memory of the
process tree) and, with ``--out``, saves both comparisons (CSV, JSON, HTML report).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

try:
    from ._common import size
except ImportError:  # run as a script: python benchmarks/bench_study.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import size

logger = logging.getLogger("bench_study")

#: the Kaggle chest_xray set: 1,583 NORMAL and 4,273 PNEUMONIA images over all splits
STUDY_COUNTS = {"NORMAL": 1583, "PNEUMONIA": 4273}
IMAGE_SIZE = 128
N_WORKERS = 2


# -- the workloads ------------------------------------------------------------------------------
def make_features_workload(image_size, store):
    """``vgg19_features(data, engine, client)``: read + VGG19 flattened, features to the driver.

    The features of the first engine that runs are kept in ``store`` (for the CV step); the
    other engine's are compared with them (``max_abs_diff`` in its metrics).
    """

    def vgg19_features(data, engine, client):
        from dasktrain.features import CNNFeatures
        from dasktrain.images import read_images

        t0 = time.perf_counter()
        ds = read_images(data, size=image_size, engine=engine, chunk_size=64)
        ext = CNNFeatures(
            "vgg19",
            pool="flatten",
            engine=engine,
            n_threads=N_WORKERS if engine == "local" else None,
        )
        F = ext.fit_transform(ds)
        y = ds.y
        if engine == "dask":
            F, y = client.compute([F, y], sync=True)
        F, y = np.asarray(F), np.asarray(y)
        train = time.perf_counter() - t0
        out = {"train_time": train, "n_features": float(F.shape[1]), "images_per_s": len(F) / train}
        if "F" in store:
            out["max_abs_diff"] = float(np.abs(store["F"] - F).max())
        else:
            store.update(F=F, y=y)
        return out

    vgg19_features.metric = False
    return vgg19_features


def _estimators(mlp_max_iter):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dasktrain.models import GaussianNB, LogisticRegression, MLPClassifier

    # Random-weight VGG19 features have very different scales per column: LR and the MLP get
    # them standardised (fitted inside each fold), as a study would.
    return {
        "logreg_cv": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        "naive_bayes_cv": GaussianNB(),
        "mlp_cv": make_pipeline(
            StandardScaler(),
            MLPClassifier((64,), max_iter=mlp_max_iter, random_state=0),
        ),
    }


def make_cv_workloads(cv, mlp_max_iter):
    """One workload per model: ``cross_validate`` on the features (data is ``(F, y)``)."""

    def workload(name, est):
        def run(data, engine, client):
            from dasktrain.models import cross_validate

            F, y = data
            kw = {"client": client} if engine == "dask" else {}
            t0 = time.perf_counter()
            res = cross_validate(est, F, y, cv=cv, scoring="accuracy", engine=engine, **kw)
            return {
                "train_time": time.perf_counter() - t0,
                "accuracy": float(np.mean(res["test_score"])),
            }

        run.__name__ = name
        run.metric = "accuracy"
        return run

    return [workload(name, est) for name, est in _estimators(mlp_max_iter).items()]


# -- asv ----------------------------------------------------------------------------------------
class StudyCV:
    """Cross-validation of LR / NB / MLP on flattened VGG19 features of X-ray-like images.

    Small by default (64 images at 64x64: 2048-d); ``DASKTRAIN_BENCH_LARGE=1`` takes the
    study's 5,856 images at 128x128 (8192-d; the features take tens of minutes to build).
    """

    params = [["logreg_cv", "naive_bayes_cv", "mlp_cv"], ["local", "dask"]]
    param_names = ["model", "engine"]
    timeout = 3600
    number = 1
    repeat = 3

    def setup_cache(self):
        from dasktrain.datasets import make_xray_like

        counts = size({"NORMAL": 18, "PNEUMONIA": 46}, STUDY_COUNTS)
        side = size(64, IMAGE_SIZE)
        root = make_xray_like(os.path.abspath("study-images"), n_per_class=counts, size=side)
        store = {}
        make_features_workload(side, store)(str(root), "local", None)
        return store["F"], store["y"]

    def setup(self, data, model, engine):
        from benchmarks._common import start_cluster

        self.cluster = self.client = None
        if engine == "dask":
            self.cluster, self.client = start_cluster(N_WORKERS, 1)
        self.run = {w.__name__: w for w in make_cv_workloads(3, 100)}[model]

    def teardown(self, data, model, engine):
        if self.client is not None:
            from benchmarks._common import stop_cluster

            stop_cluster(self.cluster, self.client)

    def time_cross_validate(self, data, model, engine):
        self.run(data, engine, self.client)

    def track_accuracy(self, data, model, engine):
        return self.run(data, engine, self.client)["accuracy"]


# -- script -------------------------------------------------------------------------------------
TABLE_COLUMNS = {
    "workload": "workload",
    "engine": "engine",
    "time_median": "time_s",
    "time_min": "min_s",
    "time_max": "max_s",
    "speedup": "speedup",
    "quality": "accuracy",
    "cpu_percent_mean": "cpu_%",
    "peak_rss_bytes": "peak_MiB",
    "status": "status",
}


def _table(res):
    """The Results table with the study's columns: times, speedup, accuracy, peak memory."""
    t = res.table[list(TABLE_COLUMNS)].copy()
    t["peak_rss_bytes"] = t["peak_rss_bytes"] / 2**20
    t = t.rename(columns=TABLE_COLUMNS)
    return t.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def main(argv=None):
    import dasktrain

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--normal", type=int, default=STUDY_COUNTS["NORMAL"])
    parser.add_argument("--pneumonia", type=int, default=STUDY_COUNTS["PNEUMONIA"])
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="image side (pixels)")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each CV workload")
    parser.add_argument("--mlp-max-iter", type=int, default=200)
    parser.add_argument("--data", default=None, help="image folder to reuse or create")
    parser.add_argument("--out", default=None, help="save both comparisons here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from dasktrain.datasets import make_xray_like

    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        root = args.data or os.path.join(tmp, "chest_xray")
        t0 = time.perf_counter()
        if not (os.path.isdir(root) and os.listdir(root)):
            make_xray_like(
                root,
                n_per_class={"NORMAL": args.normal, "PNEUMONIA": args.pneumonia},
                size=args.size,
            )
        n = args.normal + args.pneumonia
        print(
            f"{n} images ({args.normal} NORMAL, {args.pneumonia} PNEUMONIA) of "
            f"{args.size}x{args.size} ready in {time.perf_counter() - t0:.0f} s; "
            f"os.cpu_count()={os.cpu_count()}, loadavg={os.getloadavg()[0]:.1f}",
            flush=True,
        )

        def progress(ev):
            r = ev["record"]
            print(
                f"  [{ev['index']}/{ev['total']}] {ev['event']} {ev['workload']} {ev['engine']}: "
                f"{r.get('status')} {r.get('time', float('nan')):.1f} s",
                flush=True,
            )

        store = {}
        with dasktrain.connect(
            n_workers=N_WORKERS, threads_per_worker=1, dashboard_address="127.0.0.1:0", gpu=False
        ) as client:
            print(f"dask: {N_WORKERS} workers x 1 thread ({client.dashboard_link})", flush=True)
            feats = dasktrain.compare(
                [make_features_workload(args.size, store)],
                data=root,
                client=client,
                repeat=1,
                warmup=False,
                progress=progress,
            )
            if "F" not in store:
                print(feats.runs[["workload", "engine", "status", "error"]].to_string())
                raise SystemExit("the feature step failed on both engines")
            F, y = store["F"], store["y"]
            print(
                f"features: {F.shape[0]} x {F.shape[1]} float32 ({F.nbytes / 2**20:.0f} MiB)",
                flush=True,
            )
            cv = dasktrain.compare(
                make_cv_workloads(args.cv, args.mlp_max_iter),
                data=(F, y),
                client=client,
                repeat=args.repeat,
                progress=progress,
            )

    diff = feats.runs.get("metric.max_abs_diff")
    print(
        f"\nStep 1: read + VGG19 (pool='flatten') -> {F.shape[1]}-d features, one run per engine"
        + (
            f"; engines' features differ by at most {diff.max():.2e}"
            if diff is not None and diff.notna().any()
            else ""
        )
    )
    print(_table(feats))
    print(
        f"\nStep 2: {args.cv}-fold cross-validation on the features, median of "
        f"{args.repeat} run(s) after a warm-up"
    )
    print(_table(cv))
    if args.out:
        feats.save(os.path.join(args.out, "features"))
        cv.save(os.path.join(args.out, "cross_validation"))
        print(f"saved to {args.out}/features and {args.out}/cross_validation")
    return feats, cv


if __name__ == "__main__":
    main()
