"""scikit-learn's data contract on both engines: column names, DataFrames, lazy dask outputs.

Issue 15, items 1-3: estimators recorded no ``feature_names_in_`` (a DataFrame with reordered
columns was predicted silently wrong), dask DataFrames were refused, the LR / MLP wrappers had
hand-picked parameters, and ``set_output("pandas")`` computed dask results.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.callbacks import Callback
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression as SKLogisticRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SKMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks as checks

from dasktrain.exceptions import ValidationError
from dasktrain.models import (
    GaussianNB,
    KMeans,
    LogisticRegression,
    MLPClassifier,
    OnWorker,
    XGBClassifier,
    XGBRegressor,
)

ESTIMATORS = [
    LogisticRegression(engine="local"),
    GaussianNB(engine="local"),
    MLPClassifier((8,), max_iter=50, random_state=0, engine="local"),
    OnWorker(Ridge(), engine="local"),
    OnWorker(make_pipeline(StandardScaler(), SKLogisticRegression()), engine="local"),
    OnWorker(HistGradientBoostingClassifier(max_iter=5), engine="local"),
    KMeans(3, random_state=0, engine="local"),
    XGBClassifier(n_estimators=3, engine="local", n_jobs=1),
    XGBRegressor(n_estimators=3, engine="local", n_jobs=1),
]
TRANSFORMERS = [KMeans(3, random_state=0, engine="local"), OnWorker(PCA(3), engine="local")]


def _name(est):
    inner = est.get_params().get("estimator")
    return type(est).__name__ + (f"({type(inner).__name__})" if inner is not None else "")


@pytest.mark.parametrize("est", ESTIMATORS, ids=_name)
def test_dataframe_column_names_consistency(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # tiny MLP: no convergence
        checks.check_dataframe_column_names_consistency(type(est).__name__, est)


@pytest.mark.parametrize("est", TRANSFORMERS, ids=_name)
@pytest.mark.parametrize(
    "check",
    [
        checks.check_set_output_transform,
        checks.check_set_output_transform_pandas,
        checks.check_global_output_transform_pandas,
        checks.check_transformer_get_feature_names_out,
        checks.check_transformer_get_feature_names_out_pandas,
    ],
    ids=lambda c: c.__name__,
)
def test_set_output_checks(est, check):
    check(type(est).__name__, est)


@pytest.fixture(scope="module")
def frame():
    # 512 columns: the width of pooled CNN features (few rows keep it fast).
    X, y = make_classification(600, 512, n_informative=12, random_state=0)
    cols = [f"px{i}" for i in range(X.shape[1])]
    return pd.DataFrame(X, columns=cols), pd.Series(y, name="label")


def test_reordered_columns_refused_not_predicted_wrong(frame):
    # Before: 58% agreement with the right predictions, silently.
    df, y = frame
    for est in (LogisticRegression(), KMeans(4, random_state=0), XGBClassifier(n_estimators=3)):
        fitted = est.fit(df, None if isinstance(est, KMeans) else y)
        np.testing.assert_array_equal(fitted.feature_names_in_, df.columns.to_numpy())
        with pytest.raises(ValidationError, match="same order as they were in fit"):
            fitted.predict(df[df.columns[::-1]])
        with pytest.raises(ValidationError, match="unseen at fit time"):
            fitted.predict(df.rename(columns={"px3": "other"}))
        ddf = dd.from_pandas(df[df.columns[::-1]], npartitions=3)
        with pytest.raises(ValidationError, match="same order as they were in fit"):
            fitted.predict(ddf)


def _fit_args(est, X, y):
    return (X,) if isinstance(est, KMeans) else (X, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda e: LogisticRegression(engine=e),
        lambda e: KMeans(4, random_state=0, engine=e),
        lambda e: XGBClassifier(n_estimators=5, engine=e, n_jobs=1),
        lambda e: OnWorker(HistGradientBoostingClassifier(max_iter=10), engine=e),
    ],
    ids=["logreg", "kmeans", "xgboost", "onworker"],
)
@pytest.mark.parametrize("engine", ["local", "dask"])
def test_dask_dataframes_on_both_engines(make, engine, frame, as_default):
    df, y = frame
    ddf, dy = dd.from_pandas(df, npartitions=3), dd.from_pandas(y, npartitions=3)
    assert ddf.map_partitions(len).compute().tolist() == [200, 200, 200]
    # The same rows as a dask array with the frame's partitions: the same fit, bit for bit.
    Xd = da.from_array(df.to_numpy(), chunks=(200, 512))
    yd = da.from_array(y.to_numpy(), chunks=200)
    ref = make(engine).fit(*_fit_args(make(engine), Xd, yd))
    est = make(engine).fit(*_fit_args(make(engine), ddf, dy))
    assert est.engine_ == engine
    np.testing.assert_array_equal(est.feature_names_in_, df.columns.to_numpy())
    assert not hasattr(ref, "feature_names_in_")
    pred = est.predict(ddf)
    assert isinstance(pred, da.Array)  # lazy, rows unknown until computed
    np.testing.assert_array_equal(pred.compute(), ref.predict(Xd).compute())
    np.testing.assert_array_equal(pred.compute(), est.predict(df))
    if not isinstance(est, KMeans):
        assert est.score(ddf, dy) == ref.score(Xd, yd) == est.score(df, y)


class _Count(Callback):
    """Counts the tasks dask's local scheduler runs (no distributed client active)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def _pretask(self, key, dsk, state):
        self.n += 1


def test_dask_outputs_stay_lazy(frame):
    df, y = frame
    ddf = dd.from_pandas(df, npartitions=3)
    Xd = da.from_array(df.to_numpy(), chunks=200)
    km = KMeans(4, random_state=0, engine="local").fit(df)
    lr = LogisticRegression(engine="local").fit(df, y)
    with dask.config.set(scheduler="sync"), _Count() as count:
        out = [lr.predict(ddf), lr.predict_proba(ddf), km.predict(ddf), km.transform(ddf)]
        km.set_output(transform="pandas")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Xd has no names: as scikit-learn
            frames = [km.transform(ddf), km.transform(Xd)]
    assert count.n == 0, "building the outputs computed something"
    assert all(isinstance(o, da.Array) for o in out)
    for f in frames:
        assert isinstance(f, dd.DataFrame) and list(f.columns) == [f"kmeans{i}" for i in range(4)]
    # The dask DataFrame of a dask DataFrame keeps its index and partitions.
    assert frames[0].npartitions == ddf.npartitions
    expected = km.transform(df)
    assert isinstance(expected, pd.DataFrame)
    pd.testing.assert_frame_equal(frames[0].compute(), expected)
    np.testing.assert_allclose(frames[1].compute().to_numpy(), expected.to_numpy())
    km.set_output(transform="polars")
    with pytest.raises(ValidationError, match="no lazy form"):
        km.transform(ddf)


def test_nan_in_lazy_input_raises_when_computed(frame):
    df, y = frame
    X = df.to_numpy(copy=True)
    X[450, 2] = np.nan
    lr = LogisticRegression(engine="local").fit(df.to_numpy(), y)
    pred = lr.predict(da.from_array(X, chunks=200))  # nothing computed yet
    with pytest.raises(ValidationError, match=r"NaN or infinite.*local rows \[50\]"):
        pred.compute(scheduler="sync")


def test_every_sklearn_parameter(frame):
    df, y = frame
    for ours, theirs in [
        (LogisticRegression, SKLogisticRegression),
        (MLPClassifier, SKMLPClassifier),
    ]:
        assert set(theirs().get_params()) <= set(ours().get_params())
        assert ours().get_params()["engine"] == "auto"
    lr = LogisticRegression(fit_intercept=False, C=0.3, l1_ratio=0.0).fit(df, y)
    ref = SKLogisticRegression(fit_intercept=False, C=0.3).fit(df, y)
    np.testing.assert_array_equal(lr.coef_, ref.coef_)
    assert lr.intercept_ == 0.0
    assert isinstance(lr, OnWorker) and LogisticRegression(0.5).C == 0.5
    with pytest.raises(TypeError):
        LogisticRegression(0.5, "l2")  # only C is positional, as before
    mlp = MLPClassifier((4,), learning_rate="adaptive", momentum=0.5, n_iter_no_change=3)
    assert mlp.get_params()["momentum"] == 0.5


def test_onworker_any_estimator_on_the_dask_engine(frame, client):
    df, y = frame
    # 64 columns: HistGradientBoosting bins every column (30 s at 512 on a loaded 2-core box).
    X = df.iloc[:, :64].to_numpy(copy=True)
    X[::9, 4] = np.nan  # HistGradientBoosting handles missing values: so does the wrapper
    Xd, yd = da.from_array(X, chunks=(150, 64)), da.from_array(y.to_numpy(), chunks=150)
    w = np.linspace(0.5, 1.5, len(y))
    est = HistGradientBoostingClassifier(max_iter=10, random_state=0)
    ref = est.fit(X, y, sample_weight=w)
    with client.as_current():
        ours = OnWorker(est, engine="dask", client=client).fit(
            Xd, yd, sample_weight=da.from_array(w, chunks=150)
        )
    assert ours.engine_ == "dask" and ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    proba = ours.predict_proba(Xd)
    assert isinstance(proba, da.Array) and proba.chunks[0] == Xd.chunks[0]
    np.testing.assert_allclose(proba.compute(), ref.predict_proba(X))
    assert "estimator__max_iter" in ours.get_params()
    assert not hasattr(ours, "transform") and hasattr(OnWorker(PCA()), "transform")


def test_onworker_grid_search(frame):
    df, y = frame
    search = GridSearchCV(
        OnWorker(SKLogisticRegression(max_iter=200), engine="local"),
        {"estimator__C": [0.01, 1.0]},
        cv=3,
    ).fit(df, y)
    ref = GridSearchCV(SKLogisticRegression(max_iter=200), {"C": [0.01, 1.0]}, cv=3).fit(df, y)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"]
    )
