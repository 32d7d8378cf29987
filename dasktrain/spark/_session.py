"""The Spark session a comparison runs on: found, or started on 127.0.0.1 with matched cores.

pyspark is an optional extra (``dasktrain[spark]``) and needs a Java runtime. Both are checked
before anything starts, and a missing one is reported with its reason
(:func:`unavailable_reason`), so a comparison's Spark rows read "unavailable: ..." instead of
failing the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .._compat import import_optional
from ..exceptions import OptionalDependencyError, ValidationError
from ._jvm import dead_active_context, forget_dead

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

__all__ = ["unavailable_reason", "spark_session", "active_session", "session_cores", "quiet"]

#: Settings of every session this module starts (the user's own session is left as it is).
_CONF = {
    # One known address: the driver, its block manager and the UI bind to loopback only.
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # Arrow moves the numpy columns between Python and the JVM (pandas 3 is converted by Arrow,
    # not by pyspark's own pandas code, which does not fully support it).
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # A comparison builds small frames; Spark's default of 200 shuffle partitions is for clusters.
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
}


_PANDAS_WARNING = "PySpark does not yet fully support pandas"


def _java_reason() -> str | None:
    if os.environ.get("JAVA_HOME") and os.path.exists(
        os.path.join(os.environ["JAVA_HOME"], "bin", "java")
    ):
        return None
    if shutil.which("java"):
        return None
    return "no Java runtime found (install Java 17 or set JAVA_HOME)"


def unavailable_reason() -> str | None:
    """Why Spark cannot run here (pyspark or Java missing), or None when it can."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install 'dasktrain[spark]'"
    return _java_reason()


def _check_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise OptionalDependencyError(f"Spark is unavailable: {reason}.")


def spark_session(
    cores: int | None = None,
    *,
    master: str | None = None,
    session: SparkSession | None = None,
    ui: bool = False,
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Return a SparkSession for a comparison.

    Parameters
    ----------
    cores : int, optional
        Cores of the ``local[cores]`` session to start; a fair comparison gives Spark the same
        number of cores as the Dask cluster's worker threads. Ignored with ``master`` or
        ``session``.
    master : str, optional
        A master URL (``"spark://host:7077"``, ``"local[4]"``) instead of ``local[cores]``.
    session : pyspark.sql.SparkSession, optional
        The user's own session, returned as it is.
    ui : bool, default False
        Start Spark's web UI (bound to 127.0.0.1).
    conf : dict, optional
        More Spark settings for a session started here.

    Raises
    ------
    OptionalDependencyError
        Without pyspark or a Java runtime (the message says which and how to fix it).
    ValidationError
        For ``cores`` < 1.
    """
    if session is not None:
        return session
    _check_available()
    if master is None:
        if cores is None or int(cores) < 1:
            raise ValidationError(f"cores={cores!r}: give the number of cores (>= 1) or master=.")
        master = f"local[{int(cores)}]"
    # The UI binds to SPARK_LOCAL_IP (all interfaces when unset); executors' Python must be
    # this interpreter, so they import the same dasktrain and torch.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    with quiet():  # importing pyspark warns about pandas 3 (see quiet)
        return _start(master, ui, conf)


def _start(master: str, ui: bool, conf: Mapping[str, str] | None) -> SparkSession:
    sql = import_optional("pyspark.sql", "spark")
    if dead_active_context() is not None:  # getOrCreate() would hand back the dead session
        forget_dead()
    builder = sql.SparkSession.builder.master(master).appName("dasktrain")
    for key, value in {**_CONF, "spark.ui.enabled": str(bool(ui)).lower(), **(conf or {})}.items():
        builder = builder.config(key, value)
    spark: SparkSession = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    logger.info("Spark session %s (%s cores)", master, session_cores(spark))
    return spark


def active_session() -> SparkSession | None:
    """The SparkSession already running in this process, or None (pyspark not imported yet,
    or no session): ``getOrCreate`` would return it whatever master is asked for.

    A session whose JVM died is forgotten (logged) and None returned: pyspark would raise a
    ``ConnectionRefusedError`` here, and in every later ``getOrCreate()`` of the process.
    """
    if "pyspark.sql" not in sys.modules:
        return None
    why = dead_active_context()
    if why is not None:
        logger.warning("the Spark session of this process died (%s); forgetting it", why)
        forget_dead()
        return None
    active: SparkSession | None = sys.modules["pyspark.sql"].SparkSession.getActiveSession()
    return active


def session_cores(spark: SparkSession) -> int:
    """Cores the session's executors have (``defaultParallelism``)."""
    return int(spark.sparkContext.defaultParallelism)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep pyspark's pandas-version warning and xgboost.spark's progress lines off the terminal.

    pyspark warns on every pandas conversion that it does not fully support pandas >= 3; the
    conversions dasktrain uses go through Arrow and are tested (``tests/test_spark.py``), so the
    warning says nothing about the user's data. xgboost.spark logs each step at INFO.
    """
    xgb_logger = logging.getLogger("XGBoost-PySpark")
    level = xgb_logger.level
    xgb_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _PANDAS_WARNING, FutureWarning)
            yield
    finally:
        xgb_logger.setLevel(level)
