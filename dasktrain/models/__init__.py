"""Models on both engines: KMeans, XGBoost, LR / naive Bayes / MLP, and cross-validation.

Every estimator takes ``engine="auto" | "local" | "dask"``: ``"auto"`` follows the input (a dask
array runs on Dask, anything else locally); an explicit engine forces the path, which is what a
comparison needs. xgboost is imported only when an XGBoost model is fitted.
"""

from .classic import GaussianNB, LogisticRegression, MLPClassifier, cross_validate
from .kmeans import KMeans
from .xgb import XGBClassifier, XGBRegressor

__all__ = [
    "KMeans",
    "XGBClassifier",
    "XGBRegressor",
    "LogisticRegression",
    "GaussianNB",
    "MLPClassifier",
    "cross_validate",
]
