"""The parameters of the XGBoost estimators: xgboost's own names, and what xgboost makes of them.

The estimators take the parameters of ``xgboost.XGBModel`` by name (so ``get_params()``, a
grid search and ``help()`` see them, and code written for ``xgboost.dask.DaskXGBClassifier``
changes one import), dasktrain's own (``engine``, ``client``, the checkpoints), and, as
xgboost's wrapper does, any other native parameter as a keyword (``**kwargs``), which is kept
as an attribute of its own name. xgboost only warns about a parameter it does not use (a typo:
``gama``), on every worker; :func:`check_used` asks xgboost on the driver before any work and
refuses it, naming the close matches.
"""

from __future__ import annotations

import difflib
import inspect
import re
import warnings

from ..exceptions import ValidationError

__all__ = ["DEFAULTS", "XGBOOST_NAMED", "init_signature", "extra_names", "check_used"]

#: dasktrain's own parameters and their defaults (its defaults for three xgboost ones too:
#: xgboost's None means the same 100 rounds, depth 6 and rate 0.3; random_state=0 keeps the
#: engines comparable run to run)
OWN = {
    "n_estimators": 100,
    "max_depth": 6,
    "learning_rate": 0.3,
    "engine": "auto",
    "device": "auto",
    "n_jobs": None,
    "random_state": 0,
    "early_stopping_rounds": None,
    "eval_metric": None,
    "client": None,
    "checkpoint_dir": None,
    "checkpoint_every": 10,
    "max_restarts": 0,
}

#: the other named parameters of ``xgboost.XGBModel`` (3.x), with its default None: "xgboost's
#: default". tests/test_xgb.py checks that this list holds every name of the installed xgboost.
XGBOOST_NAMED = (
    "max_leaves",
    "max_bin",
    "grow_policy",
    "verbosity",
    "objective",
    "booster",
    "tree_method",
    "gamma",
    "min_child_weight",
    "max_delta_step",
    "subsample",
    "sampling_method",
    "colsample_bytree",
    "colsample_bylevel",
    "colsample_bynode",
    "reg_alpha",
    "reg_lambda",
    "scale_pos_weight",
    "base_score",
    "missing",
    "num_parallel_tree",
    "monotone_constraints",
    "interaction_constraints",
    "importance_type",
    "validate_parameters",
    "enable_categorical",
    "feature_types",
    "feature_weights",
    "max_cat_to_onehot",
    "max_cat_threshold",
    "multi_strategy",
    "callbacks",
)

#: every named parameter and its default, in the order of the signature
DEFAULTS = {**OWN, **dict.fromkeys(XGBOOST_NAMED)}


def init_signature():
    """The estimators' ``__init__`` signature: ``self``, every named parameter keyword-only,
    then ``**kwargs`` (read by ``inspect`` and so by scikit-learn's ``get_params``)."""
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
    params += [P(name, P.KEYWORD_ONLY, default=value) for name, value in DEFAULTS.items()]
    return inspect.Signature([*params, P("kwargs", P.VAR_KEYWORD)])


def extra_names(estimator):
    """The names of the other xgboost parameters stored on ``estimator`` (its ``**kwargs``):
    public attributes that are neither named parameters nor learned (``..._``)."""
    return [
        k
        for k in vars(estimator)
        if k not in DEFAULTS and not k.startswith("_") and not k.endswith("_")
    ]


_UNUSED = re.compile(r"Parameters: \{([^}]*)\} (?:are|is) not used")
#: the settings already found used, so that a fit pays the probe (about 10 ms) once per
#: setting: a comparison's repeats must time the fit, not the check
_PASSED: set = set()


def check_used(model_params, kind, n_classes=None):
    """Refuse the parameters xgboost would ignore, before any work.

    ``model_params`` are the keyword arguments of the xgboost estimator the fit builds; xgboost
    configures a booster from them on a two-row matrix here and reports what it does not use
    (its own check, so it knows every native name, alias and booster-specific parameter). A
    configuration xgboost refuses outright is left to the fit, which says why.

    Raises
    ------
    ValidationError
        Naming each unused parameter and its close matches.
    """
    import numpy as np

    from .._compat import import_optional

    xgboost = import_optional("xgboost")  # a missing one names its extras, before any work
    key = (kind, n_classes, repr(sorted(model_params.items())))
    if key in _PASSED:
        return
    klass = xgboost.XGBClassifier if kind == "classifier" else xgboost.XGBRegressor
    params = klass(**model_params).get_xgb_params()
    params = {k: v for k, v in params.items() if v is not None}
    params.update(device="cpu", nthread=1, validate_parameters=True)  # a probe, in this process
    if (n_classes or 0) > 2:  # as the fit sets them
        params.setdefault("objective", "multi:softprob")
        params["num_class"] = n_classes
    dtrain = xgboost.DMatrix(np.zeros((2, 1), np.float32), label=np.array([0.0, 1.0]))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            xgboost.Booster(params, cache=[dtrain]).save_config()  # configures: validates
        except xgboost.core.XGBoostError:
            return
    unused = []
    for w in seen:
        found = _UNUSED.search(str(w.message))
        if found:
            unused += [n.strip().strip('"') for n in found.group(1).split(",") if n.strip()]
    if unused:
        known = [k for k in (*DEFAULTS, *params) if k not in unused]
        hints = []
        for name in unused:
            close = " or ".join(map(repr, difflib.get_close_matches(name, known, n=2)))
            hints.append(f"{name!r}" + (f" (did you mean {close}?)" if close else ""))
        raise ValidationError(
            f"xgboost does not use the parameter(s) {', '.join(hints)} with these settings "
            f"(booster={params.get('booster', 'gbtree')!r}, objective="
            f"{params.get('objective')!r}); fix or remove them."
        )
    if len(_PASSED) > 1000:  # a long-lived process trying many settings (a grid search)
        _PASSED.clear()
    _PASSED.add(key)
