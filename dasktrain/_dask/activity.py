"""What a step did on the cluster outside Dask tasks, told to whoever is measuring it.

Dask's task stream shows what tasks computed; some of dasktrain's work on a cluster runs outside
any task the stream can see: a :class:`~.direct.DirectGroup` pass is one message to each
worker's long-running task and one answer back (that task is cancelled at the end and never
reaches the stream), and a step may move data between the client and the cluster. A step
*reports* such a block with :func:`reporting` (or :func:`report` for an interval measured
elsewhere); a measurer collects the reports of the blocks it runs with :func:`tracing`.
Nothing is recorded, and nothing costs, while no one traces.

The comparison harness (``dasktrain.harness.measure.breakdown``) traces every timed run, and
counts a ``"compute"`` report as compute and a ``"transfer"`` report as data transfer in the
run's time breakdown.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

__all__ = ["KINDS", "tracing", "reporting", "report"]

#: What a reported block was: the cluster computing outside tasks, or data moving between the
#: client and the cluster.
KINDS = ("compute", "transfer")

# A list while someone traces; contextvars reach the thread a timed run starts (it runs in a
# copy of the caller's context), so its reports land in the caller's list.
#: One report: ``(kind, start, end)``, UNIX times.
Report = tuple[str, float, float]

_TRACE: contextvars.ContextVar[list[Report] | None] = contextvars.ContextVar(
    "dasktrain_activity", default=None
)


@contextlib.contextmanager
def tracing() -> Iterator[list[Report]]:
    """Collect what the block's steps report: yields a list of ``(kind, start, end)``.

    ``start`` and ``end`` are UNIX times. Traces nest: an inner one collects its own block's
    reports only.
    """
    found: list[Report] = []
    token = _TRACE.set(found)
    try:
        yield found
    finally:
        _TRACE.reset(token)


def report(kind: str, start: float, end: float) -> None:
    """Report that ``[start, end]`` (UNIX times) was ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    found = _TRACE.get()
    if found is not None and end > start:
        found.append((kind, float(start), float(end)))


@contextlib.contextmanager
def reporting(kind: str) -> Iterator[None]:
    """Report the block's wall time as ``kind`` (see :func:`report`), also when it raises."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    t0 = time.time()
    try:
        yield
    finally:
        report(kind, t0, time.time())
