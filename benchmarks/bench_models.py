"""Benchmarks for dasktrain.models: KMeans, XGBoost and cross-validation on both engines.

asv classes use small sizes by default (``DASKTRAIN_BENCH_LARGE=1`` for the issue's sizes).
Run as a script for the comparison the issue asks for, in one process, interleaved, medians::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_models.py [--repeat 5]

KMeans: dasktrain dask engine vs scikit-learn (2 threads) vs dask_ml.cluster.KMeans on
200,000 x 20 blobs, k=5, 2 workers x 1 thread, data persisted. XGBoost: dask engine vs local
engine on 200,000 x 50 at equal total threads (2).
"""

from __future__ import annotations

import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import interleaved, size, start_cluster, stop_cluster  # noqa: E402


def _blobs(n, d, k, chunks):
    import dask.array as da
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=0)
    return X, da.from_array(X, chunks=(chunks, d))


def _classification(n, d):
    from sklearn.datasets import make_classification

    X, y = make_classification(n, d, n_informative=d // 2, random_state=0)
    return X.astype(np.float32), y


def xgb_compare(client, n=200_000, d=50, rounds=100, repeat=3):
    """XGBoost local (n_jobs = the cluster's threads) vs dask on ``client``; prints the ratio.

    Same data, seed and parameters; accuracy on a held-out fifth. Returns ``{engine: s}``.
    """
    import dask.array as da

    from dasktrain._dask import total_threads
    from dasktrain.models import XGBClassifier

    X, y = _classification(n + n // 4, d)
    Xt, yt, X, y = X[n:], y[n:], X[:n], y[:n]
    Xd = client.persist(da.from_array(X, chunks=(n // 2, d)))
    yd = client.persist(da.from_array(y, chunks=n // 2))
    acc = {}

    def fit(engine, A, b):
        m = XGBClassifier(n_estimators=rounds, engine=engine, random_state=0, client=client)
        acc[engine] = m.fit(A, b).score(Xt, yt)

    times = interleaved(
        {"local": lambda: fit("local", X, y), "dask": lambda: fit("dask", Xd, yd)},
        repeat=repeat,
        warmup=1,
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"XGBoost {n:,} x {d}, {rounds} rounds depth 6, equal total threads (local n_jobs="
        f"{total_threads(client)}; dask {len(client.nthreads())} workers), medians of {repeat}"
    )
    for k in med:
        print(
            f"  {k:6s} median {med[k]:7.3f} s (min {min(times[k]):.3f}, max {max(times[k]):.3f})"
            f"  held-out accuracy {acc[k]:.4f}"
        )
    print(
        f"  dask / local = {med['dask'] / med['local']:.2f}x (target <= 1.1x); accuracy "
        f"difference {abs(acc['dask'] - acc['local']):.4f} (target <= 0.005)"
    )
    return med


class KMeansSuite:
    """KMeans: dasktrain dask engine, local engine, dask-ml."""

    params = [["dask", "local", "dask-ml"]]
    param_names = ["engine"]
    timeout = 300

    def setup(self, engine):
        self.n = size(20_000, 200_000)
        self.cluster, self.client = start_cluster(2, 1)
        self.X, Xd = _blobs(self.n, 20, 5, self.n // 2)
        self.Xd = self.client.persist(Xd)

    def teardown(self, engine):
        stop_cluster(self.cluster, self.client)

    def _fit(self, engine):
        from dasktrain.models import KMeans

        if engine == "local":
            return KMeans(5, random_state=0, engine="local").fit(self.X)
        algo = "dask-ml" if engine == "dask-ml" else "lloyd"
        return KMeans(5, random_state=0, algorithm=algo, client=self.client).fit(self.Xd)

    def time_fit(self, engine):
        self._fit(engine)

    def track_inertia_ratio_to_sklearn(self, engine):
        from sklearn.cluster import KMeans as SK

        ref = SK(5, random_state=0).fit(self.X).inertia_
        return self._fit(engine).inertia_ / ref


class XGBoostSuite:
    """XGBoost classifier: dask engine vs local engine at equal total threads."""

    params = [["dask", "local"]]
    param_names = ["engine"]
    timeout = 600

    def setup(self, engine):
        n = size(20_000, 200_000)
        self.cluster, self.client = start_cluster(2, 1)
        import dask.array as da

        self.X, self.y = _classification(n, 50)
        self.Xd = self.client.persist(da.from_array(self.X, chunks=(n // 2, 50)))
        self.yd = self.client.persist(da.from_array(self.y, chunks=n // 2))

    def teardown(self, engine):
        stop_cluster(self.cluster, self.client)

    def _fit(self, engine):
        from dasktrain.models import XGBClassifier

        m = XGBClassifier(n_estimators=50, engine=engine, client=self.client)
        return m.fit(self.Xd, self.yd) if engine == "dask" else m.fit(self.X, self.y)

    def time_fit(self, engine):
        self._fit(engine)

    def track_accuracy(self, engine):
        return self._fit(engine).score(self.X, self.y)


class ClassicCVSuite:
    """5-fold cross-validation of LR / NB / MLP: folds in process vs folds as tasks."""

    params = [["LogisticRegression", "GaussianNB", "MLPClassifier"], ["local", "dask"]]
    param_names = ["model", "engine"]
    timeout = 300

    def setup(self, model, engine):
        self.cluster, self.client = start_cluster(2, 1)
        self.X, self.y = _classification(size(2_000, 50_000), 20)

    def teardown(self, model, engine):
        stop_cluster(self.cluster, self.client)

    def _estimator(self, model):
        from dasktrain import models

        kw = (
            {"hidden_layer_sizes": (32,), "max_iter": 50, "random_state": 0}
            if model == "MLPClassifier"
            else {}
        )
        return getattr(models, model)(**kw)

    def time_cross_validate(self, model, engine):
        from dasktrain.models import cross_validate

        cross_validate(self._estimator(model), self.X, self.y, engine=engine, client=self.client)

    def track_mean_test_score(self, model, engine):
        from dasktrain.models import cross_validate

        r = cross_validate(
            self._estimator(model), self.X, self.y, engine=engine, client=self.client
        )
        return float(r["test_score"].mean())


def main(repeat=5):
    """Print the issue's comparisons (one process, interleaved repeats, medians, ratios)."""
    from dask_ml.cluster import KMeans as DMKMeans
    from sklearn.cluster import KMeans as SK
    from threadpoolctl import threadpool_limits

    from dasktrain.models import KMeans

    cluster, client = start_cluster(2, 1)
    try:
        X, Xd = _blobs(200_000, 20, 5, 100_000)
        Xd = client.persist(Xd)
        client.wait_for_workers(2)
        results = {}

        def sk():
            with threadpool_limits(2):
                results["sklearn"] = SK(5, random_state=0).fit(X).inertia_

        def ours():
            results["dasktrain-dask"] = KMeans(5, random_state=0, client=client).fit(Xd).inertia_

        def dml():
            with client.as_current():
                results["dask-ml"] = DMKMeans(5, random_state=0).fit(Xd).inertia_

        times = interleaved(
            {"sklearn": sk, "dasktrain-dask": ours, "dask-ml": dml}, repeat=repeat, warmup=1
        )
        med = {k: statistics.median(v) for k, v in times.items()}
        print("KMeans 200,000 x 20, k=5, 2 workers x 1 thread, data persisted; sklearn 2 threads")
        for k in med:
            print(
                f"  {k:15s} median {med[k]:7.3f} s"
                f"  (min {min(times[k]):.3f}, max {max(times[k]):.3f})"
                f"  inertia/sklearn {results[k] / results['sklearn']:.6f}"
            )
        print(
            "  dasktrain-dask / sklearn = "
            f"{med['dasktrain-dask'] / med['sklearn']:.2f}x (target <= 3x)"
        )
        print(
            "  dask-ml / dasktrain-dask = "
            f"{med['dask-ml'] / med['dasktrain-dask']:.1f}x (target >= 10x)"
        )
        Xd = None  # drop the cluster's copy (the closures above hold it) before XGBoost
        xgb_compare(client, repeat=max(3, repeat // 2))
    finally:
        stop_cluster(cluster, client)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    main(parser.parse_args().repeat)
