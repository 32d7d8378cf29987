"""LR / naive Bayes / MLP on both engines and cross-validation against scikit-learn."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import sklearn.model_selection as skms
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression as SKLogisticRegression
from sklearn.linear_model import Ridge
from sklearn.naive_bayes import GaussianNB as SKGaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from dasktrain.exceptions import ValidationError
from dasktrain.models import (
    GaussianNB,
    LogisticRegression,
    MLPClassifier,
    OnWorker,
    cross_validate,
)


@parametrize_with_checks(
    [
        make(engine)
        for engine in ("local", "dask")  # both engines (issue 26, item 4)
        for make in (
            lambda e: LogisticRegression(engine=e),
            lambda e: GaussianNB(engine=e),
            lambda e: MLPClassifier(
                hidden_layer_sizes=(20,), max_iter=300, random_state=0, engine=e
            ),
            # Any estimator: a regressor, a transformer, a pipeline, one that allows NaN.
            lambda e: OnWorker(Ridge(), engine=e),
            lambda e: OnWorker(PCA(), engine=e),
            lambda e: OnWorker(make_pipeline(StandardScaler(), SKLogisticRegression()), engine=e),
            lambda e: OnWorker(HistGradientBoostingClassifier(max_iter=10), engine=e),
        )
    ]
)
def test_sklearn_estimator_checks(estimator, check, request):
    import warnings

    if estimator.engine == "dask":
        request.getfixturevalue("as_default")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the tiny MLP
        check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(600, 8, n_informative=5, random_state=0)
    return X, y


@pytest.mark.parametrize(
    "make",
    [
        lambda e: LogisticRegression(engine=e),
        lambda e: GaussianNB(engine=e),
        lambda e: MLPClassifier((10,), max_iter=60, random_state=0, engine=e),
    ],
)
def test_engines_identical(make, data, as_default):
    import warnings

    X, y = data
    Xd, yd = da.from_array(X, chunks=(150, 8)), da.from_array(y, chunks=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = make("local").fit(X, y)
        dask_ = make("auto").fit(Xd, yd)
    assert local.engine_ == "local" and dask_.engine_ == "dask"
    # The fitted models are identical (same rows, same scikit-learn fit on a worker)...
    for name, value in vars(local.estimator_).items():
        if name.endswith("_") and isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(dask_.estimator_, name), value, err_msg=name)
    proba = dask_.predict_proba(Xd)
    assert isinstance(proba, da.Array) and proba.chunks[0] == Xd.chunks[0]
    # ...blockwise prediction may differ in the last bit (BLAS blocking by row count).
    np.testing.assert_allclose(proba.compute(), local.predict_proba(X), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(dask_.predict(Xd).compute(), local.predict(X))
    assert dask_.score(Xd, yd) == local.score(X, y)


def test_same_as_sklearn(data):
    X, y = data
    ours = LogisticRegression(C=0.5).fit(X, y)
    ref = SKLogisticRegression(C=0.5).fit(X, y)
    np.testing.assert_array_equal(ours.coef_, ref.coef_)
    np.testing.assert_array_equal(ours.decision_function(X), ref.decision_function(X))


def test_in_a_pipeline(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), GaussianNB()).fit(X, y)
    ref = make_pipeline(StandardScaler(), SKGaussianNB()).fit(X, y)
    np.testing.assert_array_equal(pipe.predict_proba(X), ref.predict_proba(X))


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_cross_validate_identical_to_sklearn(engine, data, client):
    X, y = data
    ours = cross_validate(
        LogisticRegression(),
        X,
        y,
        cv=4,
        scoring=["accuracy", "f1"],
        engine=engine,
        client=client,
        return_train_score=True,
    )
    ref = skms.cross_validate(
        SKLogisticRegression(), X, y, cv=4, scoring=["accuracy", "f1"], return_train_score=True
    )
    assert sorted(ours) == sorted(ref)
    for key in ref:
        if "time" not in key:
            np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)
    assert ours["fit_time"].shape == (4,) and (ours["fit_time"] > 0).all()


def test_cross_validate_dask_input_single_scorer(data, as_default):
    X, y = data
    Xd, yd = da.from_array(X, chunks=(200, 8)), da.from_array(y, chunks=200)
    ours = cross_validate(GaussianNB(), Xd, yd, cv=skms.KFold(3, shuffle=True, random_state=0))
    ref = skms.cross_validate(SKGaussianNB(), X, y, cv=skms.KFold(3, shuffle=True, random_state=0))
    np.testing.assert_array_equal(ours["test_score"], ref["test_score"])
    assert sorted(ours) == sorted(ref)


def test_cross_validate_scatters_once_and_repeats(data, client):
    X, y = data
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        first = cross_validate(GaussianNB(), X, y, cv=5, engine="dask", client=client)
    folds = [t for t in ts.data if t["key"].startswith("cv-fold-")]
    assert len(folds) == 5
    # Every fold reads the same scattered X: one X-sized transfer at most, not one per fold.
    transfers = [s for t in folds for s in t["startstops"] if s["action"] == "transfer"]
    assert len(transfers) <= 2  # X and y each fetched at most once by the other worker
    # Calling again right away with the same arrays works (fresh keys, nothing lost).
    again = cross_validate(GaussianNB(), X, y, cv=5, engine="dask", client=client)
    np.testing.assert_array_equal(first["test_score"], again["test_score"])


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_nan_refused(engine, data, as_default):
    X, y = data
    X = X.copy()
    X[0, 0] = np.inf
    Xin = da.from_array(X, chunks=200) if engine == "dask" else X
    with pytest.raises(ValidationError, match="(?i)infinit"):
        LogisticRegression(engine=engine).fit(Xin, y)


@pytest.mark.parametrize("make", [LogisticRegression, GaussianNB, MLPClassifier])
@pytest.mark.parametrize("engine", ["local", "dask"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_labels_refused_up_front(make, engine, bad, data, as_default):
    # Regression: on the dask engine a NaN label came back as a bare ValueError with the
    # worker's traceback, from the fit task on the cluster.
    X, y = data
    y = y.astype(float)
    y[7] = bad
    Xin, yin = (
        (da.from_array(X, chunks=200), da.from_array(y, chunks=200)) if engine == "dask" else (X, y)
    )
    with pytest.raises(ValidationError, match="(?i)nan|infinit"):
        make(engine=engine).fit(Xin, yin)
    with pytest.raises(ValidationError, match="(?i)nan|infinit"):
        cross_validate(make(), Xin, yin, engine=engine, cv=2)


def test_wrong_length_one_class_unknown_chunks_engine(data):
    X, y = data
    with pytest.raises(ValidationError, match="599"):
        GaussianNB().fit(X, y[:-1])
    with pytest.raises(ValidationError, match="1 class"):
        GaussianNB().fit(X, np.ones(len(y)))
    Xd = da.from_array(X, chunks=200)
    with pytest.raises(ValidationError, match=r"compute_chunk_sizes\(\)"):
        GaussianNB().fit(Xd[Xd[:, 0] > -1e9], y)
    with pytest.raises(ValidationError, match="engine='cuda' is not a known engine"):
        GaussianNB(engine="cuda").fit(X, y)
    with pytest.raises(ValidationError, match="engine='ray'"):
        cross_validate(GaussianNB(), X, y, engine="ray")
    with pytest.raises(ValidationError, match="needs a Dask client"):
        cross_validate(GaussianNB(), X, y, engine="dask")
