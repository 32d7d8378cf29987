"""Chest X-ray pipeline: image folder -> CNN features -> XGBoost and logistic regression.

The pipeline of the published CPU-vs-GPU-vs-cluster pneumonia studies, on one engine at a
time::

    python examples/chest_xray_pipeline.py                      # built-in data, dask engine
    python examples/chest_xray_pipeline.py --engine local
    python examples/chest_xray_pipeline.py path/to/chest_xray   # your own folder

The folder is either a Kaggle-style root with ``train/`` and ``test/`` sub-folders (each with
one folder per class), or a single folder of class folders, which is split 75/25 here.
Without a folder, a synthetic chest-X-ray-like data set is written to a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import dasktrain
from dasktrain import metrics
from dasktrain.datasets import make_xray_like
from dasktrain.features import CNNFeatures
from dasktrain.models import LogisticRegression, XGBClassifier


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="image folder (default: built-in synthetic data)")
    p.add_argument("--engine", choices=("local", "dask"), default="dask")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (dask engine)")
    p.add_argument("--workers", type=int, default=2, help="local cluster workers (dask engine)")
    p.add_argument("--size", type=int, default=64, help="images are resized to SIZE x SIZE")
    p.add_argument("--n-per-class", type=int, default=120, help="built-in data: images per class")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=64,
        help="images per chunk (dask engine); several chunks per worker keep both workers busy",
    )
    p.add_argument("--backbone", default="smallcnn", help="CNNFeatures backbone")
    p.add_argument("--n-estimators", type=int, default=100, help="XGBoost trees")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load(folder, args):
    """Return ``(train, test)`` ImageSets for the folder on the chosen engine."""
    kwargs = dict(
        size=(args.size, args.size), color="gray", engine=args.engine, chunk_size=args.chunk_size
    )
    train_dir, test_dir = os.path.join(folder, "train"), os.path.join(folder, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        return dasktrain.read_images(train_dir, **kwargs), dasktrain.read_images(test_dir, **kwargs)
    images = dasktrain.read_images(folder, **kwargs)
    return images.train_test_split(test_size=0.25, stratify=True, seed=args.seed)


def run(folder, args, client):
    t0 = time.perf_counter()
    train, test = load(folder, args)
    print(f"train: {train!r}\ntest: {test!r}")
    if args.engine == "dask":
        # Decode once and keep the pixels on the workers: both models reuse them.
        train, test = train.persist(client=client), test.persist(client=client)

    extractor = CNNFeatures(args.backbone, engine=args.engine, seed=args.seed).fit(train)
    F_train = extractor.transform(train, client=client)
    F_test = extractor.transform(test, client=client)
    if args.engine == "dask":
        from distributed import wait

        # Compute the features once on the workers (persist is asynchronous: wait to time it).
        F_train, F_test = client.persist([F_train, F_test])
        wait([F_train, F_test])
    t_features = time.perf_counter() - t0
    print(f"read + features: {F_train.shape[1]} per image ({args.backbone}), {t_features:.1f} s")

    models = {
        "xgboost": XGBClassifier(
            n_estimators=args.n_estimators, max_depth=4, random_state=args.seed, engine=args.engine
        ),
        "logreg": LogisticRegression(max_iter=1000, engine=args.engine),
    }
    rows = []
    for name, model in models.items():
        t1 = time.perf_counter()
        model.fit(F_train, train.y)
        fit_s = time.perf_counter() - t1
        pred = model.predict(F_test)
        score = model.predict_proba(F_test)[:, 1]
        acc = float(metrics.accuracy_score(test.y, pred))
        auc = float(metrics.roc_auc_score(test.y, score))
        rows.append((name, fit_s, acc, auc))

    print(f"\n{'model':<10} {'fit (s)':>8} {'accuracy':>9} {'ROC AUC':>8}   engine={args.engine}")
    for name, fit_s, acc, auc in rows:
        print(f"{name:<10} {fit_s:>8.2f} {acc:>9.3f} {auc:>8.3f}")
    print(f"\nend to end: {time.perf_counter() - t0:.1f} s")
    # One cold run: the first fit pays for imports and start-up on the workers. For warm,
    # repeated and interleaved timings of both engines use dasktrain.compare (see
    # examples/xgboost_comparison.py).
    print("(single cold run; see examples/xgboost_comparison.py for repeated timings)")
    return rows


def main(argv=None):
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = args.folder
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dasktrain-xray-"))
            make_xray_like(folder, n_per_class=args.n_per_class, size=args.size, seed=args.seed)
        client = None
        if args.engine == "dask":
            client = stack.enter_context(
                dasktrain.connect(args.scheduler, n_workers=args.workers, threads_per_worker=1)
            )
            print(f"dashboard: {client.dashboard_link}")
        return run(folder, args, client)


if __name__ == "__main__":
    main()
