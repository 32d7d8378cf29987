"""The dask engine of the XGBoost estimators: a fit that survives lost workers.

A worker that dies during a dask fit breaks xgboost's allreduce ring (``Ring Allreduce failed
... Poll error``). :func:`fit_dask` then raises :class:`~dasktrain.exceptions.WorkerLostError`
naming the lost worker, or, with ``max_restarts``, trains again on the live workers, from the
last checkpoint when ``checkpoint_dir`` is set (like the DDP launcher's ``max_restarts``).
"""

from __future__ import annotations

import functools
import logging
import uuid

from .._compat import import_optional
from .._dask import (
    WorkerWatch,
    balanced_persist,
    connect_timeout,
    get_client,
    row_chunked,
    scatter_data,
    scheduler_host,
    watching,
)
from .._dask.restarts import Restarts
from .._validation import is_dask_collection
from ..exceptions import WorkerLostError
from ._base import check_no_inf

logger = logging.getLogger(__name__)

__all__ = ["fit_dask", "predict_dask"]


def fit_dask(est, X, y, evals, w, params, xgb_model=None):
    """Fit ``est`` (an XGBClassifier / XGBRegressor) with ``xgboost.dask``; return the model.

    Records ``restarts_``, ``failures_`` and ``last_checkpoint_`` on ``est`` on the way.
    """
    import_optional("xgboost")
    import xgboost

    client = get_client(est.client, what=f"{type(est).__name__}(engine='dask')")
    total = params["n_estimators"]
    start, done = xgb_model, 0
    restarts = Restarts(f"{type(est).__name__}.fit", est.max_restarts, logger)
    est.failures_ = restarts.failures
    while True:
        # Persisted again on every attempt: blocks lost with a worker are recomputed and
        # spread over the workers alive now (xgboost.dask trains only where data lives).
        data = _persist_inputs(client, X, y, w, evals)
        model = _dask_model(est, client, {**params, "n_estimators": total - done})
        watch = WorkerWatch(client)
        try:
            _fit_once(model, data, start, getattr(est, "_verbose", False))
            break
        except Exception as exc:
            lost = watch.lost(wait=2.0)
            if not lost:
                raise
            path, rounds = _after_loss(est, restarts, lost, exc, total)
            start, done = (xgboost.Booster(model_file=path), rounds) if path else (xgb_model, 0)
            if done >= total:  # the last round was saved before the loss: nothing to do
                model = _Trained(start)
                break
            client.wait_for_workers(1, timeout=connect_timeout())
    est.n_jobs_ = None
    if est.checkpoint_dir is not None:
        est.last_checkpoint_ = est._latest_checkpoint()[0]
    return model


def predict_dask(est, client, X, iteration_range):
    """``xgboost.dask.inplace_predict`` of ``est``'s booster on dask array ``X`` (lazy)."""
    import xgboost.dask as dxgb

    what = f"{type(est).__name__}.predict"
    # Scattered here, not by xgboost: distributed waits for a running worker to take it, up
    # to its timeout, where only paused workers are left (dasktrain._dask.paused).
    booster = scatter_data(client, est.booster_, what=what, hash=False)
    # as_current: xgboost's _get_client calls distributed.get_client() even when given a
    # client, which fails for an explicit client that is not the default.
    with client.as_current(), watching(client, what):
        return dxgb.inplace_predict(client, booster, X, iteration_range=iteration_range)


def _persist_inputs(client, X, y, w, evals):
    """``(X, y, w, evals)`` persisted with every worker holding rows, and checked for inf."""
    Xd, yd, wd = balanced_persist(
        client, [row_chunked(X), row_chunked(y), None if w is None else row_chunked(w)]
    )
    evals_d = [tuple(balanced_persist(client, [row_chunked(a), row_chunked(b)])) for a, b in evals]
    _check_persisted(X, Xd, evals, evals_d)
    return Xd, yd, wd, evals_d


def _dask_model(est, client, params):
    from ._xgb_events import RoundEvents

    klass = _dask_classes()[est._kind]
    live = RoundEvents(type(est).__name__, f"xgb-{uuid.uuid4().hex[:8]}")
    params = {**params, "callbacks": [*(params.get("callbacks") or []), live]}
    model = klass(coll_cfg=_tracker_config(client), **est._with_checkpoints(params))
    model.client = client
    return model


@functools.cache
def _dask_classes():
    """``{"classifier": ..., "regressor": ...}``: xgboost.dask's estimators with ``coll_cfg``
    kept out of the booster's parameters (built on first use: importing this module imports
    no xgboost)."""
    import xgboost.dask as dxgb

    def without_coll_cfg(base):
        class Model(base):
            def _wrapper_params(self):
                # xgboost.dask hands coll_cfg to xgboost.dask.train, where the tracker address
                # is applied; but XGBModel.get_xgb_params() copies it into the booster's
                # parameters too, as _wrapper_params() does not list it (xgboost 3.0-3.2), and
                # every worker prints 'Parameters: { "coll_cfg" } are not used' on every fit.
                return super()._wrapper_params() | {"coll_cfg"}

        Model.__name__ = Model.__qualname__ = base.__name__
        return Model

    return {
        "classifier": without_coll_cfg(dxgb.DaskXGBClassifier),
        "regressor": without_coll_cfg(dxgb.DaskXGBRegressor),
    }


def _fit_once(model, data, start, verbose=False):
    Xd, yd, wd, evals_d = data
    model.fit(Xd, yd, sample_weight=wd, eval_set=evals_d or None, verbose=verbose, xgb_model=start)


def _after_loss(est, restarts, lost, exc, total):
    """Record a loss; raise WorkerLostError when no restart is left, else count the restart.

    Returns ``(path, rounds)`` of the last checkpoint of this fit (``(None, 0)`` if none),
    what the restart resumes from.
    """
    path, rounds = est._latest_checkpoint()
    est.last_checkpoint_ = path
    message = _lost_message(lost, exc, path, rounds, total)
    if not restarts.failed(message, resume=path):
        raise WorkerLostError(
            message + _resume_hint(type(est).__name__, path, rounds, total)
        ) from exc
    est.restarts_ = restarts.restarts
    return path, rounds


def _lost_message(lost, exc, path, rounds, total):
    names = ", ".join(f"{a!r}" + (" (retired)" if expected else "") for a, expected in lost)
    # xgboost's message is a stack of "[file:line|time]: ..." lines; the one that says
    # what failed ("Ring Allreduce failed.") is the useful one.
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip(" -")]
    first = next((ln for ln in lines if "failed" in ln.lower()), lines[0] if lines else "")
    first = first.split("]: ", 1)[-1][:200]
    saved = f"last checkpoint after {rounds} of {total} rounds" if path else "no checkpoint"
    return (
        f"worker {names} left the cluster during the xgboost fit, which broke xgboost's "
        f"communication ring ({type(exc).__name__}: {first}); {saved}"
    )


def _resume_hint(name, path, rounds, total):
    if path is None:
        return (
            f". Fit again, with checkpoint_dir=... (every checkpoint_every rounds) and "
            f"max_restarts=1 to resume automatically: {name}(..., checkpoint_dir='ckpt/', "
            "max_restarts=1)."
        )
    return (
        f" ({path!r}). Resume with {name}(n_estimators={total - rounds}, ...).fit(X, y, "
        f"xgb_model={path!r}), or set max_restarts to restart automatically."
    )


def _check_persisted(X, Xd, evals, evals_d):
    """The inf check of a dask input, on its persisted blocks (no second computation).

    NaN is allowed: xgboost reads it as a missing value.
    """
    if is_dask_collection(X):
        check_no_inf(Xd)
    for i, ((Xe, _), (Xe_d, _)) in enumerate(zip(evals, evals_d)):
        if is_dask_collection(Xe):
            check_no_inf(Xe_d, name=f"eval_set[{i}][0]")


def _tracker_config(client):
    """XGBoost's tracker on the scheduler's own address (which every worker reaches).

    Left to itself xgboost.dask binds the tracker to the address of the scheduler machine's
    default route, which workers on a private cluster network may not reach ("Failed to
    connect to the tracker ... Network is unreachable"); it also listens there only.
    """
    from xgboost.collective import Config

    return Config(tracker_host_ip=scheduler_host(client))


class _Trained:
    """A finished booster in the shape of a fitted xgboost model (a restart had nothing left)."""

    best_iteration = None

    def __init__(self, booster):
        self._booster = booster

    def get_booster(self):
        return self._booster

    def evals_result(self):
        return {}
