"""The client side of one DDP process group: start, watch, tear down (its workers come locked).

1. :func:`~._select.select_workers` (in :mod:`._select`) picks and locks the workers, in rank
   order; the job hands them to an :class:`Attempt`.
2. :meth:`Attempt.start` runs a tiny task on the rank-0 worker that binds port 0 (or a port of
   ``port_range``) to find a free ``MASTER_PORT`` there and counts its GPUs for
   ``backend="auto"``; ``MASTER_ADDR`` is the rank-0 worker's host as the scheduler knows it.
   It then submits one :func:`~._worker.rank_task` per worker (``pure=False``, pinned with
   ``allow_other_workers=False``), each with its :class:`~._records.RankSpec`. With a
   :class:`~dasktrain.ddp.RankPool` (``options.pool``) the pool answers instead: the warm
   group's port and backend or a fresh probe (``group_for``), the task and its extra
   arguments (``rank_task``), and ``reset`` after a failure (the pool's processes ended, its
   group forgotten). The job asks it for the workers (``workers_for_attempt``).
3. :meth:`Attempt.watch` waits for every rank and watches the worker list; the first rank
   that fails or loses its worker raises :class:`~._records.AttemptFailed`.
4. :meth:`Attempt.teardown` sets the attempt's abort event and collects what the ranks hand
   back; :meth:`Attempt.root_cause` says which rank to blame.
"""

from __future__ import annotations

import logging
import time

from .._dask import StallWatch, live_workers, result, scatter_data
from .._dask.events import DDP_TOPIC_PREFIX
from ..exceptions import DDPError, WorkersPausedError
from ._datasets import held_futures
from ._records import AttemptFailed, Failure, RankSpec, RankStatus
from ._sockets import host_of
from ._worker import probe_port, rank_task

logger = logging.getLogger(__name__)

__all__ = ["Attempt", "rank_specs", "describe"]

# How long the client waits for aborted ranks to hand back their logs.
_TEARDOWN_WAIT_S = 10.0
# Last lines of a rank's stderr shown in an error message.
_TAIL_LINES = 20
# What waits, in a WorkersPausedError.
_WHAT = "dasktrain.ddp.run"


def rank_specs(
    addresses,
    *,
    master_port,
    backend,
    timeout,
    env,
    checkpoint_dir,
    abort,
    attempt,
    topic,
    datasets=None,
    module=RankSpec.module,
):
    """One :class:`RankSpec` per worker address, in rank order."""
    hosts = [host_of(a) for a in addresses]
    specs = []
    for rank in range(len(addresses)):
        same_host = [i for i, h in enumerate(hosts) if h == hosts[rank]]
        specs.append(
            RankSpec(
                rank=rank,
                world_size=len(addresses),
                local_rank=same_host.index(rank),
                local_world_size=len(same_host),
                master_addr=hosts[0],
                master_port=master_port,
                backend=backend,
                timeout=timeout,
                env=env,
                checkpoint_dir=checkpoint_dir,
                abort=abort,
                attempt=attempt,
                topic=topic,
                datasets=datasets,
                module=module,
            )
        )
    return specs


def _lost(rank, address):
    return Failure(
        rank, address, "its Dask worker left the cluster (killed or crashed)", RankStatus.LOST
    )


class Attempt:
    """One process group: submit the ranks, watch them, tear them down.

    Parameters
    ----------
    client : distributed.Client
    addresses : list of str
        The locked workers, in rank order.
    payload : bytes
        ``(train_fn, args, kwargs)`` pickled with cloudpickle.
    attempt : int
    job : str
        The job's id (names the abort event, the topic and the task keys).
    options : JobOptions
        The job's backend, this attempt's timeout, env, checkpoint folder, port range, pool,
        datasets and rank process.
    """

    def __init__(self, client, addresses, payload, *, attempt, job, options):
        from distributed import Event

        self.client = client
        self.addresses = addresses
        self.attempt = attempt
        self.job = job
        self.options = options
        self.payload = payload
        self.abort = Event(f"dasktrain-ddp-abort-{job}-{attempt}", client=client)
        self.futures = {}
        self.results = {}
        self.payload_future = None
        self.feeds_future = None
        self.held = None  # the published futures of the datasets' persisted data
        self.port = None
        self.backend = None

    # -- start ---------------------------------------------------------------------------------
    def start(self):
        """Find the port (or the pool's warm group), send the payload, submit one task per rank."""
        pool, warm, env = self.options.pool, False, self.options.env
        if pool is None:
            port, n_gpus = self._probe()
            backend = self.options.backend
            if backend == "auto":
                backend = "nccl" if n_gpus > 0 else "gloo"
        else:
            # The processes start with the pool's env; this job's env is set for the job.
            port, backend, warm = pool.group_for(self.addresses, self._probe)
            env = pool.env
        self.backend, self.port = backend, port
        self.payload_future = scatter_data(
            self.client,
            self.payload,
            what=_WHAT,
            workers=self.addresses,
            broadcast=True,
            hash=False,
        )
        specs = rank_specs(
            self.addresses,
            master_port=port,
            backend=backend,
            timeout=self.options.timeout,
            env=env,
            checkpoint_dir=self.options.checkpoint_dir,
            abort=self.abort.name,
            attempt=self.attempt,
            topic=f"{DDP_TOPIC_PREFIX}{self.job}",
            datasets=self._datasets(),
            module=self.options.module,
        )
        feeds = () if self.feeds_future is None else (self.feeds_future, self.held)
        for spec in specs:
            address = self.addresses[spec.rank]
            task, extra = (rank_task, ())
            if pool is not None:
                task, extra = pool.rank_task(address, warm, self.options.env)
            self.futures[spec.rank] = self.client.submit(
                task,
                self.payload_future,
                spec,
                *extra,
                *feeds,
                workers=[address],
                allow_other_workers=False,
                pure=False,
                retries=0,
                key=f"dasktrain-ddp-rank{spec.rank}-{self.job}-{self.attempt}",
            )
        logger.info(
            "ddp attempt %d: %d ranks on %s, backend=%s, MASTER_ADDR=%s MASTER_PORT=%d%s",
            self.attempt,
            len(self.addresses),
            self.addresses,
            backend,
            specs[0].master_addr,
            port,
            "" if pool is None else f" (pool {pool.id}, {'warm' if warm else 'starting'})",
        )

    def _datasets(self):
        """The ranks' ``{name: meta}`` of ``datasets=`` (the feeds sent to the workers), or None.

        Which rank holds which persisted chunk is asked now, for this attempt's workers: after
        a restart the chunks may live elsewhere.
        """
        datasets = self.options.datasets
        if not datasets:
            return None
        feeds, blob = datasets
        self.feeds_future = scatter_data(
            self.client, blob, what=_WHAT, workers=self.addresses, broadcast=True, hash=False
        )
        held = held_futures(feeds)
        if held:
            self.held = f"dasktrain-ddp-held-{self.job}-{self.attempt}"
            self.client.publish_dataset(held, name=self.held)
        return {n: f.meta(f.owners(self.client, self.addresses)) for n, f in feeds.items()}

    def release_inputs(self):
        """Forget the payload and the datasets sent for this attempt (success or failure)."""
        extra = [f for f in (self.payload_future, self.feeds_future) if f is not None]
        self.client.cancel(extra, force=True)
        if self.held is not None:
            try:
                self.client.unpublish_dataset(self.held)
            except Exception:  # already gone with a lost scheduler: nothing is kept
                logger.debug("could not unpublish %s", self.held, exc_info=True)
            self.held = None

    def _probe(self):
        """``(port, n_gpus)`` from the rank-0 worker; a dead worker is a restartable failure."""
        future = self.client.submit(
            probe_port,
            self.options.port_range,
            workers=[self.addresses[0]],
            allow_other_workers=False,
            pure=False,
            key=f"dasktrain-ddp-port-{self.job}-{self.attempt}",
        )
        try:
            return result(future, what=_WHAT, timeout=max(1.0, self.options.timeout))
        except (DDPError, WorkersPausedError):
            raise  # a paused worker: a restart cannot help, and the port is not the cause
        except Exception as exc:
            message = f"could not probe a free port ({exc!r})"
            raise AttemptFailed(Failure(0, self.addresses[0], message, cause=exc)) from exc

    # -- watch ---------------------------------------------------------------------------------
    def watch(self, deadline):
        """Wait for all ranks; raise AttemptFailed on the first failed rank or lost worker.

        Raises WorkersPausedError when the rank tasks wait on workers paused for memory.
        """
        last_live_check = 0.0
        pending = dict(self.futures)
        stall = StallWatch(self.client, _WHAT)
        while pending:
            for rank in [r for r, f in pending.items() if f.done()]:
                self._take(rank, pending.pop(rank))
            if not pending:
                break
            now = time.monotonic()
            if now > deadline:
                raise AttemptFailed(Failure(None, None, "the job ran past its timeout"))
            if now - last_live_check >= 0.5:
                last_live_check = now
                live = live_workers(self.client)
                for rank in pending:
                    if self.addresses[rank] not in live:
                        raise AttemptFailed(_lost(rank, self.addresses[rank]))
                stall.check([f.key for f in pending.values()])
            time.sleep(0.05)

    def _take(self, rank, future):
        """Record a finished rank task; raise AttemptFailed unless its rank succeeded."""
        if future.status != "finished":
            exc = future.exception() if future.status == "error" else None
            what = (
                f"its task failed ({type(exc).__name__}: {exc})"
                if exc is not None
                else f"its task was {future.status}"
            )
            raise AttemptFailed(Failure(rank, self.addresses[rank], what, cause=exc))
        res = future.result()
        self.results[rank] = res
        if res.status is not RankStatus.OK:
            raise AttemptFailed(res.failure())

    # -- tear down -----------------------------------------------------------------------------
    def teardown(self, wait=True):
        """Abort the ranks still running and collect what they hand back (logs).

        ``wait=False``: do not wait for them (rank tasks stuck on paused workers never ran).
        """
        running = [f for f in self.futures.values() if not f.done()]
        if running:
            self.abort.set()
            if wait:
                self._wait_for_live(running)
        for rank, future in self.futures.items():
            if rank not in self.results and future.status == "finished":
                self.results[rank] = future.result()
        # Clear the abort flag only when no task can still be polling it: a task on a lost
        # worker (or one that did not return in time) must still see it if it ever runs on.
        all_returned = all(f.status == "finished" for f in running)
        self.client.cancel(list(self.futures.values()), force=True)
        self.release_inputs()
        if running and all_returned:
            try:
                self.abort.clear()
            except Exception:
                logger.debug("could not clear %s", self.abort.name, exc_info=True)
        if self.options.pool is not None:
            # A failed group is never reused: the next attempt starts fresh processes.
            self.options.pool.reset()

    def _wait_for_live(self, running):
        """Wait (a while) for the aborted tasks on live workers: a dead worker's never return."""
        try:
            live = live_workers(self.client)
        except Exception:
            live = set()
        alive = [f for r, f in self.futures.items() if not f.done() and self.addresses[r] in live]
        # Poll rather than distributed.wait, which needs a default client.
        until = time.monotonic() + _TEARDOWN_WAIT_S
        while any(not f.done() for f in alive) and time.monotonic() < until:
            time.sleep(0.05)
        stuck = [f.key for f in alive if not f.done()]
        if stuck:
            logger.warning(
                "ddp teardown: ranks still running after %.0f s: %s", _TEARDOWN_WAIT_S, stuck
            )

    def root_cause(self, failure):
        """The failure to report: a lost worker, else a taken port, else the earliest failure.

        When one rank dies the others fail soon after inside a collective ("connection closed
        by peer"); whichever the client noticed first, the earliest failure is the cause.
        """
        if failure.lost_worker or failure.port_in_use:
            return failure
        # A dead worker explains its peers' "connection closed" errors, even when the client
        # saw those errors before it noticed the worker was gone.
        try:
            live = live_workers(self.client)
        except Exception:
            live = set(self.addresses)
        for rank, address in enumerate(self.addresses):
            if address not in live and rank not in self.results:
                return _lost(rank, address)
        candidates = [failure] + [
            res.failure()
            for res in self.results.values()
            if res.status in (RankStatus.ERROR, RankStatus.PORT_IN_USE)
        ]
        taken = [c for c in candidates if c.port_in_use]
        if taken:
            return taken[0]
        return min(candidates, key=lambda c: float("inf") if c.when is None else c.when)

    # -- what happened -------------------------------------------------------------------------
    def logs(self):
        """``{rank: {worker, host, returncode, stdout, stderr, status}}`` (LOST: no answer)."""
        out = {}
        for rank, address in enumerate(self.addresses):
            res = self.results.get(rank)
            out[rank] = {
                "worker": address,
                "host": host_of(address),
                "returncode": None if res is None else res.returncode,
                "stdout": None if res is None else res.stdout,
                "stderr": None if res is None else res.stderr,
                "status": RankStatus.LOST if res is None else res.status,
            }
        return out

    def values(self):
        """``{rank: value}`` of a successful attempt."""
        return {rank: res.value for rank, res in sorted(self.results.items())}

    def records(self):
        """The report records the ranks handed back (the stream's fallback)."""
        return [r for res in self.results.values() for r in res.records]


def describe(failure, attempt):
    """The message of a failed attempt: who failed, how, and the end of its stderr."""
    if failure.rank is None:
        head = f"DDP job failed (attempt {attempt}): {failure.message}"
    else:
        head = (
            f"DDP rank {failure.rank} on worker {failure.worker} failed "
            f"(attempt {attempt}): {failure.message}"
        )
    tail = "\n".join((failure.stderr or "").rstrip().splitlines()[-_TAIL_LINES:])
    if tail:
        head += f"\n--- last lines of rank {failure.rank} stderr ---\n{tail}"
    return head
