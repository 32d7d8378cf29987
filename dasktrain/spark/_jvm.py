"""A session's JVM: alive, or how it died; a dead session forgotten so the next one can start.

pyspark has no public way to learn that its JVM is gone, nor to recover from it. Every call then
fails with a raw ``ConnectionRefusedError`` (py4j cannot reach the JVM), ``spark.stop()`` raises
the same, and pyspark keeps the dead gateway in class attributes, so the next
``getActiveSession()`` or ``getOrCreate()`` in the process fails at once. This module reads the
JVM's process (pyspark keeps the ``Popen`` of the JVM it launched as ``gateway.proc``), turns
failures of a dead JVM into :class:`~dasktrain.exceptions.SparkDiedError` naming its pid and
signal, and resets pyspark's class attributes the way ``SparkSession.stop()`` does, without
asking the dead JVM. Those attributes are private to pyspark (checked against pyspark 4.x; a
test kills a real JVM), so each access is guarded.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import SparkDiedError

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

__all__ = ["jvm_death", "forget_dead", "stop_session", "died_as_error", "dead_active_context"]


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    # The JVM reports a fatal signal as 128 + the signal (SIGKILL from the kernel's OOM killer
    # to a JVM under a shell wrapper reads 137).
    return f"exited with code {code}"


def _jvm_process(sc: SparkContext | None) -> Any:
    return getattr(getattr(sc, "_gateway", None), "proc", None)


def _context_death(sc: SparkContext) -> str | None:
    """How the JVM of SparkContext ``sc`` died, or None while its process runs."""
    proc = _jvm_process(sc)
    if proc is not None:
        code = proc.poll()  # reaps it too: no zombie is left
        if code is not None:
            return f"its JVM (pid {proc.pid}) {_exit_text(code)}"
        return None
    if getattr(sc, "_jsc", None) is None:
        return "its SparkContext was stopped"
    return None


def jvm_death(spark: SparkSession) -> str | None:
    """How the JVM of session ``spark`` died (``"its JVM (pid 42) was killed by signal 9
    (SIGKILL)"``), or None while it runs. Reads the process only: never blocks on the JVM.

    A session whose JVM this process did not launch (``PYSPARK_GATEWAY_PORT``) has no process
    to read: it counts as alive until it is stopped.
    """
    sc = getattr(spark, "_sc", None) or getattr(spark, "sparkContext", None)
    return _context_death(sc) if sc is not None else None


def dead_active_context() -> str | None:
    """How the JVM of this process's active SparkContext died, or None (none active, or alive).

    Reads pyspark's class attributes only, so it is safe where ``getActiveSession()`` would
    call the dead JVM and raise.
    """
    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    sc = getattr(getattr(context, "SparkContext", None), "_active_spark_context", None)
    return _context_death(sc) if sc is not None else None


def forget_dead() -> None:
    """Reset pyspark's record of the active session and gateway, as ``SparkSession.stop()``
    does, without calling the dead JVM, so the next ``getOrCreate()`` launches a new one."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    with SparkContext._lock:
        sc = SparkContext._active_spark_context
        gateway = SparkContext._gateway
        if sc is not None:
            sc._jsc = None
            server = getattr(sc, "_accumulatorServer", None)
            if server is not None:
                with contextlib.suppress(Exception):
                    server.shutdown()
                sc._accumulatorServer = None  # type: ignore[assignment]  # pyspark's own slot
        SparkContext._active_spark_context = None
        # A new context reuses SparkContext._gateway when set: the dead one must go.
        SparkContext._gateway = None
        SparkContext._jvm = None
    if gateway is not None:
        with contextlib.suppress(Exception):  # its JVM is gone: close our ends of the sockets
            gateway.shutdown()
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    with contextlib.suppress(Exception):
        from pyspark.sql.context import SQLContext

        SQLContext._instantiatedContext = None


def stop_session(spark: SparkSession) -> None:
    """Stop ``spark``; a session whose JVM died is forgotten instead. Never raises: the
    comparison's results must outlive a broken session (failures are logged)."""
    why = jvm_death(spark)
    if why is None:
        try:
            spark.stop()
            return
        except Exception as exc:  # noqa: BLE001 - logged; the JVM is checked again below
            why = jvm_death(spark)
            logger.warning(
                "the Spark session could not be stopped: %s: %s", type(exc).__name__, exc
            )
            if why is None:
                return
    logger.warning("Spark died: %s; forgetting its session", why)
    with contextlib.suppress(Exception):
        forget_dead()


def _death_after(spark: SparkSession, exc: BaseException, wait: float = 2.0) -> str | None:
    """A broken connection can reach py4j a moment before the JVM's exit is reported: wait
    briefly for the process, for connection errors only (a healthy JVM is not waited on)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if not names & {"ConnectionError", "Py4JNetworkError", "EOFError"}:
        return None
    sc = getattr(spark, "_sc", None)
    proc = _jvm_process(sc)
    if proc is None:
        return None
    with contextlib.suppress(Exception):
        proc.wait(wait)
    return jvm_death(spark)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit] if text else ''}"


@contextlib.contextmanager
def died_as_error(spark: SparkSession) -> Iterator[None]:
    """Run a step on ``spark``: a dead JVM, before or during it, raises
    :class:`~dasktrain.exceptions.SparkDiedError` naming its pid and signal instead of py4j's
    raw connection errors; every other error passes through unchanged."""
    why = jvm_death(spark)
    if why is not None:
        raise SparkDiedError(
            f"Spark died: {why} before this run, so it could not run. The next compare() (or "
            "spark_session()) starts a new session."
        )
    try:
        yield
    except Exception as exc:
        why = jvm_death(spark) or _death_after(spark, exc)
        if why is None:
            raise
        raise SparkDiedError(
            f"Spark died: {why} during this run ({_first_line(exc)}). Later Spark runs in this "
            "comparison cannot run; the next compare() (or spark_session()) starts a new "
            "session. A JVM killed for memory needs a larger spark.driver.memory."
        ) from exc
