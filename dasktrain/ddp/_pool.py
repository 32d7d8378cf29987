"""The client side of :class:`RankPool`: rank processes kept alive between :func:`run` calls.

A one-job rank pays, every time, a fresh process, ``import torch`` and the rendezvous (about
2 s on an idle 2-core machine, most of it the import). A pool keeps one rank process per
worker alive after its job, with torch imported and the process group still joined, waiting
on its stdin for the next job (see :mod:`._pool_worker`). The client keeps the group it
formed (the workers in rank order, ``MASTER_PORT``, the backend); before each job it checks,
in one ``client.run``, that every process of the group is still alive, and reuses the group
only then. Anything else (a failed, aborted or timed-out job, a lost worker, a process that
died between jobs) kills the pool's processes and forgets the group: the next attempt starts
fresh processes, exactly like a job without a pool, so the fault handling of :func:`run` is the
same with and without a pool.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import _config
from .._dask import get_client, live_workers
from ..exceptions import ValidationError
from ._job import check_args, run_job
from ._pool_worker import PooledJob, pool_kill, pool_rank_task, pool_status

if TYPE_CHECKING:
    from distributed import Client

    from .._typing import PortRange, Self, Workers

logger = logging.getLogger(__name__)

__all__ = ["RankPool"]

# Seconds a check or a kill on the pool's workers may take (a wedged worker never hangs a job).
_RUN_TIMEOUT_S = 30.0


def _ready() -> int:
    """The pool's first job: start the processes and join the group; the rank's pid."""
    return os.getpid()


class RankPool:
    """Rank processes kept alive between :func:`run` calls on the same workers (opt-in).

    The first job (:meth:`start`, or the first ``run(..., pool=pool)``) starts one rank process
    per worker as :func:`run` always does; the processes then stay, with torch imported and the
    process group joined, and later jobs start in a fraction of a second. Use it as a context
    manager so the processes end with the block::

        with ddp.RankPool(client, workers=2) as pool:
            for lr in (0.1, 0.03, 0.01):
                results = ddp.run(train, lr, pool=pool)

    Parameters
    ----------
    client : distributed.Client, optional
        Defaults to :func:`distributed.get_client`.
    workers : None, int or list of str
        As in :func:`run`: all workers, a count, or addresses. After a worker is lost the
        pool picks the same way again among the live workers.
    backend : {"auto", "gloo", "nccl"}
    env : dict of str, optional
        Environment of the rank processes, set when they start (so also variables read only
        at start-up: ``OMP_*``, ``GLOO_SOCKET_IFNAME``, ``NCCL_*``). ``env=`` of a
        :func:`run` with this pool is set for that job only, inside the running process.
    timeout : float, optional
        The process group's timeout (collectives), and the time limit of :meth:`start`.
        Default: the ``dasktrain.ddp.timeout`` setting.
    port_range : (int, int), optional
        As in :func:`run`.

    Notes
    -----
    The processes are reused, so ``train_fn`` runs in a process where an earlier job ran:
    module-level state, torch's random state and ``torch.set_num_threads`` carry over (seed
    inside ``train_fn``). A job that fails, times out or is aborted ends the pool's processes
    (the group is rebuilt by the next job); so does a ``train_fn`` that destroys the process
    group. A rank that succeeded shows ``returncode`` None in ``logs``: its process lives on.
    The processes end with :meth:`close`, when the pool object is garbage-collected,
    when its client closes, and when their worker dies. Jobs of one pool run one at a time
    (the workers are locked per job, as without a pool).
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        workers: Workers = None,
        backend: str = "auto",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        port_range: PortRange | None = None,
    ) -> None:
        timeout = _config.get("ddp.timeout") if timeout is None else timeout
        port_range = _config.get("ddp.port-range") if port_range is None else port_range
        check_args(backend, timeout, 0, workers, port_range, env)
        self.client = get_client(client, what="dasktrain.ddp.RankPool")
        self.workers = workers
        self.backend = backend
        self.env: dict[str, str] = dict(env or {})
        self.timeout = timeout
        self.port_range = port_range
        self.id = uuid.uuid4().hex[:12]
        self.closed = False
        # (addresses in rank order, MASTER_PORT, backend) while warm
        self._group: tuple[tuple[str, ...], int, str] | None = None
        self._tokens: dict[str, Any] = {}  # worker address -> Future of the pool's token there
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("warm" if self._group else "cold")
        return f"RankPool(id={self.id!r}, {state}, workers={self.addresses})"

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def addresses(self) -> list[str]:
        """The workers of the warm group, in rank order (``[]`` while there is none)."""
        return list(self._group[0]) if self._group else []

    def start(self) -> Self:
        """Start the rank processes and join their group now (a first, empty job); self."""
        self.ensure_open()
        run_job(
            self.client,
            _ready,
            (),
            {},
            workers=None,  # the pool's own (workers_for_attempt)
            timeout=self.timeout,
            max_restarts=0,
            backend=self.backend,
            port_range=self.port_range,
            pool=self,
        )
        return self

    def pids(self) -> dict[str, int]:
        """``{worker address: pid}`` of the pool's live rank processes (one ``client.run``)."""
        if not self._group:
            return {}
        status = self._status(self._group[0])
        return {a: s[0] for a, s in status.items() if s is not None and s[1]}

    def close(self) -> None:
        """End the pool's rank processes (waits until they are gone) and release its workers."""
        if self.closed:
            return
        self.closed = True
        self.reset()
        futures = list(self._tokens.values())
        self._tokens = {}
        try:
            self.client.cancel(futures, force=True)
        except Exception:  # the client may be closing already: the tokens go with it
            logger.debug("could not release the tokens of pool %s", self.id, exc_info=True)

    # -- what a job asks of its pool ---------------------------------------------------------
    # Public to the package (launcher, _job, _group), not to users: ``:meta private:`` keeps
    # them off the API page, so RankPool's user-facing API stays start / close / pids /
    # addresses.
    def ensure_open(self) -> None:
        """Raise a ValidationError once the pool is closed (before a job uses it).

        :meta private:
        """
        if self.closed:
            raise ValidationError(f"{self!r} is closed; create a new RankPool.")

    def workers_for_attempt(self) -> Workers:
        """The ``workers=`` of the next attempt: the warm group's, else what the user asked.

        :meta private:
        """
        with self._lock:
            if self._group and set(self._group[0]) <= live_workers(self.client):
                return list(self._group[0])
        self.reset()
        return self.workers

    def group_for(
        self, addresses: Iterable[str], probe: Callable[[], tuple[int, int]]
    ) -> tuple[int, str, bool]:
        """``(port, backend, warm)`` for a job on ``addresses``: the warm group's when alive.

        ``probe()`` gives ``(port, n_gpus)`` from the rank-0 worker for a fresh group.

        :meta private:
        """
        with self._lock:
            group = self._group
        if group and group[0] == tuple(addresses):
            status = self._status(addresses)
            if all(s is not None and s[1] for s in status.values()):
                return group[1], group[2], True
            logger.warning("ddp pool %s: a rank process ended since the last job", self.id)
        self.reset()
        port, n_gpus = probe()
        backend = self.backend
        if backend == "auto":
            backend = "nccl" if n_gpus > 0 else "gloo"
        self._ensure_tokens(addresses)
        with self._lock:
            self._group = (tuple(addresses), port, backend)
        return port, backend, False

    def rank_task(
        self, address: str, warm: bool, run_env: Mapping[str, str]
    ) -> tuple[Callable[..., Any], tuple[Any, PooledJob]]:
        """``(function, extra arguments)`` of the rank task on ``address``: the payload and
        the spec come first, the job's datasets last (see ``_pool_worker.pool_rank_task``).

        ``run_env`` is the job's own ``env=``, set inside the running process for the job.

        :meta private:
        """
        token = self._tokens[address]
        job = PooledJob(self.id, token.key, self.timeout, warm, dict(run_env))
        return pool_rank_task, (token, job)

    def reset(self) -> None:
        """Kill the pool's processes on the live workers and forget the group (waits).

        After a failed, aborted or timed-out job: a group is reused only after a success.

        :meta private:
        """
        with self._lock:
            group, self._group = self._group, None
        targets = set(group[0] if group else ()) | set(self._tokens)
        try:
            targets &= live_workers(self.client)
            if targets:
                self._on_workers(pool_kill, targets)
        except Exception:  # a worker left meanwhile: its processes leave with it
            logger.debug("pool %s: kill failed", self.id, exc_info=True)

    def _status(self, addresses: Iterable[str]) -> dict[str, Any]:
        try:
            status: dict[str, Any] = self._on_workers(pool_status, addresses)
            return status
        except Exception:  # a worker left between the check and the call
            logger.debug("pool %s: status check failed", self.id, exc_info=True)
            return {a: None for a in addresses}

    def _on_workers(self, fn: Callable[..., Any], addresses: Iterable[str]) -> Any:
        """``client.run(fn, pool id)`` on ``addresses``, within ``_RUN_TIMEOUT_S``."""
        return self.client.sync(
            self.client._run,
            fn,
            self.id,
            workers=sorted(addresses),
            callback_timeout=_RUN_TIMEOUT_S,
        )

    def _ensure_tokens(self, addresses: Iterable[str]) -> None:
        """One token per worker, held by this pool (its release ends the worker's process)."""
        stale = [a for a in self._tokens if a not in addresses]
        if stale:
            self.client.cancel([self._tokens.pop(a) for a in stale], force=True)
        for address in addresses:
            token = self._tokens.get(address)
            if token is not None and token.status == "finished":
                continue
            key = f"dasktrain-ddp-pool-{self.id}-{uuid.uuid4().hex[:8]}"
            # One token per worker (never one broadcast): the scheduler's memory manager
            # drops extra replicas of data that no task waits for.
            self._tokens[address] = self.client.scatter({key: self.id}, workers=[address])[key]
