"""The worker side of a :class:`~dasktrain.ddp.RankPool`: a rank process that stays between jobs.

A pooled job runs :func:`pool_rank_task` on each worker instead of
:func:`~._worker.rank_task`. The first job of a group starts ``python -m dasktrain.ddp._rank
--pool`` (the same command and environment as a one-job rank) and keeps it in this worker's
registry; later jobs of the same group hand their payload to that process through its stdin
(one JSON line naming the job's private files) and supervise it exactly like a one-job rank
(:func:`~._supervise.watch`: metrics relay, abort event, timeout). A pooled process that fails,
is aborted or times out is killed at once, as a one-job rank is; the client then forgets the
group and the next job starts fresh processes.

Nothing outlives its owner: a pooled process leaves when its worker dies (it watches its
parent), and a watchdog thread here kills it when the pool's token (a small piece of data the
client scattered to this worker for the pool) is released: ``RankPool.close()``, the pool
garbage-collected, or its client closed or gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time

from . import _env
from ._feeder import start_feeder
from ._records import RankError, RankResult, RankStatus
from ._sockets import host_of
from ._supervise import MetricsRelay, RankFiles, rank_command, rank_result, tail, watch

logger = logging.getLogger(__name__)

__all__ = ["PooledJob", "pool_rank_task", "pool_status", "pool_kill"]


@dataclasses.dataclass(frozen=True)
class PooledJob:
    """What a :class:`~dasktrain.ddp.RankPool` tells its worker with one job's rank task."""

    id: str  # the pool's
    token_key: str  # the key of the pool's token on the worker: gone, the pool is closed
    timeout: float  # the process group's (the pool's), not this job's
    warm: bool  # the client saw every process of the group alive just before
    env: dict[str, str]  # this job's env=, set in the process for the job only


# How often the watchdog looks for the pool's token on this worker.
_WATCH_S = 0.5
# pool id -> _Resident: the pooled rank process of each pool on this worker.
_RESIDENTS: dict = {}
_LOCK = threading.Lock()


def _signature(spec):
    """What must not change for a pooled process to serve a job: its place and its group."""
    return (
        spec.rank,
        spec.world_size,
        spec.local_rank,
        spec.local_world_size,
        spec.master_addr,
        spec.master_port,
        spec.backend,
    )


class _Resident:
    """One pooled rank process on this worker, with its folder and its log files."""

    def __init__(self, proc, signature, folder):
        self.proc, self.signature, self.folder = proc, signature, folder
        self.stdout = os.path.join(folder, "stdout.txt")
        self.stderr = os.path.join(folder, "stderr.txt")

    def alive(self):
        # Popen.poll() answers None ("running") whenever another thread is inside waitpid for
        # the same process (the job's watch, the watchdog), so a killed process could pass for
        # alive and get the next job (seen in CI); a zombie is dead too.
        import psutil

        if self.proc.poll() is not None:
            return False
        try:
            return psutil.Process(self.proc.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def offsets(self):
        return tuple(_size(p) for p in (self.stdout, self.stderr))

    def send(self, job):
        """Hand a job to the process; False when it is gone (a closed pipe)."""
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def kill(self):
        """Kill the process (if it still runs), reap it, remove its folder."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
            logger.warning("ddp pool: rank process %d did not die within 10 s", self.proc.pid)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _spawn(worker, spec, pool):
    """Start the pooled rank process of ``spec`` (it joins the group with its first job)."""
    prefix = f"dasktrain-ddp-pool-r{spec.rank}-"
    folder = tempfile.mkdtemp(prefix=prefix, dir=worker.local_directory)
    # The process-group timeout is the pool's: the process outlives this job's own timeout.
    env = _env.rank_environ(
        dataclasses.replace(spec, timeout=pool.timeout),
        environ=os.environ,
        nthreads=worker.state.nthreads,
        metrics_file=os.devnull,  # each job names its own (see _job)
        host=host_of(worker.address),
    )
    argv, cwd = rank_command(folder)
    resident = _Resident(None, _signature(spec), folder)
    with open(resident.stdout, "ab") as out, open(resident.stderr, "ab") as err:
        resident.proc = subprocess.Popen(
            [*argv, _env.POOL_FLAG], stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, cwd=cwd
        )
    threading.Thread(
        target=_watchdog,
        args=(worker, pool.id, pool.token_key, resident),
        name=f"dasktrain-ddp-pool-{pool.id}",
        daemon=True,
    ).start()
    return resident


def _watchdog(worker, pool_id, token_key, resident):
    """Kill ``resident`` once the pool's token left this worker (the pool is closed or gone)."""
    while True:
        time.sleep(_WATCH_S)
        with _LOCK:
            if _RESIDENTS.get(pool_id) is not resident:
                return  # replaced or killed by a job or by pool_kill
            if token_key in worker.data:
                continue
            del _RESIDENTS[pool_id]
        logger.info("ddp pool %s: its client let go; stopping rank process", pool_id)
        resident.kill()
        return


def _resident_for(worker, spec, pool):
    """``(resident, None)`` to run this job in, or ``(None, why)`` when a warm one is missing.

    The client says ``warm`` when it saw every process of the group alive just before: a
    process missing now must not be replaced by a fresh one alone (it would wait for the
    others to join a rendezvous they left long ago), so the job fails and the group is rebuilt.
    """
    with _LOCK:
        old = _RESIDENTS.get(pool.id)
        if old is not None and old.alive() and old.signature == _signature(spec):
            return old, None
        if old is not None:
            del _RESIDENTS[pool.id]
    why = None
    if old is not None:
        why = (old.proc.poll(), tail(old.stderr, limit=4096))
        old.kill()
    if pool.warm:
        return None, why or (None, "")
    resident = _spawn(worker, spec, pool)
    with _LOCK:
        _RESIDENTS[pool.id] = resident
    return resident, None


def _gone(spec, address, why):
    """The result of a job whose warm pooled process had ended between jobs."""
    returncode, stderr = why
    message = (
        f"the pool's rank process on this worker ended between jobs (exit code {returncode}); "
        "the pool starts fresh processes on the next attempt"
    )
    error = RankError(time.time(), "RankPoolError", message, "", None)
    return RankResult(
        spec.rank, RankStatus.ERROR, address, returncode, "", stderr, time.time(), error=error
    )


def _job(files, spec, run_env):
    return {
        "payload": files.payload,
        "result": files.result,
        "env": {
            **run_env,
            _env.ENV_METRICS_FILE: files.metrics,
            _env.ENV_CHECKPOINT_DIR: spec.checkpoint_dir or "",
        },
    }


def pool_rank_task(payload, spec, token, pool, feeds=None, held=None):
    """On a worker: run one job of a pool in its resident rank process (started if needed).

    ``token`` is the pool's token on this worker (an argument so that it is here);
    ``pool`` is the :class:`PooledJob`. ``feeds``: the job's
    datasets and ``held``, as for :func:`~._worker.rank_task` (a spool of this job's
    own).

    Returns
    -------
    RankResult
    """
    from distributed import get_worker

    worker = get_worker()
    resident, why = _resident_for(worker, spec, pool)
    if resident is None:
        return _gone(spec, worker.address, why)
    files = RankFiles.create(resident.folder, spec.rank, payload)
    feeder = None
    try:
        start = resident.offsets()
        relay = MetricsRelay(worker, spec, files.metrics)
        stopped = None
        feeder, spool_env = start_feeder(files.folder, spec, feeds, held, worker)
        if resident.send(_job(files, spec, {**pool.env, **spool_env})):
            stopped = watch(resident.proc, files, spec, relay, persistent=True)
        relay.forward()
        if stopped is not None:
            _forget(pool.id, resident)  # timed out or aborted: as a one-job rank, killed
        returncode = resident.proc.poll()
        logs = (tail(resident.stdout, start=start[0]), tail(resident.stderr, start=start[1]))
        res = rank_result(
            spec, worker.address, files, returncode, stopped, time.time(), relay.records, logs
        )
        if res.status is not RankStatus.OK or not resident.alive():
            _forget(pool.id, resident)
            res = dataclasses.replace(res, returncode=resident.proc.returncode)
        return res
    finally:
        if feeder is not None:
            feeder.stop()
        files.remove()


def _forget(pool_id, resident):
    with _LOCK:
        if _RESIDENTS.get(pool_id) is resident:
            del _RESIDENTS[pool_id]
    resident.kill()


def pool_status(pool_id):
    """``(pid, alive)`` of this worker's process of the pool, or None (via ``client.run``)."""
    with _LOCK:
        resident = _RESIDENTS.get(pool_id)
    if resident is None:
        return None
    return resident.proc.pid, resident.alive()


def pool_kill(pool_id):
    """Kill this worker's process of the pool; its pid, or None (via ``client.run``)."""
    with _LOCK:
        resident = _RESIDENTS.pop(pool_id, None)
    if resident is None:
        return None
    resident.kill()
    return resident.proc.pid
