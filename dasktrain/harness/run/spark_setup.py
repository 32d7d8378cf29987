"""The Spark setup of a comparison: a session found or started, described, and stopped.

Spark is optional. Without pyspark or a Java runtime, or when the session cannot start, the
setup is kept with its reason in :attr:`Setup.unavailable`: every Spark row then reads
``unavailable`` with it, and the rest of the comparison runs as if Spark had not been asked.
"""

from __future__ import annotations

import logging

from .progress import SetupDescription

logger = logging.getLogger(__name__)

__all__ = ["check_spark", "open_spark", "describe_spark", "close_spark"]


def check_spark(spark, engines):
    """Check ``spark=`` of :func:`~dasktrain.compare` before anything starts."""
    from ...exceptions import ValidationError

    if spark is None:
        return None
    if "spark" not in engines:
        raise ValidationError(
            f"spark={spark!r} is given but 'spark' is not among engines={engines!r}; add it."
        )
    if isinstance(spark, str):
        if not spark.strip():
            raise ValidationError("spark='' is an empty master URL.")
        return spark
    if type(spark).__name__ != "SparkSession":
        raise ValidationError(
            f"spark={spark!r} must be None (a local[N] session with the cluster's cores), a "
            "master URL ('spark://host:7077', 'local[4]') or a pyspark.sql.SparkSession."
        )
    return spark


def open_spark(setup, spark, threads, log=None):
    """Fill ``setup`` with a session: the user's, one on ``spark`` (a master URL), or
    ``local[threads]``. A session that cannot start leaves the reason in ``unavailable``.
    With ``log`` (the comparison's log file) a session started here writes its JVM's output
    there instead of the terminal."""
    from ... import spark as dspark
    from .quiet import children_output_to

    active = dspark.active_session()
    if isinstance(spark, (str, type(None))) and active is not None:
        # getOrCreate() would hand back the session already running here whatever master is
        # asked for: it is the user's, so it is used as theirs and never stopped.
        if isinstance(spark, str):
            logger.warning("a Spark session is running here; using it, not master %r", spark)
        spark = active
    if isinstance(spark, (str, type(None))):
        reason = dspark.unavailable_reason()
    else:  # the user's session: its JVM may have died before this comparison
        died = dspark.jvm_death(spark)
        reason = f"the session given as spark= died ({died}); start a new one" if died else None
    if reason is not None:
        setup.unavailable = f"Spark is unavailable: {reason}"
        return setup
    own = isinstance(spark, (str, type(None)))
    try:
        with children_output_to(log if own else None):
            session = dspark.spark_session(
                threads,
                master=spark if isinstance(spark, str) else None,
                session=None if own else spark,
            )
    except Exception as exc:  # noqa: BLE001 - the rows say why; the comparison goes on
        logger.warning("the Spark session could not start: %s", exc)
        setup.unavailable = f"the Spark session could not start: {type(exc).__name__}: {exc}"
        return setup
    setup.client, setup.owned, setup.started = session, own, own
    setup.threads = dspark.session_cores(session)
    setup.workers = 1
    return setup


def describe_spark(setup) -> SetupDescription:
    """JSON-ready description of the Spark setup (``Results.setup["setups"]["spark"]``)."""
    s = setup.client
    ctx = s.sparkContext if s is not None else None
    return SetupDescription(
        engine="spark",
        workers=setup.workers,
        threads=setup.threads,
        gpus=0,
        devices=setup.devices,
        scheduler=ctx.master if ctx is not None else None,
        dashboard=ctx.uiWebUrl if ctx is not None else None,
        worker_addresses=[],
        started_here=setup.started,
        spark_version=s.version if s is not None else None,
        unavailable=setup.unavailable,
    )


def close_spark(setup) -> None:
    """Stop the session if the comparison started it; never the user's. A session whose JVM
    died is forgotten instead of stopped, and nothing raises: the results are kept."""
    if setup.owned and setup.client is not None:
        from ... import spark as dspark

        dspark.stop_session(setup.client)
