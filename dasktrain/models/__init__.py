"""Models on both engines: KMeans, XGBoost, LR / naive Bayes / MLP, and cross-validation.

Every estimator takes ``engine="auto" | "local" | "dask"``: ``"auto"`` follows the input (a dask
array runs on Dask, anything else locally); an explicit engine forces the path, which is what a
comparison needs. xgboost is imported only when an XGBoost model is fitted.

:class:`OnWorker` runs any scikit-learn estimator the same way (fitted in one task on a worker,
applied blockwise); LR, naive Bayes and the MLP are instances of it. Every estimator follows
scikit-learn's data contract: pandas and dask DataFrames are accepted on both engines, their
column names recorded at fit (``feature_names_in_``) and checked afterwards, and dask outputs
stay lazy (``dasktrain.models._output``).
"""

from .classic import GaussianNB, LogisticRegression, MLPClassifier, cross_validate
from .kmeans import KMeans
from .on_worker import OnWorker
from .xgb import XGBClassifier, XGBRegressor

__all__ = [
    "KMeans",
    "XGBClassifier",
    "XGBRegressor",
    "LogisticRegression",
    "GaussianNB",
    "MLPClassifier",
    "OnWorker",
    "cross_validate",
]
