"""Spark as a third engine: the built-in workloads on a Spark session, scored like the others.

Optional (``pip install 'dasktrain[spark]'`` and a Java runtime); :func:`unavailable_reason`
says why Spark cannot run here. The comparison harness calls these functions for
``engine="spark"`` with the same numpy inputs and seeds as the local and dask engines.
"""

from ._features import cnn_features, image_features
from ._frames import collect_column, image_frame, vector_frame
from ._jvm import died_as_error, jvm_death, stop_session
from ._models import SETTINGS, kmeans, logreg, mlp_cv, naive_bayes, xgboost
from ._read import read_images, to_numpy
from ._session import active_session, session_cores, spark_session, unavailable_reason

__all__ = [
    "SETTINGS",
    "active_session",
    "cnn_features",
    "collect_column",
    "died_as_error",
    "image_features",
    "image_frame",
    "jvm_death",
    "vector_frame",
    "kmeans",
    "logreg",
    "mlp_cv",
    "naive_bayes",
    "read_images",
    "session_cores",
    "spark_session",
    "stop_session",
    "to_numpy",
    "unavailable_reason",
    "xgboost",
]
