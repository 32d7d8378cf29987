"""Logistic regression, Gaussian naive Bayes and an MLP on both engines, plus cross-validation.

:class:`LogisticRegression`, :class:`GaussianNB` and :class:`MLPClassifier` are
:class:`~dasktrain.models.OnWorker` with the parameters of the scikit-learn estimator of the
same name, read from the installed scikit-learn (never copied by hand: every parameter it has,
they have, with its default), plus ``engine`` and ``client``. scikit-learn does the learning on
both engines, so results are identical:

* ``engine="local"`` fits in this process (a dask input is computed here first);
* ``engine="dask"`` fits as one task on a worker: the dask array's blocks are gathered *on the
  cluster* into the training matrix and the scikit-learn estimator is fitted there; only the
  fitted estimator (small) comes back. These models need all rows at once, so this is the honest
  distributed version of them (dask-ml's ``Incremental`` would change the results).
* prediction on a dask input is blockwise and lazy (dask-ml's ``ParallelPostFit``), the fitted
  estimator entering the graph once.

:func:`cross_validate` returns the same dict as :func:`sklearn.model_selection.cross_validate`.
On the dask engine X and y are put on the cluster once and every fold is one task.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone, is_classifier

from .._dask import (
    compute_all,
    compute_if_dask,
    gather,
    get_client,
    scatter_data,
    task_keys,
    using_client,
)
from .._validation import is_dask_collection, resolve_engine
from ._base import validate_X, validate_y
from .on_worker import OnWorker

logger = logging.getLogger(__name__)

_CV = "cross_validate(engine='dask')"

__all__ = ["LogisticRegression", "GaussianNB", "MLPClassifier", "cross_validate"]

_OWN_PARAMS = ("engine", "client")

if TYPE_CHECKING:
    from .._typing import ArrayLike, Client, Estimator, NDArray


def _signature(sk_class, positional):
    """``sk_class``'s parameters (keyword-only but ``positional``), ``engine`` and ``client``."""
    P = inspect.Parameter
    params = [p for p in inspect.signature(sk_class.__init__).parameters.values()][1:]
    by_name = {p.name: p for p in params}
    out = [P("self", P.POSITIONAL_OR_KEYWORD)]
    out += [by_name[n].replace(kind=P.POSITIONAL_OR_KEYWORD) for n in positional]
    out += [p.replace(kind=P.KEYWORD_ONLY) for p in params if p.name not in positional]
    out += [
        P("engine", P.KEYWORD_ONLY, default="auto", annotation="str"),
        P("client", P.KEYWORD_ONLY, default=None, annotation="Client | None"),
    ]
    # scikit-learn's parameters carry no annotations: Any, as the type checker sees them
    # (the TYPE_CHECKING __init__ below)
    out = [
        p if p.name == "self" or p.annotation is not P.empty else p.replace(annotation="Any")
        for p in out
    ]
    return inspect.Signature(out, return_annotation="None")


def _init_from(signature):
    """An ``__init__`` that only stores its arguments, with ``signature`` (scikit-learn reads it
    for ``get_params``, ``clone`` and ``repr``)."""

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__


class _SklearnOnWorker(OnWorker):
    """:class:`OnWorker` around a named scikit-learn class whose parameters are its own.

    A subclass names the class in ``_sklearn`` (``"module:Class"``) and the parameters that
    may be given by position in ``_positional``; its ``__init__`` is made from the installed
    class's signature when the subclass is created.
    """

    _sklearn: str | None = None
    _positional: tuple[str, ...] = ()
    # No ``estimator`` parameter: the scikit-learn estimator is built from the parameters.
    _required_parameters: list[str] = []

    if TYPE_CHECKING:  # the real __init__ is made from the installed class's signature

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._sklearn is not None:
            cls.__init__ = _init_from(_signature(cls._sk_class(), cls._positional))

    @classmethod
    def _sk_class(cls):
        module, name = cls._sklearn.split(":")
        return getattr(importlib.import_module(module), name)

    def _new_estimator(self):
        params = self.get_params(deep=False)
        return self._sk_class()(**{k: v for k, v in params.items() if k not in _OWN_PARAMS})

    def _template(self):
        return self._new_estimator()


class LogisticRegression(_SklearnOnWorker):
    """Logistic regression (scikit-learn's) on both engines.

    Parameters
    ----------
    C : float, default=1.0
        The only parameter that may be given by position (``LogisticRegression(0.5)``).
    **params
        Every other parameter of :class:`sklearn.linear_model.LogisticRegression` (as
        installed), keyword-only, with its default (``penalty``, ``l1_ratio``,
        ``fit_intercept``, ``solver``, ``max_iter``...).
    engine : {"auto", "local", "dask"}
        Dask: fitted as one task on a worker (see :class:`~dasktrain.models.OnWorker`).
    client : distributed.Client or None

    See Also
    --------
    sklearn.linear_model.LogisticRegression
    OnWorker : the same for any scikit-learn estimator.
    """

    _sklearn = "sklearn.linear_model:LogisticRegression"
    _positional = ("C",)


class GaussianNB(_SklearnOnWorker):
    """Gaussian naive Bayes (scikit-learn's) on both engines.

    Parameters
    ----------
    **params
        The parameters of :class:`sklearn.naive_bayes.GaussianNB` (as installed),
        keyword-only (``priors``, ``var_smoothing``).
    engine : {"auto", "local", "dask"}
    client : distributed.Client or None

    See Also
    --------
    sklearn.naive_bayes.GaussianNB
    """

    _sklearn = "sklearn.naive_bayes:GaussianNB"


class MLPClassifier(_SklearnOnWorker):
    """Multi-layer perceptron (scikit-learn's) on both engines.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        The only parameter that may be given by position.
    **params
        Every other parameter of :class:`sklearn.neural_network.MLPClassifier` (as
        installed), keyword-only, with its default.
    engine : {"auto", "local", "dask"}
    client : distributed.Client or None

    See Also
    --------
    sklearn.neural_network.MLPClassifier
    """

    _sklearn = "sklearn.neural_network:MLPClassifier"
    _positional = ("hidden_layer_sizes",)


# ------------------------------------------------------------------------ cross-validation


def _fold(estimator, X, y, train, test, scorer, return_train_score):
    """One fold: what sklearn's ``_fit_and_score`` measures (runs in a task on dask)."""
    est = clone(estimator)
    t0 = time.perf_counter()
    est.fit(X[train], y[train])
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_scores = scorer(est, X[test], y[test])
    score_time = time.perf_counter() - t0
    train_scores = scorer(est, X[train], y[train]) if return_train_score else None
    return fit_time, score_time, test_scores, train_scores


def cross_validate(
    estimator: Estimator,
    X: ArrayLike,
    y: ArrayLike,
    *,
    cv: Any = 5,
    scoring: Any = None,
    groups: ArrayLike | None = None,
    engine: str = "auto",
    client: Client | None = None,
    return_train_score: bool = False,
) -> dict[str, NDArray]:
    """Cross-validated scores; the same dict as :func:`sklearn.model_selection.cross_validate`.

    Parameters
    ----------
    estimator : scikit-learn estimator
        A dasktrain estimator is run with ``engine="local"`` inside each fold (the fold is
        already the unit of distribution).
    X : array-like or dask array of shape (n_samples, n_features)
    y : array-like or dask array of shape (n_samples,)
    cv : int, CV splitter or iterable
        As scikit-learn (stratified k-fold for classifiers when an int).
    scoring : str, callable, list, dict or None
        As scikit-learn.
    groups : array-like, optional
    engine : {"auto", "local", "dask"}
        Local: folds run in process (scikit-learn's ``cross_validate``). Dask: X and y are
        put on the cluster once (scattered, or computed there for dask inputs) and each fold
        is one task; the fold indices come from the same splitter, so scores are identical.
    client : distributed.Client or None
    return_train_score : bool

    Returns
    -------
    dict
        ``fit_time``, ``score_time``, ``test_<name>`` / ``test_score`` (and ``train_*``).
    """
    from sklearn.model_selection import cross_validate as sk_cross_validate

    engine = resolve_engine(engine, X, y)
    # The checks of a dask X (NaN, labels) run on the given client: an X persisted on a client
    # that is not the default is unknown to any other scheduler.
    with using_client(client):
        X = validate_X(X)
        y, _ = validate_y(y, X, estimator="cross_validate", classifier=is_classifier(estimator))
    estimator = _local_twin(estimator)
    if engine == "local":
        Xn, yn = compute_all([X, y])
        return sk_cross_validate(
            estimator,
            Xn,
            yn,
            cv=cv,
            scoring=scoring,
            groups=groups,
            return_train_score=return_train_score,
        )
    client = get_client(client, what="cross_validate(engine='dask')")
    results = _folds_on_cluster(client, estimator, X, y, cv, scoring, groups, return_train_score)
    return _cv_results(results, return_train_score)


def _local_twin(estimator):
    """A dasktrain estimator runs locally inside its fold (the fold is the unit of work).

    Rebuilt rather than cloned so that a client argument is dropped instead of deep-copied.
    """
    params = estimator.get_params(deep=False)
    if "engine" not in params:
        return estimator
    params.update(engine="local", **({"client": None} if "client" in params else {}))
    return type(estimator)(**params)


def _folds_on_cluster(client, estimator, X, y, cv, scoring, groups, return_train_score):
    """Every fold as one task (``cv-fold-<uuid>-<i>``), X and y sent to the cluster once."""
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import check_cv

    # The splitter needs y (small) on the client; X stays on the cluster.
    y_local = compute_if_dask(y)
    splitter = check_cv(cv, y_local, classifier=is_classifier(estimator))
    splits = list(splitter.split(np.zeros((len(y_local), 1)), y_local, groups))
    scorer = check_scoring(estimator, scoring=scoring)
    # Once, not per fold: numpy is scattered (to one worker; others fetch it once when a fold
    # lands there); a dask X is concatenated on the cluster without visiting the client.
    # hash=False: a fresh key per call; re-scattering the same content under the same key
    # while the previous call's copy is being released can lose it ("lost dependencies").
    X_f = (
        client.compute(X)
        if is_dask_collection(X)
        else scatter_data(client, X, what=_CV, broadcast=False, hash=False)
    )
    y_f = scatter_data(client, y_local, what=_CV, broadcast=False, hash=False)
    # Everything positional (a keyword array would become a graph node keyed by its name).
    futures = [
        client.submit(
            _fold, estimator, X_f, y_f, tr, te, scorer, return_train_score, key=key, pure=False
        )
        for (tr, te), key in zip(splits, task_keys("cv-fold", len(splits)))
    ]
    return gather(client, futures, what=_CV)


def _cv_results(results, return_train_score):
    """scikit-learn's ``cross_validate`` dict from the ``_fold`` results."""
    out = {
        "fit_time": np.array([r[0] for r in results]),
        "score_time": np.array([r[1] for r in results]),
    }
    for prefix, pos in (("test", 2), ("train", 3)):
        if prefix == "train" and not return_train_score:
            continue
        first = results[0][pos]
        if isinstance(first, dict):
            for name in first:
                out[f"{prefix}_{name}"] = np.array([r[pos][name] for r in results])
        else:
            out[f"{prefix}_score"] = np.array([r[pos] for r in results])
    return out
