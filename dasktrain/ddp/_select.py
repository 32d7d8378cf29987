"""The workers of one attempt: chosen among the live ones, locked, in rank order.

:func:`select_workers` picks the workers (a count, a list of addresses, or all), locks each
one with a :class:`distributed.Lock` named after its address so two jobs never share a
worker, and orders them by host then address: rank ``i`` is the ``i``-th worker,
``LOCAL_RANK`` counts ranks on the same host. The :class:`Selection` it returns is released
after the attempt, whatever its end.

**Why one** :class:`distributed.Lock` **per worker, not a** :class:`distributed.MultiLock`.
The locking is all or nothing: :func:`select_workers` takes the free workers it needs without
waiting (``acquire(blocking=False)``), or releases what it got and looks again 0.5 s later,
reading the live workers afresh each time (a worker that left is no candidate, a new one is;
the first attempt checks the request against them), until the job's deadline. No job ever
holds a worker while it waits for another, so two jobs cannot deadlock. ``MultiLock`` (one
request for all names, queued on the scheduler, as ``xgboost.dask`` locks its workers) was
tried against what this loop keeps, and keeps neither of two things:

* **The lease.** ``Lock`` is a ``Semaphore`` whose lease the client renews; when the client's
  process dies (a notebook kernel killed mid-training) the scheduler frees its workers after
  ``distributed.scheduler.locks.lease-timeout`` (30 s). ``MultiLock`` has no lease: with a
  5 s lease, a killed client's ``Lock`` was free again after 6 s, its ``MultiLock`` still
  held 40 s later (until the scheduler restarts), so every later job would fail at its
  timeout (``test_workers_of_a_dead_client_are_freed`` keeps this). A request whose client
  is interrupted while it waits stays queued as well, and is granted to no one who will
  release it.
* **"Any** ``n`` **free workers".** ``workers=<count>`` takes workers that are free now
  (``test_lock_makes_second_job_use_the_free_worker``). ``MultiLock`` locks named workers;
  ``acquire(num_locks=n)`` does not say which ``n`` it got, keeps the request queued on the
  other names once granted (it takes them too as they free up), and in distributed 2026.7
  the scheduler's release then fails with ``KeyError`` in ``MultiLockExtension._retain_locks``.
"""

from __future__ import annotations

import logging
import time

from .._dask import live_workers
from ..exceptions import DDPError, ValidationError
from ._sockets import host_of

logger = logging.getLogger(__name__)

__all__ = ["select_workers", "Selection"]


def _order(addresses):
    return sorted(addresses, key=lambda a: (host_of(a), a))


def _lock(client, address):
    from distributed import Lock

    return Lock(f"dasktrain-ddp-worker-{address}", scheduler_rpc=client.scheduler, loop=client.loop)


class Selection:
    """Locked workers for one attempt."""

    def __init__(self, addresses, locks):
        self.addresses = addresses
        self.locks = locks

    def release(self):
        for lock in self.locks:
            try:
                lock.release()
            except Exception:  # the scheduler may already have expired the lease
                logger.debug("could not release %s", lock.name, exc_info=True)
        self.locks = []


def _needed(workers, live, world_size):
    if world_size is not None:
        # A restart keeps the world size (waiting for replacements), so that the checkpoint
        # resumes the same run.
        return world_size
    if workers is None:
        return len(live)
    if isinstance(workers, int):
        return workers
    return len(workers)


def _check_request(workers, preferred, need, live):
    """On the first attempt: the workers asked for must exist."""
    unknown = [w for w in preferred if w not in live]
    if unknown:
        raise ValidationError(
            f"workers={preferred!r}: {unknown!r} are not workers of this cluster; "
            f"live workers are {sorted(live)!r}."
        )
    if need > len(live):
        raise ValidationError(
            f"workers={workers!r} asks for {need} workers but the cluster has "
            f"{len(live)}; scale the cluster up or ask for fewer."
        )
    if need == 0:
        raise DDPError("the cluster has no workers; start some before dasktrain.ddp.run.")


def _try_lock(client, candidates, need):
    chosen, locks = [], []
    for address in candidates:
        if len(chosen) == need:
            break
        lock = _lock(client, address)
        if lock.acquire(blocking=False):
            chosen.append(address)
            locks.append(lock)
    return Selection(chosen, locks)


def select_workers(client, workers, deadline, first, world_size=None):
    """Choose and lock the workers of one attempt (waits while they are busy or missing)."""
    preferred = list(workers) if isinstance(workers, (list, tuple)) else []
    while True:
        live = live_workers(client)
        need = _needed(workers, live, world_size)
        if first:
            _check_request(workers, preferred, need, live)
        # Asked-for workers first; on a restart, other live workers replace the dead ones.
        candidates = [w for w in preferred if w in live]
        candidates += _order(live - set(candidates))
        selection = _try_lock(client, candidates, need)
        if len(selection.addresses) == need and need > 0:
            return Selection(_order(selection.addresses), selection.locks)
        got = len(selection.addresses)
        selection.release()
        if time.monotonic() > deadline:
            raise DDPError(
                f"could not lock {need} free workers within the timeout: {len(live)} live, "
                f"{got} not busy with another dasktrain.ddp job. Wait for the other job, "
                "pass fewer workers, or raise timeout."
            )
        time.sleep(0.5)
