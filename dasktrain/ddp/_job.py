"""One job of the DDP launcher: its arguments checked, its attempts, its report history.

:func:`run_job` is what :func:`~dasktrain.ddp.run`, :func:`dasktrain.tf.run` and
:meth:`~dasktrain.ddp.RankPool.start` share once their own arguments are checked: the payload
pickled, the job's report topic subscribed, then attempts (:class:`~._group.Attempt`) until one
succeeds, the restarts run out or the time is up. It sits below the launcher and the pool so
that neither imports the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._dask.events import DDP_TOPIC_PREFIX, emit, keep
from .._dask.restarts import Restarts
from .._validation import check_positive_number
from ..exceptions import DDPError, ValidationError, WorkersPausedError
from . import _datasets
from . import helpers as _helpers
from ._group import Attempt, describe
from ._records import AttemptFailed, DDPResult, JobOptions, RankSpec
from ._select import select_workers

if TYPE_CHECKING:
    from .._typing import PortRange, Workers

# The launcher's logger: users raise it to INFO to see rank 0's progress (helpers.report says
# so); the job's progress and restarts keep logging there since the job moved out of it.
logger = logging.getLogger("dasktrain.ddp.launcher")

__all__ = ["BACKENDS", "check_args", "run_job"]

BACKENDS = ("auto", "gloo", "nccl")
# Times a group whose rank 0 found MASTER_PORT taken is retried with a fresh port (free).
_PORT_RETRIES = 3
# Seconds the client waits for report events still in flight when the job ends.
_HISTORY_WAIT_S = 2.0


def check_args(
    backend: str,
    timeout: float,
    max_restarts: int,
    workers: Workers,
    port_range: PortRange | None,
    env: Mapping[str, str] | None,
) -> None:
    """Raise a ValidationError naming the first bad argument of :func:`~dasktrain.ddp.run`."""
    if backend not in BACKENDS:
        raise ValidationError(f"backend={backend!r} must be one of {BACKENDS}.")
    check_positive_number(timeout, "timeout", unit="seconds")
    # Not check_positive_int: that one takes numpy integers too, which this never did.
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ValidationError(f"max_restarts={max_restarts!r} must be an integer >= 0.")
    _check_workers(workers)
    _check_port_range(port_range)
    if env is not None and not (
        isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise ValidationError(f"env={env!r} must be a dict of str -> str.")


def _check_workers(workers):
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, (int, list, tuple)):
            raise ValidationError(
                f"workers={workers!r} must be None (all workers), a count, or a list of "
                "worker addresses."
            )
        if isinstance(workers, int) and workers < 1:
            raise ValidationError(f"workers={workers!r} must be >= 1.")
        if isinstance(workers, (list, tuple)) and len(set(workers)) != len(workers):
            raise ValidationError(f"workers={workers!r} lists a worker twice.")


def _check_port_range(port_range):
    if port_range is not None:
        ok = (
            isinstance(port_range, (list, tuple))
            and len(port_range) == 2
            and all(isinstance(p, int) for p in port_range)
            and 1024 <= port_range[0] <= port_range[1] <= 65535
        )
        if not ok:
            raise ValidationError(
                f"port_range={port_range!r} must be (low, high) with 1024 <= low <= high "
                "<= 65535, or None to let the OS pick a free port."
            )


def run_job(
    client,
    train_fn,
    args,
    kwargs,
    *,
    workers,
    timeout,
    max_restarts,
    backend,
    port_range,
    env=None,
    checkpoint_dir=None,
    pool=None,
    feeds=None,
    module=RankSpec.module,
) -> DDPResult:
    """Run one checked job to its end: a :class:`DDPResult`, or DDPError.

    ``feeds`` are the prepared ``datasets=`` (:func:`._datasets.prepare`), ``pool`` a
    :class:`~dasktrain.ddp.RankPool` (its processes run the ranks), ``module`` the rank
    process (:attr:`RankSpec.module`).
    """
    import cloudpickle

    job = _Job(
        client,
        cloudpickle.dumps((train_fn, args, kwargs)),
        workers=workers,
        timeout=timeout,
        max_restarts=max_restarts,
        options=JobOptions(
            backend=backend,
            timeout=timeout,
            env=dict(env or {}),
            checkpoint_dir=_helpers.make_checkpoint_dir(checkpoint_dir),
            port_range=port_range,
            pool=pool,
            datasets=(feeds, _datasets.pack(feeds)) if feeds else None,
            module=module,
        ),
    )
    with job.history.subscribed(client):
        return job.run()


class _History:
    """The :func:`~dasktrain.ddp.report` records of one job, as they stream in."""

    def __init__(self, job):
        self.topic = f"{DDP_TOPIC_PREFIX}{job}"
        self.records = []
        self.lock = threading.Lock()

    def on_event(self, event):
        _, record = event
        record = dict(record)
        record.pop("worker", None)  # added by the scheduler; the rank says who it is
        with self.lock:
            self.records.append(record)
        keep({"kind": "ddp-metrics", "job": self.topic.removeprefix(DDP_TOPIC_PREFIX), **record})
        if record.get("rank") == 0:
            logger.info("ddp %s", _helpers._format(record))

    @contextlib.contextmanager
    def subscribed(self, client):
        client.subscribe_topic(self.topic, self.on_event)
        try:
            yield self
        finally:
            try:
                client.unsubscribe_topic(self.topic)
            except Exception:
                logger.debug("could not unsubscribe %s", self.topic, exc_info=True)

    def final(self, attempt):
        """The streamed records, completed from the ranks' own copies if events are in flight.

        Events and task results travel separate paths to the client; give the stream a
        moment, then fall back to what the ranks returned, so the history is never short.
        """
        returned = attempt.records()
        wait_until = time.monotonic() + _HISTORY_WAIT_S
        while True:
            with self.lock:
                streamed = [r for r in self.records if r.get("attempt") == attempt.attempt]
                if len(streamed) >= len(returned) or time.monotonic() > wait_until:
                    earlier = [r for r in self.records if r.get("attempt") != attempt.attempt]
                    break
            time.sleep(0.02)
        if len(streamed) >= len(returned):
            return earlier + streamed
        return earlier + sorted(returned, key=lambda r: r["time"])


class _Job:
    """One job (:func:`run_job`): attempts until one succeeds, restarts run out or time is up."""

    def __init__(self, client, payload, *, workers, timeout, max_restarts, options):
        self.client = client
        self.payload = payload
        self.workers = workers
        self.timeout = timeout
        self.options = options
        self.id = uuid.uuid4().hex[:12]
        self.restarts = Restarts(f"ddp job {self.id}", max_restarts, logger)
        self.history = _History(self.id)
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.port_retries = 0
        self.world_size = None

    @property
    def attempt(self):
        """The attempt running now, 0 for the first."""
        return self.restarts.attempt

    def run(self):
        while True:
            attempt = self._try()
            if attempt is not None:
                return self._result(attempt)

    def _try(self):
        """One attempt: the Attempt when it succeeded, None to try again; raises DDPError."""
        pool = self.options.pool
        selection = select_workers(
            self.client,
            self.workers if pool is None else pool.workers_for_attempt(),
            self.deadline,
            first=(self.attempt == 0),
            world_size=self.world_size,
        )
        self.world_size = len(selection.addresses)
        current = None
        try:
            remaining = max(1.0, self.deadline - time.monotonic())
            current = Attempt(
                self.client,
                selection.addresses,
                self.payload,
                attempt=self.attempt,
                job=self.id,
                options=dataclasses.replace(self.options, timeout=remaining),
            )
            current.start()
            self._event("start", ranks={str(r): a for r, a in enumerate(selection.addresses)})
            current.watch(self.deadline)
            return current
        except AttemptFailed as exc:
            current.teardown()
            self._after_failure(current, exc.failure)
            return None
        except BaseException as exc:
            # KeyboardInterrupt, a scheduler error...: never leave ranks running. Ranks stuck
            # on paused workers never started: nothing to wait for.
            if current is not None:
                current.teardown(wait=not isinstance(exc, WorkersPausedError))
            raise
        finally:
            selection.release()

    def _after_failure(self, current, failure):
        """Decide: retry with a new port, restart the group, or raise DDPError."""
        failure = current.root_cause(failure)
        logs = current.logs()
        if failure.rank is not None and not failure.stderr:
            failure.stderr = logs.get(failure.rank, {}).get("stderr") or ""
        if failure.port_in_use and self.port_retries < _PORT_RETRIES:
            self.port_retries += 1
            logger.warning("ddp: MASTER_PORT %d was taken; retrying with a new port", current.port)
            return
        failed = self.attempt
        message = describe(failure, failed)
        timed_out = time.monotonic() >= self.deadline
        restart = self.restarts.failed(message, final=timed_out)  # logs the restart
        state = "restart" if restart else "failed"
        self._event(state, attempt=failed, error=message[-2000:], rank=failure.rank)
        if restart:
            return
        if timed_out and failure.rank is not None:
            message += f"\n(timeout={self.timeout} s reached)"
        raise DDPError(
            message,
            rank=failure.rank,
            worker=failure.worker,
            logs=logs,
            failures=self.restarts.failures[:-1],  # the restarted ones; the last is this one
            attempts=self.restarts.attempts,
            history=self.history.final(current),
        ) from failure.cause

    def _event(self, state, *, attempt=None, **fields):
        """A ``ddp`` event: the job's state, for the dashboard page and the report."""
        attempt = self.attempt if attempt is None else attempt
        emit("ddp", self.client, job=self.id, attempt=attempt, state=state, **fields)

    def _result(self, attempt):
        result = DDPResult(
            attempt.values(),
            logs=attempt.logs(),
            history=self.history.final(attempt),
            attempts=self.restarts.attempts,
            failures=self.restarts.failures,
            workers=dict(enumerate(attempt.addresses)),
        )
        attempt.release_inputs()
        self._event("done", seconds=time.monotonic() - self.start)
        logger.info("ddp job %s finished in %.2f s", self.id, time.monotonic() - self.start)
        return result
