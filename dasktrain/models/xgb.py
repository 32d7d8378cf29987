"""XGBoost on both engines: ``xgboost.XGBClassifier`` locally, ``xgboost.dask`` on a cluster.

The dask engine persists X and y with every worker holding row blocks (xgboost.dask trains only
on workers that hold data), then fits ``xgboost.dask.DaskXGBClassifier``, which builds a
``DaskQuantileDMatrix`` for the ``hist`` tree method. Both engines keep only the fitted
``Booster``: predictions on numpy input run in process, on dask input through
``xgboost.dask.inplace_predict`` (the booster is scattered once, not put in every task).

For a fair comparison the local engine uses as many threads as the dask workers have in total
when ``n_jobs`` is not given and a client exists.

A worker that dies during a dask fit breaks xgboost's allreduce ring (``Ring Allreduce failed
... Poll error``). The fit then raises :class:`~dasktrain.exceptions.WorkerLostError` naming the
lost worker, or, with ``max_restarts``, trains again on the live workers, from the last
checkpoint when ``checkpoint_dir`` is set (like the DDP launcher's ``max_restarts``).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from .._compat import has_gpu, import_optional
from .._dask import (
    compute_if_dask,
    maybe_client,
    total_threads,
    using_client,
    watching,
)
from .._validation import (
    check_positive_int,
    check_weighted_classes,
    is_dask_collection,
    resolve_engine,
)
from ..exceptions import ValidationError
from ._base import (
    computed_X,
    fit_X,
    scoring_inputs,
    strip_client_state,
    validate_sample_weight,
    validate_X,
    validate_y,
)
from ._xgb_booster import BoosterMethods
from ._xgb_dask import fit_dask
from ._xgb_params import DEFAULTS, XGBOOST_NAMED, check_used, extra_names, init_signature
from ._xgb_predict import (
    argmax_labels,
    binary_proba,
    encode_labels,
)

if TYPE_CHECKING:
    from .._typing import Array, ArrayLike, Self

logger = logging.getLogger(__name__)

__all__ = ["XGBClassifier", "XGBRegressor"]

_DEVICES = ("auto", "cpu", "cuda")


class _XGBBase(BoosterMethods, BaseEstimator):
    _kind: str | None = None  # "classifier" or "regressor"

    # Every parameter of xgboost's XGBModel by name, dasktrain's own, and any other native
    # xgboost parameter as a keyword (kept as an attribute of its own name, as xgboost's wrapper
    # keeps its **kwargs); the signature (and so get_params) is _xgb_params.init_signature().
    def __init__(self, **kwargs: Any) -> None:
        for name, default in DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, default))
        for name, value in kwargs.items():
            setattr(self, name, value)

    __init__.__signature__ = init_signature()  # type: ignore[attr-defined]  # what sklearn reads

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        params.update({name: getattr(self, name) for name in extra_names(self)})
        return params

    def set_params(self, **params: Any) -> Self:
        # Like xgboost's: a name it does not know is kept, and refused by fit (check_used),
        # which asks xgboost what it uses.
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __getstate__(self):
        return strip_client_state(self.__dict__)

    def _resolve_device(self):
        if self.device not in _DEVICES:
            raise ValidationError(f"device={self.device!r} is not known; use one of {_DEVICES!r}.")
        if self.device == "auto":
            return "cuda" if has_gpu() else "cpu"
        return self.device

    def _check_fault_params(self):
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.max_restarts, "max_restarts", minimum=0)
        if self.checkpoint_dir is not None and not isinstance(
            self.checkpoint_dir, (str, os.PathLike)
        ):
            raise ValidationError(
                f"checkpoint_dir={self.checkpoint_dir!r} must be None or a folder path (on a "
                "file system the workers and this process share)."
            )

    def _xgb_kwargs(self):
        """The keyword arguments of the xgboost estimator of either engine."""
        check_positive_int(self.n_estimators, "n_estimators")
        check_positive_int(self.max_depth, "max_depth", minimum=0)
        self._check_fault_params()
        params = {name: getattr(self, name) for name in XGBOOST_NAMED}
        params = {k: v for k, v in params.items() if v is not None}  # None: xgboost's default
        params.update({name: getattr(self, name) for name in extra_names(self)})
        params.setdefault("tree_method", "hist")
        params.update(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            random_state=self.random_state,
            early_stopping_rounds=self.early_stopping_rounds,
            eval_metric=self.eval_metric,
            device=self._resolve_device(),
        )
        return params

    def _check_y(self, y, X, **names):
        return validate_y(
            y, X, estimator=type(self).__name__, classifier=self._kind == "classifier", **names
        )

    def _check_eval_set(self, eval_set, X):
        """``[(X_i, y_i)]`` checked, each named ``eval_set[i]`` in the messages. An eval set
        may hold one class only (xgboost evaluates it); its labels must be among y's."""
        if eval_set is not None and not isinstance(eval_set, (list, tuple)):
            raise ValidationError(
                f"eval_set={type(eval_set).__name__} must be a list of (X, y) pairs."
            )
        evals = []
        for i, pair in enumerate(eval_set or []):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValidationError(f"eval_set[{i}] must be an (X, y) pair.")
            Xe = validate_X(pair[0], name=f"eval_set[{i}][0]", allow_nan=True)
            names = {"name": f"eval_set[{i}][1]", "x_name": f"eval_set[{i}][0]"}
            ye, _ = self._check_y(pair[1], Xe, min_classes=1, **names)
            if Xe.shape[1] != X.shape[1]:
                raise ValidationError(
                    f"eval_set[{i}] has {Xe.shape[1]} features but X has {X.shape[1]}."
                )
            evals.append((Xe, ye))
        return evals

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        eval_set: Sequence[tuple[ArrayLike, ArrayLike]] | None = None,
        sample_weight: ArrayLike | None = None,
        xgb_model: Any = None,
        verbose: bool | int = False,
    ) -> Self:
        """Fit the booster.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            NaN is a missing value (xgboost's ``missing=np.nan``); inf is refused. A pandas or
            dask DataFrame's column names are recorded in ``feature_names_in_``.
        y : array-like or dask array of shape (n_samples,)
        eval_set : list of (X, y) pairs, optional
            Evaluated every round; the last one drives ``early_stopping_rounds``.
        sample_weight : array-like or dask array of shape (n_samples,), optional
        xgb_model : xgboost.Booster or str, optional
            Continue training this model (or model file, e.g. a checkpoint) with
            ``n_estimators`` more rounds, as in xgboost.
        verbose : bool or int
            Print the evaluation of ``eval_set`` every round (every ``verbose`` rounds), as
            xgboost does; False by default here (xgboost's default is True).

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            Bad values or shapes, one class only, unknown engine/device, early stopping
            without an eval set, unknown chunk sizes.
        WorkerLostError
            A worker died during a dask fit and no restart is left (``max_restarts``); the
            message names the worker and the last checkpoint to resume from.
        WorkersPausedError
            The dask fit waited on workers paused for memory for
            ``dasktrain.paused-workers.grace``.

        Notes
        -----
        With ``checkpoint_dir`` the booster is saved every ``checkpoint_every`` rounds as
        ``xgb-<fit tag>-<rounds>.ubj`` (by rank 0 on the dask engine: the folder must be
        reachable from the workers and from this process). With ``max_restarts`` a fit that
        lost a worker trains again on the live workers, from the last checkpoint of this fit
        when there is one (its remaining rounds only), else from the start. A restart's
        early-stopping count and ``evals_result_`` begin at the checkpoint.
        """
        self._verbose = verbose
        # Behind the paused-worker guard: xgboost.dask's waits are its own.
        what = f"{type(self).__name__}.fit"
        with using_client(self.client), watching(maybe_client(self.client), what):
            return self._fit(X, y, eval_set, sample_weight, xgb_model)

    def _fit(self, X, y, eval_set, sample_weight, xgb_model=None):
        engine = resolve_engine(self.engine, X, y, sample_weight)
        # A dask X is checked for NaN/inf once materialised (computed by the local engine,
        # persisted by the dask engine), not by a pass of its own that would compute it twice.
        # NaN is a missing value to xgboost; inf is refused (for a dask X on its persisted or
        # computed blocks, never by a pass of its own).
        X = fit_X(self, X, allow_nan=True)
        y, classes = self._check_y(y, X)
        sample_weight = validate_sample_weight(sample_weight, X)
        params = self._xgb_kwargs()
        if self.early_stopping_rounds is not None and not eval_set:
            raise ValidationError(
                f"early_stopping_rounds={self.early_stopping_rounds!r} needs eval_set=[(X_val, "
                "y_val)]; pass one or set early_stopping_rounds=None."
            )
        evals = self._check_eval_set(eval_set, X)
        if classes is not None:
            if sample_weight is not None:
                check_weighted_classes(y, sample_weight)
            self.classes_ = np.asarray(classes)
            self.n_classes_ = len(classes)
            y = encode_labels(y, self.classes_)
            evals = [
                (Xe, encode_labels(ye, self.classes_, name=f"eval_set[{i}][1]"))
                for i, (Xe, ye) in enumerate(evals)
            ]
        # xgboost only warns, on every worker, about a parameter it does not use: ask it here.
        check_used(params, self._kind, len(classes) if classes is not None else None)
        self.engine_ = engine
        self.restarts_, self.failures_, self.last_checkpoint_ = 0, [], None
        self._tag = uuid.uuid4().hex[:10]  # names this fit's checkpoints
        if self.checkpoint_dir is not None:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        if engine == "local":
            model = self._fit_local(X, y, evals, sample_weight, params, xgb_model)
        else:
            model = fit_dask(self, X, y, evals, sample_weight, params, xgb_model)
        self.booster_ = model.get_booster()
        self.best_iteration_ = (
            getattr(model, "best_iteration", None) if self.early_stopping_rounds else None
        )
        self.evals_result_ = model.evals_result() if evals else {}
        return self

    def _local_class(self, xgboost):
        return xgboost.XGBClassifier if self._kind == "classifier" else xgboost.XGBRegressor

    def _with_checkpoints(self, params):
        """``params`` plus the checkpoint callback when ``checkpoint_dir`` is set."""
        if self.checkpoint_dir is None:
            return params
        from ._xgb_checkpoint import CheckpointCallback

        cb = CheckpointCallback(self.checkpoint_dir, self._tag, self.checkpoint_every)
        return {**params, "callbacks": [*(params.get("callbacks") or []), cb]}

    def _latest_checkpoint(self):
        if self.checkpoint_dir is None:
            return None, 0
        from ._xgb_checkpoint import latest_checkpoint

        return latest_checkpoint(self.checkpoint_dir, self._tag)

    def _fit_local(self, X, y, evals, w, params, xgb_model=None):
        xgboost = import_optional("xgboost")
        n_jobs = self.n_jobs
        if n_jobs is None:
            client = maybe_client(self.client)
            # Fair comparison: as many threads as the dask workers have together.
            n_jobs = total_threads(client) if client is not None else None
        self.n_jobs_ = n_jobs
        evals = [
            (computed_X(a, name=f"eval_set[{i}][0]", allow_nan=True), compute_if_dask(b))
            for i, (a, b) in enumerate(evals)
        ]
        model = self._local_class(xgboost)(n_jobs=n_jobs, **self._with_checkpoints(params))
        model.fit(
            computed_X(X, allow_nan=True),
            compute_if_dask(y),
            sample_weight=compute_if_dask(w),
            eval_set=evals or None,
            verbose=self._verbose,
            xgb_model=xgb_model,
        )
        self.last_checkpoint_ = self._latest_checkpoint()[0]
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # xgboost's missing values
        return tags


class XGBClassifier(ClassifierMixin, _XGBBase):
    """Gradient-boosted trees classifier on both engines.

    Parameters
    ----------
    n_estimators, max_depth, learning_rate : xgboost parameters
    engine : {"auto", "local", "dask"}
        ``"auto"`` follows the input type. The local engine computes dask inputs to numpy.
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` is ``"cuda"`` when an NVIDIA GPU is visible.
    n_jobs : int or None
        Local threads. None: the total threads of the dask workers when a client exists
        (fair comparison), else all cores. The dask engine uses each worker's threads.
    random_state : int
    early_stopping_rounds : int or None
        Needs ``eval_set`` in ``fit``; predictions then use the best iteration.
    eval_metric : str, list or None
    client : distributed.Client or None
        Resolved late with ``distributed.get_client()``; never pickled.
    checkpoint_dir : str or path, optional
        Save the booster every ``checkpoint_every`` rounds into this folder (shared by the
        workers and this process on a multi-host cluster); see ``fit``.
    checkpoint_every : int
        Rounds between checkpoints.
    max_restarts : int
        Dask engine: how many times a fit that lost a worker trains again on the live workers
        (from the last checkpoint when there is one). 0: raise ``WorkerLostError`` at once.
    max_leaves, max_bin, grow_policy, verbosity, objective, booster, tree_method, gamma, \
min_child_weight, max_delta_step, subsample, sampling_method, colsample_bytree, \
colsample_bylevel, colsample_bynode, reg_alpha, reg_lambda, scale_pos_weight, base_score, \
missing, num_parallel_tree, monotone_constraints, interaction_constraints, importance_type, \
validate_parameters, enable_categorical, feature_types, feature_weights, max_cat_to_onehot, \
max_cat_threshold, multi_strategy, callbacks : optional
        xgboost's parameters, by the names of ``xgboost.XGBClassifier`` (so ``get_params()``
        and a grid search see them); None is xgboost's default, except ``tree_method``
        (``"hist"``) and ``importance_type`` (``"gain"``).
    **kwargs
        Any other native xgboost parameter (``min_split_loss``, ``lambda``...), kept as an
        attribute of its name, as xgboost's wrapper does. ``fit`` asks xgboost which
        parameters it uses and refuses the others, naming close matches (``gama``: did you
        mean ``gamma``?), where xgboost would only print a warning on every worker.

    Attributes
    ----------
    booster_ : xgboost.Booster
        Also returned by ``get_booster()``.
    classes_ : ndarray
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        The column names of a pandas or dask DataFrame ``X`` (only then); checked at predict.
    feature_importances_ : ndarray of shape (n_features,)
        Normalised importances (``importance_type``, default ``"gain"``), as xgboost's.
    best_iteration_ : int or None
        Also ``best_iteration`` (with ``best_score``), which raise AttributeError without
        early stopping, as xgboost's.
    evals_result_ : dict
        Also returned by ``evals_result()``.
    engine_ : str
    restarts_ : int
        Restarts after lost workers (dask engine).
    failures_ : list of str
        What each lost worker broke.
    last_checkpoint_ : str or None
        Newest checkpoint file of this fit.

    See Also
    --------
    xgboost.XGBClassifier : the local engine.
    xgboost.dask.DaskXGBClassifier : the dask engine.

    Notes
    -----
    Code written for ``xgboost.dask.DaskXGBClassifier`` (or ``xgboost.XGBClassifier``) runs
    with this class instead: the same parameters, ``fit(X, y, eval_set=..., sample_weight=...,
    xgb_model=...)``, ``predict`` / ``predict_proba`` with ``iteration_range``, ``apply``,
    ``best_iteration``, ``best_score``, ``evals_result()``, ``get_booster()``,
    ``save_model`` / ``load_model`` (the same files), ``feature_importances_``. Setting
    ``.client`` works as there. Unlike xgboost, ``random_state`` defaults to 0 and labels may
    be any values (strings too), not only 0..n-1.
    """

    _kind = "classifier"

    def predict_proba(self, X: ArrayLike, iteration_range: tuple[int, int] | None = None) -> Array:
        """Class probabilities (lazy dask array for dask input).

        Parameters
        ----------
        X : array-like, dask array or DataFrame of shape (n_samples, n_features)
        iteration_range : (int, int), optional
            Rounds to use, as in xgboost; default: up to the best round after early
            stopping, else all.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_classes), float32
        """
        raw = self._raw_predict(X, iteration_range)
        if self.n_classes_ > 2:
            return raw
        if is_dask_collection(raw):
            return raw.map_blocks(
                binary_proba,
                dtype=np.float32,
                chunks=(raw.chunks[0], (2,)),
                new_axis=1 if raw.ndim == 1 else None,
            )
        return binary_proba(raw)

    def predict(self, X: ArrayLike, iteration_range: tuple[int, int] | None = None) -> Array:
        """Predicted class labels (lazy dask array for dask input); ``iteration_range`` as in
        :meth:`predict_proba`."""
        proba = self.predict_proba(X, iteration_range)
        if is_dask_collection(proba):
            import dask.array as da

            return da.map_blocks(
                argmax_labels, proba, self.classes_, dtype=self.classes_.dtype, drop_axis=1
            )
        return argmax_labels(proba, self.classes_)

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Accuracy (dask inputs reduced blockwise by :mod:`dasktrain.metrics`)."""
        from .. import metrics

        with using_client(self.client):
            pred, y, sample_weight = scoring_inputs(X, self.predict(X), y, sample_weight)
            return float(metrics.accuracy_score(y, pred, sample_weight=sample_weight))


class XGBRegressor(RegressorMixin, _XGBBase):
    """Gradient-boosted trees regressor on both engines (parameters as :class:`XGBClassifier`).

    See Also
    --------
    xgboost.XGBRegressor : the local engine.
    xgboost.dask.DaskXGBRegressor : the dask engine.
    """

    _kind = "regressor"

    def predict(self, X: ArrayLike, iteration_range: tuple[int, int] | None = None) -> Array:
        """Predicted values (lazy dask array for dask input); ``iteration_range`` as in
        :meth:`XGBClassifier.predict_proba`."""
        return self._raw_predict(X, iteration_range)

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """R^2 (dask inputs reduced blockwise by :mod:`dasktrain.metrics`)."""
        from .. import metrics

        with using_client(self.client):
            pred, y, sample_weight = scoring_inputs(X, self.predict(X), y, sample_weight)
            return float(metrics.r2_score(y, pred, sample_weight=sample_weight))
