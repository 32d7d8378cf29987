"""Built-in comparison workloads and the inputs they share.

A workload is one step of the image pipeline run on one engine: ``read``, ``features``,
``kmeans``, ``xgboost``, ``logreg``, ``naive_bayes``, ``mlp_cv`` and ``ddp_cnn``. Each returns
a dict of metrics; ``train_time`` is the wall time of the training step alone (data loading is
not training, as in MLPerf), while :func:`dasktrain.compare` times the whole step around it.

Inputs (the decoded images, the CNN features, the train/test split) are prepared once per data
size with the local engine, outside every timed region, so both engines get identical data. The
dask engine then pays for moving its input onto the cluster inside the whole-step time.

The parts each workload uses (images, features, models, ddp) are imported lazily; when one is
missing the workload raises :class:`Unavailable` and its row says so, it is never faked.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import inspect
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from ._validation import is_dask_collection
from .exceptions import DasktrainError, Unavailable, WorkloadError  # noqa: F401 (Unavailable re-exported)

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN",
    "Unavailable",
    "Workload",
    "Inputs",
    "RunContext",
    "resolve_workloads",
    "current",
]


@dataclasses.dataclass
class RunContext:
    """What a built-in workload needs to know about the run it is in.

    ``n_threads`` is the number of cores both engines may use (the dask cluster's total worker
    threads), which the local engine is limited to for a fair comparison.
    """

    n_threads: int = 1
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)


# No shared default instance: a RunContext holds a mutable options dict.
_CURRENT = contextvars.ContextVar("dasktrain_workload_context", default=None)


def current():
    """The :class:`RunContext` of the run in progress (defaults outside :func:`compare`)."""
    ctx = _CURRENT.get()
    return RunContext() if ctx is None else ctx


@contextlib.contextmanager
def using(ctx):
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def _need(module, name=None):
    """Import ``module`` (and ``name`` from it) or raise :class:`Unavailable` saying which part."""
    what = f"{module}.{name}" if name else module
    try:
        mod = importlib.import_module(module)
        return getattr(mod, name) if name else mod
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"{what} is not available ({type(exc).__name__}: {exc})") from exc


def _make(cls, **kwargs):
    """Instantiate ``cls`` with the keyword arguments its signature accepts.

    The defaults below are tuned for a small demo; estimators that do not take one of them
    (their own signature decides) simply use their own default.
    """
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return cls(**kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return cls(**kwargs)
    return cls(**{k: v for k, v in kwargs.items() if k in params})


def _opt(name, default):
    return current().options.get(name, default)


# ---------------------------------------------------------------------------------------
# Inputs shared by the workloads of one data size
# ---------------------------------------------------------------------------------------
class Inputs:
    """The data of one comparison size, prepared lazily and cached (outside timed regions).

    Parameters
    ----------
    data : str, Path, ImageSet, tuple (X, y)
        A class-per-directory folder, an ImageSet, images ``(X, y)`` with X of shape
        ``(n, h, w, c)``, or a feature matrix ``(X, y)`` with X of shape ``(n, d)``.
    size : int, optional
        Use only this many samples (balanced over classes for a folder).
    workdir : Path
        Scratch space (subset folders).
    """

    def __init__(self, data, *, size=None, workdir=None, seed=0, options=None):
        self.data = data
        self.size = size
        self.workdir = Path(workdir) if workdir is not None else None
        self.seed = seed
        self.options = dict(options or {})
        self._cache = {}

    # kind of the user's data
    @property
    def kind(self):
        d = self.data
        if isinstance(d, (str, os.PathLike)):
            return "path"
        if isinstance(d, tuple):
            X = d[0]
            return "features" if getattr(X, "ndim", 0) == 2 else "images"
        if hasattr(d, "X") and hasattr(d, "y"):
            return "imageset"
        return "other"

    def _cached(self, key, build):
        if key not in self._cache:
            try:
                self._cache[key] = ("ok", build())
            except Unavailable as exc:
                self._cache[key] = ("unavailable", exc)
            except WorkloadError as exc:
                self._cache[key] = ("error", exc)
            except Exception as exc:
                self._cache[key] = ("error", WorkloadError(f"preparing the {key} failed: {exc!r}"))
        status, value = self._cache[key]
        if status == "ok":
            return value
        raise value

    @property
    def path(self):
        """Image folder (a balanced subset of symlinks when ``size`` is set)."""
        return self._cached("image folder", self._build_path)

    def _build_path(self):
        if self.kind != "path":
            raise Unavailable(
                f"this workload reads an image folder; data is {type(self.data).__name__}, "
                "pass the folder path instead"
            )
        root = image_root(self.data)
        if self.size is None:
            return root
        return _subset_folder(root, self.size, self.workdir / f"subset-{self.size}", self.seed)

    @property
    def images(self):
        """``(X, y, classes)``: numpy images (n, h, w, c) float32 and int64 labels."""
        return self._cached("images", self._build_images)

    def _build_images(self):
        kind = self.kind
        if kind == "path":
            read_images = _need("dasktrain.images", "read_images")
            iset = read_images(self.path, size=_opt("image_size", 64), color="gray", engine="local")
            X, y, classes = np.asarray(iset.X), np.asarray(iset.y), list(iset.classes)
        elif kind == "imageset":
            d = self.data
            X, y, classes = _np(d.X), _np(d.y), list(getattr(d, "classes", []))
            X, y = _take(X, y, self.size, self.seed)
        elif kind == "images":
            X, y = _np(self.data[0]), _np(self.data[1])
            X, y = _take(X, y, self.size, self.seed)
            classes = sorted(np.unique(y).tolist())
        else:
            raise Unavailable("this workload needs images; data is a feature matrix")
        if len(X) == 0:
            raise WorkloadError(f"the data set {self.data!r} has no images; check the folder.")
        return X, y, classes

    @property
    def features(self):
        """``(F, y)``: a 2-d numpy feature matrix and its labels."""
        return self._cached("features", self._build_features)

    def _build_features(self):
        if self.kind == "features":
            F, y = _np(self.data[0]), _np(self.data[1])
            return _take(F, y, self.size, self.seed)
        X, y, _ = self.images
        CNNFeatures = _need("dasktrain.features", "CNNFeatures")
        ext = _make(
            CNNFeatures,
            backbone=_opt("backbone", "smallcnn"),
            engine="local",
            seed=self.seed,
            n_threads=current().n_threads,
        )
        F = ext.fit(X).transform(X)
        return np.asarray(F, dtype=np.float32), y

    @property
    def split(self):
        """Stratified train/test split of the features: ``(Ftr, Fte, ytr, yte)``."""
        return self._cached("feature split", lambda: _split(*self.features, self.seed))

    @property
    def image_split(self):
        """Stratified train/test split of the images: ``(Xtr, Xte, ytr, yte)``."""

        def build():
            X, y, _ = self.images
            return _split(X, y, self.seed)

        return self._cached("image split", build)

    def prepare(self, names):
        """Build the named inputs now (untimed); failures are cached and re-raised in the run."""
        for name in names:
            try:
                value = getattr(self, name)
                if callable(value):
                    value()
            except Exception:  # reported by the workload's own runs (unavailable / error)
                pass

    def for_user(self):
        """The data handed to a user's workload callable (subsampled when ``size`` is set)."""
        kind = self.kind
        if self.size is None or kind == "other":
            return self.data
        if kind == "path":
            return self.path
        if kind == "features":
            return self.features
        X, y, _ = self.images
        return X, y


def image_root(path):
    """The folder whose sub-folders are the classes: ``path/train`` when it has one."""
    root = Path(path)
    if not root.exists():
        raise WorkloadError(f"data folder {str(root)!r} does not exist; check the path.")
    if not root.is_dir():
        raise WorkloadError(f"data={str(root)!r} is a file; pass a class-per-directory folder.")
    train = root / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        root = train
    n = sum(1 for p in root.rglob("*") if p.is_file())
    if n == 0:
        raise WorkloadError(
            f"data folder {str(root)!r} is empty: expected one sub-folder of images per class "
            "(e.g. NORMAL/, PNEUMONIA/)."
        )
    return root


def _subset_folder(root, size, dest, seed):
    """A folder of symlinks holding ``size`` images balanced over the classes of ``root``."""
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise WorkloadError(f"{str(root)!r} has no class sub-folders.")
    rng = np.random.default_rng(seed)
    per = {c: sorted(f for f in c.iterdir() if f.is_file()) for c in classes}
    total = sum(len(v) for v in per.values())
    if size > total:
        raise WorkloadError(f"size {size} is larger than the {total} images in {str(root)!r}.")
    k = max(1, size // len(classes))
    for c, files in per.items():
        out = dest / c.name
        out.mkdir(parents=True, exist_ok=True)
        pick = rng.permutation(len(files))[:k]
        for i in sorted(pick):
            link = out / files[i].name
            if not link.exists():
                link.symlink_to(files[i].resolve())
    return dest


def _np(x):
    if is_dask_collection(x):
        x = x.compute()
    return np.asarray(x)


def _take(X, y, size, seed):
    if size is None:
        return X, y
    if size > len(X):
        raise WorkloadError(f"size {size} is larger than the data ({len(X)} samples).")
    idx = np.sort(np.random.default_rng(seed).permutation(len(X))[:size])
    return X[idx], y[idx]


def _split(X, y, seed):
    from sklearn.model_selection import train_test_split

    # np.unique, not bincount: labels may be strings ("NORMAL") or negative integers.
    strat = y if np.unique(np.asarray(y), return_counts=True)[1].min() >= 2 else None
    return train_test_split(X, y, test_size=0.25, random_state=seed, stratify=strat)


# ---------------------------------------------------------------------------------------
# Engine plumbing
# ---------------------------------------------------------------------------------------
def _to_cluster(client, *arrays):
    """Put numpy arrays on the cluster as persisted dask arrays, one chunk per worker thread."""
    import dask.array as da
    from distributed import wait

    n = max(1, current().n_threads)
    out = []
    for a in arrays:
        a = np.asarray(a)
        rows = max(1, math.ceil(len(a) / n))
        chunks = (rows,) + tuple(a.shape[1:])
        out.append(da.from_array(a, chunks=chunks))
    out = client.persist(out)
    wait(out)
    return out


def _result(client, x):
    """A numpy result from a numpy or dask value (computed on ``client``)."""
    if is_dask_collection(x):
        x = client.compute(x).result() if client is not None else x.compute()
    return np.asarray(x)


def _metric(name, *args, **kwargs):
    fn = _need("dasktrain.metrics", name)
    return float(fn(*args, **kwargs))


# ---------------------------------------------------------------------------------------
# The built-in workloads
# ---------------------------------------------------------------------------------------
def w_read(inputs, engine, client):
    read_images = _need("dasktrain.images", "read_images")
    path = inputs.path
    size = _opt("image_size", 64)
    t0 = time.perf_counter()
    iset = read_images(path, size=size, color="gray", engine=engine)
    X = iset.X
    if engine == "dask":
        from distributed import wait

        X = client.persist(X)
        wait(X)
    else:
        X = np.asarray(X)
    return {
        "train_time": math.nan,
        "images": float(len(iset.y)),
        "read_time": time.perf_counter() - t0,
    }


def w_features(inputs, engine, client):
    CNNFeatures = _need("dasktrain.features", "CNNFeatures")
    X, _, _ = inputs.images
    if engine == "dask":
        (X,) = _to_cluster(client, X)
    ext = _make(
        CNNFeatures,
        backbone=_opt("backbone", "smallcnn"),
        engine=engine,
        seed=current().seed,
        batch_size=_opt("batch_size", 64),
        n_threads=current().n_threads if engine == "local" else None,
    )
    t0 = time.perf_counter()
    F = _result(client, ext.fit(X).transform(X))
    return {"train_time": time.perf_counter() - t0, "n_features": float(F.shape[1])}


def w_kmeans(inputs, engine, client):
    KMeans = _need("dasktrain.models", "KMeans")
    F, y = inputs.features
    k = int(len(np.unique(y)))
    Xe = _to_cluster(client, F)[0] if engine == "dask" else F
    km = _make(KMeans, n_clusters=k, engine=engine, random_state=current().seed, client=client)
    t0 = time.perf_counter()
    km.fit(Xe)
    train = time.perf_counter() - t0
    labels = (
        _result(client, km.labels_) if hasattr(km, "labels_") else _result(client, km.predict(Xe))
    )
    return {
        "train_time": train,
        "silhouette": _metric("silhouette_score", F, labels, sample_size=min(len(F), 2000)),
        "davies_bouldin": _metric("davies_bouldin_score", F, labels),
        "adjusted_rand": _metric("adjusted_rand_score", y, labels),
    }


def _classify(inputs, engine, client, est):
    Ftr, Fte, ytr, yte = inputs.split
    if engine == "dask":
        Xtr, ytr_e, Xte = _to_cluster(client, Ftr, ytr, Fte)
    else:
        Xtr, ytr_e, Xte = Ftr, ytr, Fte
    t0 = time.perf_counter()
    est.fit(Xtr, ytr_e)
    train = time.perf_counter() - t0
    pred = _result(client, est.predict(Xte))
    out = {"train_time": train, "accuracy": _metric("accuracy_score", yte, pred)}
    if hasattr(est, "predict_proba") and len(np.unique(ytr)) == 2:
        try:
            proba = _result(client, est.predict_proba(Xte))[:, 1]
            out["roc_auc"] = _metric("roc_auc_score", yte, proba)
        except Unavailable:
            raise
        except Exception as exc:  # a model without probabilities keeps its accuracy
            logger.debug("no ROC AUC for %s: %s", type(est).__name__, exc)
    return out


def w_xgboost(inputs, engine, client):
    XGB = _need("dasktrain.models", "XGBClassifier")
    est = _make(
        XGB,
        n_estimators=_opt("n_estimators", 50),
        max_depth=4,
        learning_rate=0.3,
        engine=engine,
        n_jobs=current().n_threads if engine == "local" else None,
        random_state=current().seed,
        client=client if engine == "dask" else None,
    )
    return _classify(inputs, engine, client, est)


def w_logreg(inputs, engine, client):
    LR = _need("dasktrain.models", "LogisticRegression")
    return _classify(inputs, engine, client, _make(LR, engine=engine, max_iter=200))


def w_naive_bayes(inputs, engine, client):
    NB = _need("dasktrain.models", "GaussianNB")
    return _classify(inputs, engine, client, _make(NB, engine=engine))


def w_mlp_cv(inputs, engine, client):
    MLP = _need("dasktrain.models", "MLPClassifier")
    cross_validate = _need("dasktrain.models", "cross_validate")
    F, y = inputs.features
    # The folds are what is distributed; each fold's MLP trains in one process on either engine.
    est = _make(
        MLP,
        hidden_layer_sizes=(64,),
        max_iter=_opt("mlp_max_iter", 200),
        random_state=current().seed,
        engine="local",
    )
    # CNN features have very different scales per channel; an MLP (unlike trees) needs them
    # standardised or it stays at chance. The scaler is fitted inside each fold.
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = make_pipeline(StandardScaler(), est)
    kw = {"cv": _opt("cv", 3), "scoring": "accuracy", "engine": engine}
    if engine == "dask":
        kw["client"] = client
    t0 = time.perf_counter()
    res = cross_validate(est, F, y, **kw)
    train = time.perf_counter() - t0
    return {"train_time": train, "accuracy": float(np.mean(res["test_score"]))}


def w_ddp_cnn(inputs, engine, client):
    ddp = _need("dasktrain.ddp")
    recipes = _need("dasktrain.ddp.recipes")
    train_classifier = recipes.train_classifier
    Xtr, Xte, ytr, yte = inputs.image_split
    kw = {
        "X_val": Xte,
        "y_val": yte,
        "model": _opt("ddp_model", "smallcnn"),
        "epochs": _opt("epochs", 2),
        "batch_size": _opt("ddp_batch_size", 32),
        "seed": current().seed,
    }
    if engine == "dask":
        run = _need("dasktrain.ddp", "run")
        out = run(train_classifier, Xtr, ytr, client=client, **kw)
    else:
        run_local = getattr(ddp, "run_local", None)
        out = (
            run_local(train_classifier, Xtr, ytr, **kw)
            if run_local
            else train_classifier(Xtr, ytr, **kw)
        )
    if isinstance(out, dict) and "history" not in out:
        out = out[min(out)]  # {rank: value}: rank 0 reports for the job
    hist = out.get("history") or [{}]
    res = {"train_time": float(out.get("train_time", math.nan))}
    if "accuracy" in hist[-1]:
        res["accuracy"] = float(hist[-1]["accuracy"])
    if "samples_per_s" in out:
        res["samples_per_s"] = float(out["samples_per_s"])
    return res


@dataclasses.dataclass(frozen=True)
class Workload:
    """A named workload: ``fn(inputs, engine, client) -> dict`` and its quality metric.

    ``metric=None`` takes the first metric the function returns; ``False`` means none.

    ``higher_is_better`` tells the report which way the quality metric points
    (Davies-Bouldin is lower-is-better; silhouette and accuracy are higher-is-better).
    """

    name: str
    fn: object
    metric: str | bool | None = None
    higher_is_better: bool = True
    builtin: bool = True
    #: Inputs attributes to prepare before any timed run (see :meth:`Inputs.prepare`).
    needs: tuple = ()


BUILTIN = {
    w.name: w
    for w in [
        # Reading and feature extraction have no quality metric of their own (False: none).
        Workload("read", w_read, False, needs=("path",)),
        Workload("features", w_features, False, needs=("images",)),
        Workload("kmeans", w_kmeans, "silhouette", needs=("features",)),
        Workload("xgboost", w_xgboost, "accuracy", needs=("split",)),
        Workload("logreg", w_logreg, "accuracy", needs=("split",)),
        Workload("naive_bayes", w_naive_bayes, "accuracy", needs=("split",)),
        Workload("mlp_cv", w_mlp_cv, "accuracy", needs=("features",)),
        Workload("ddp_cnn", w_ddp_cnn, "accuracy", needs=("image_split",)),
    ]
}


def _user(fn):
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if name == "<lambda>":
        name = f"lambda@{id(fn):x}"

    def call(inputs, engine, client):
        return fn(inputs.for_user(), engine, client)

    return Workload(
        name, call, metric=getattr(fn, "metric", None), builtin=False, needs=("for_user",)
    )


def resolve_workloads(workloads):
    """Turn names, callables or a mix (or ``"all"``) into a list of :class:`Workload`.

    Raises
    ------
    WorkloadError
        For an unknown name (the message lists the known ones), an empty list or a duplicate.
    """
    if isinstance(workloads, str) or callable(workloads) or isinstance(workloads, Workload):
        workloads = [workloads]
    try:
        items = list(workloads)
    except TypeError:
        raise WorkloadError(
            f"workloads={workloads!r} must be a name, a callable or a list of them."
        ) from None
    out = []
    for w in items:
        if isinstance(w, str) and w == "all":
            out.extend(BUILTIN.values())
        elif isinstance(w, str):
            if w not in BUILTIN:
                raise WorkloadError(
                    f"unknown workload {w!r}; use one of {', '.join(map(repr, BUILTIN))}, 'all', "
                    "or a callable (data, engine, client) -> dict of metrics."
                )
            out.append(BUILTIN[w])
        elif isinstance(w, Workload):
            out.append(w)
        elif callable(w):
            out.append(_user(w))
        else:
            raise WorkloadError(
                f"workload {w!r} is neither a known name nor a callable (data, engine, client)."
            )
    if not out:
        raise WorkloadError("workloads is empty; name at least one workload.")
    names = [w.name for w in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise WorkloadError(f"workload(s) {dup!r} given twice; each name must be unique.")
    return out
