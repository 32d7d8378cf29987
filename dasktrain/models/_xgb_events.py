"""The xgboost callback that sends one live event per boosting round (imports xgboost: load
lazily).

In its own importable module, like the checkpoint callback, so that ``xgboost.dask`` workers
unpickle it by reference. Only rank 0 sends (every rank holds the same booster); the event goes
through the worker's ``log_event`` to the scheduler (the ``/dasktrain`` dashboard page).
"""

from __future__ import annotations

import time

from xgboost import collective
from xgboost.callback import TrainingCallback

from .._dask.events import emit

__all__ = ["RoundEvents"]


class RoundEvents(TrainingCallback):
    """A ``fit`` event after every round: the last eval metric (when an eval set is given)
    and the round's milliseconds.

    Parameters
    ----------
    estimator : str
        The estimator's class name, shown on the page.
    fit_id : str
        Names the curve of one fit.
    """

    def __init__(self, estimator, fit_id):
        self.estimator = estimator
        self.fit_id = fit_id
        self._t = None
        super().__init__()

    def before_training(self, model):
        self._t = time.perf_counter()
        return model

    def after_iteration(self, model, epoch, evals_log):
        if collective.get_rank() != 0:
            return False
        now = time.perf_counter()
        metric, value = _last_metric(evals_log)
        emit(
            "fit",
            fit=self.fit_id,
            estimator=self.estimator,
            iteration=int(model.num_boosted_rounds()),
            metric=metric,
            value=value,
            ms=(now - self._t) * 1e3,
            path="xgboost.dask",
        )
        self._t = now
        return False  # never stops training


def _last_metric(evals_log):
    """``(name, value)`` of the last metric of the last eval set, or ``("round", nan)``."""
    for data, metrics in reversed(list(evals_log.items())):
        for name, values in reversed(list(metrics.items())):
            if len(values):
                v = values[-1]
                v = v[0] if isinstance(v, tuple) else v
                return f"{data}-{name}", float(v)
    return "round", float("nan")
