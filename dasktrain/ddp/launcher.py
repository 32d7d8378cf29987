"""Launch a PyTorch DistributedDataParallel job on Dask workers: :func:`run`.

:func:`run` starts one process group (an :class:`~._group.Attempt`: workers picked and locked,
a free ``MASTER_PORT`` found on the rank-0 worker, one :func:`~._worker.rank_task` per worker),
watches it, and on a failure either restarts the whole group (``max_restarts``: a fresh port,
workers chosen again from the live ones) or raises :class:`~dasktrain.exceptions.DDPError`.
Metrics the ranks report stream to the client as Dask events (``Client.subscribe_topic``).

Where the rest lives: ``_group`` (the client side of one group), ``_worker`` (what runs on the
worker), ``_rank`` (inside a rank process), ``_env`` (the environment contract), ``_records``
(specs, statuses, results) and ``local`` (:func:`run_local`, the one-process twin).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

from .. import _config
from .._dask import get_client
from .._dask.events import DDP_TOPIC_PREFIX, emit, keep
from ..exceptions import DDPError, ValidationError, WorkersPausedError
from . import _datasets
from . import helpers as _helpers
from ._group import Attempt, describe, select_workers
from ._pool import RankPool
from ._records import AttemptFailed, DDPResult
from .local import run_local

logger = logging.getLogger(__name__)

__all__ = ["run", "run_local", "DDPResult", "RankPool"]

BACKENDS = ("auto", "gloo", "nccl")
# Times a group whose rank 0 found MASTER_PORT taken is retried with a fresh port (free).
_PORT_RETRIES = 3
# Seconds the client waits for report events still in flight when the job ends.
_HISTORY_WAIT_S = 2.0


def _check_args(backend, timeout, max_restarts, workers, port_range, env):
    """Raise a ValidationError naming the first bad argument of :func:`run`."""
    if backend not in BACKENDS:
        raise ValidationError(f"backend={backend!r} must be one of {BACKENDS}.")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValidationError(f"timeout={timeout!r} must be a positive number of seconds.")
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ValidationError(f"max_restarts={max_restarts!r} must be an integer >= 0.")
    _check_workers(workers)
    _check_port_range(port_range)
    if env is not None and not (
        isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise ValidationError(f"env={env!r} must be a dict of str -> str.")


def _check_pool(pool, client, workers, backend, port_range):
    """The pool's client; a ValidationError when ``pool`` or the arguments beside it are bad."""
    if not isinstance(pool, RankPool):
        raise ValidationError(f"pool={pool!r} must be a dasktrain.ddp.RankPool or None.")
    pool._check_open()
    if client is not None and client is not pool.client:
        raise ValidationError("pool= belongs to another client; pass client=None or its own.")
    if workers is not None or backend != "auto" or port_range is not None:
        raise ValidationError(
            "with pool=, the pool decides the workers, the backend and the port range: "
            "pass them to RankPool(...) and leave workers, backend and port_range unset."
        )
    return pool.client


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


def run(
    train_fn,
    *args,
    client=None,
    workers=None,
    backend="auto",
    timeout=None,
    max_restarts=0,
    checkpoint_dir=None,
    env=None,
    port_range=None,
    pool=None,
    datasets=None,
    **kwargs,
) -> DDPResult:
    """Run ``train_fn(*args, **kwargs)`` as a DistributedDataParallel job on Dask workers.

    One rank process per selected worker is started for the job, so training does not run in
    the worker's thread pool and a crash cannot take the worker down. Inside ``train_fn`` the
    process group is ready (``torch.distributed`` works); use :func:`prepare_model`,
    :func:`prepare_loader`, :func:`report` and the checkpoint helpers.

    Parameters
    ----------
    train_fn : callable
        Pickled with cloudpickle and sent to every rank; its return value must pickle too.
    *args, **kwargs
        Passed to ``train_fn`` on every rank (sent once per worker with ``client.scatter``):
        small things. Data belongs in ``datasets=``.
    client : distributed.Client, optional
        Defaults to :func:`distributed.get_client`.
    workers : None, int or list of str
        ``None``: every worker; an int: that many free workers; a list: those addresses.
        The workers are locked for the job (a second job waits for them, up to ``timeout``).
    backend : {"auto", "gloo", "nccl"}
        ``"auto"``: nccl when the rank-0 worker sees a GPU, else gloo.
    timeout : float, optional
        Seconds for the whole call, restarts included; then every rank is stopped and
        :class:`DDPError` is raised. Also the process-group timeout of the collectives.
        Default: the ``dasktrain.ddp.timeout`` setting (600 unless changed with
        ``dask.config.set``).
    max_restarts : int
        How many times to restart the whole group after a rank or worker fails. ``train_fn``
        resumes from :func:`load_checkpoint` if it saved one.
    checkpoint_dir : str or path, optional
        Folder for :func:`save_checkpoint` / :func:`load_checkpoint`; every rank must see it
        (a shared file system on a multi-machine cluster).
    env : dict of str, optional
        Extra environment variables for the rank processes.
    port_range : (int, int), optional
        Ports allowed for ``MASTER_PORT``; default ``dasktrain.ddp.port-range`` (None: any
        free port the OS gives).
    pool : RankPool, optional
        Run in the pool's rank processes, kept alive between jobs (a warm start takes a
        fraction of a second instead of a new process, ``import torch`` and a rendezvous).
        The pool decides the workers, the backend and the port range (leave ``workers``,
        ``backend`` and ``port_range`` at their defaults); ``env`` is set for this job
        inside the running processes. Failures, restarts and timeouts behave as without a
        pool; a failed job ends the pool's processes and the next job starts fresh ones.
    datasets : dict of str -> dataset, optional
        Data the ranks read without it ever coming to this process: ``{"train": ...,
        "val": ...}``, each an ``ImageSet`` of ``read_images(engine="dask")`` (lazy or
        persisted), a dask array, a dask DataFrame, or a tuple of them with aligned row
        chunks (``(X, y)``). Inside ``train_fn``, :func:`shard` gives each rank its own part,
        read chunk by chunk from its own worker: a persisted chunk from the worker that
        holds it, a lazy one decoded there. Only the graph is read here (and a DataFrame's
        partition lengths counted on the cluster).

    Returns
    -------
    DDPResult
        A dict ``{rank: return value}`` with ``.logs`` (per-rank stdout/stderr),
        ``.history`` (the :func:`report` records), ``.attempts`` and ``.failures``.

    Raises
    ------
    DDPError
        When a rank raises, exits non-zero or loses its worker and no restart is left, or on
        timeout: names the rank, the worker, the exception and the last lines of that rank's
        stderr; carries ``.rank``, ``.worker``, ``.logs``, ``.history``, ``.failures``,
        ``.attempts``, and the rank's original exception as ``__cause__`` when it could be
        pickled back.
    ValidationError
        For a bad argument (unknown backend, more workers than the cluster has, a dataset
        that is not a dask collection or whose parts are not aligned...).
    WorkersPausedError
        When the job's tasks (its port probe, its ranks) waited on workers paused for memory
        for ``dasktrain.paused-workers.grace``: a restart cannot help, so none is made.

    See Also
    --------
    run_local : the same ``train_fn`` in this process, world size 1 (the local engine).
    shard : a rank's part of a dataset of ``datasets=``.
    """
    timeout = _config.get("ddp.timeout") if timeout is None else timeout
    if pool is not None:
        client = _check_pool(pool, client, workers, backend, port_range)
        backend, port_range = pool.backend, pool.port_range
    port_range = _config.get("ddp.port-range") if port_range is None else port_range
    _check_args(backend, timeout, max_restarts, workers, port_range, env)
    if not callable(train_fn):
        raise ValidationError(f"train_fn={train_fn!r} must be callable.")
    client = get_client(client, what="dasktrain.ddp.run")
    feeds = _datasets.prepare(datasets, client)
    job = _Job(
        client,
        _payload(train_fn, args, kwargs),
        workers=workers,
        timeout=timeout,
        max_restarts=max_restarts,
        options={
            "backend": backend,
            "env": dict(env or {}),
            "checkpoint_dir": _helpers.make_checkpoint_dir(checkpoint_dir),
            "port_range": port_range,
            "pool": pool,
            "datasets": (feeds, _datasets.pack(feeds)) if feeds else None,
        },
    )
    with job.history.subscribed(client):
        return job.run()


def _payload(train_fn, args, kwargs):
    import cloudpickle

    return cloudpickle.dumps((train_fn, args, kwargs))


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
    """One call of :func:`run`: attempts until one succeeds, restarts run out or time is up."""

    def __init__(self, client, payload, *, workers, timeout, max_restarts, options):
        self.client = client
        self.payload = payload
        self.workers = workers
        self.timeout = timeout
        self.max_restarts = max_restarts
        self.options = options
        self.id = uuid.uuid4().hex[:12]
        self.history = _History(self.id)
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.failures = []
        self.port_retries = 0
        self.attempt = 0
        self.world_size = None

    def run(self):
        while True:
            attempt = self._try()
            if attempt is not None:
                return self._result(attempt)

    def _try(self):
        """One attempt: the Attempt when it succeeded, None to try again; raises DDPError."""
        pool = self.options["pool"]
        selection = select_workers(
            self.client,
            self.workers if pool is None else pool._request(),
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
                options={**self.options, "timeout": remaining},
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
        message = describe(failure, self.attempt)
        timed_out = time.monotonic() >= self.deadline
        restart = self.attempt < self.max_restarts and not timed_out
        self._event("restart" if restart else "failed", error=message[-2000:], rank=failure.rank)
        if restart:
            self.failures.append(message)
            logger.warning(
                "%s\nrestarting the group (%d of %d restarts)",
                message,
                self.attempt + 1,
                self.max_restarts,
            )
            self.attempt += 1
            return
        if timed_out and failure.rank is not None:
            message += f"\n(timeout={self.timeout} s reached)"
        raise DDPError(
            message,
            rank=failure.rank,
            worker=failure.worker,
            logs=logs,
            failures=self.failures,
            attempts=self.attempt + 1,
            history=self.history.final(current),
        ) from failure.cause

    def _event(self, state, **fields):
        """A ``ddp`` event: the job's state, for the dashboard page and the report."""
        emit("ddp", self.client, job=self.id, attempt=self.attempt, state=state, **fields)

    def _result(self, attempt):
        result = DDPResult(
            attempt.values(),
            logs=attempt.logs(),
            history=self.history.final(attempt),
            attempts=self.attempt + 1,
            failures=self.failures,
            workers=dict(enumerate(attempt.addresses)),
        )
        attempt.release_inputs()
        self._event("done", seconds=time.monotonic() - self.start)
        logger.info("ddp job %s finished in %.2f s", self.id, time.monotonic() - self.start)
        return result
