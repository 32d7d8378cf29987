"""What runs on a Dask worker for a DDP job: the port probe and the task that supervises a rank.

:func:`rank_task` starts ``python -m dasktrain.ddp._rank`` in a fresh process (training does
not run in the worker's thread pool, and a crash cannot take the worker down), forwards the
metrics the rank writes with :func:`~dasktrain.ddp.report` through ``Worker.log_event``, and
kills the process when the client sets the attempt's abort event, on timeout, or once the rank
has written its result and does not exit. Its stdout/stderr are captured to files and handed
back (the last 64 KiB) in a :class:`~._records.RankResult`. What it shares with the pooled
rank task (the files, the command, the watch, the result) is in :mod:`._supervise`.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

from ..exceptions import DDPError
from . import _env
from ._feeder import start_feeder
from ._sockets import bind_listener, host_of
from ._supervise import MetricsRelay, RankFiles, rank_command, rank_result, tail, watch

__all__ = ["probe_port", "rank_task"]


def probe_port(port_range=None):
    """On the rank-0 worker: a free TCP port on its address, and its GPU count.

    The port is checked on the address the rendezvous will listen on (the worker's own, see
    ``MASTER_ADDR``), not on all interfaces.
    """
    from distributed import get_worker

    from .._compat import gpu_count

    host = host_of(get_worker().address)

    def free(port):
        with bind_listener(host, port) as s:
            return s.getsockname()[1]

    if port_range is None:
        return free(0), gpu_count()
    candidates = list(range(port_range[0], port_range[1] + 1))
    random.shuffle(candidates)
    for candidate in candidates:
        try:
            return free(candidate), gpu_count()
        except OSError:
            continue
    raise DDPError(
        f"no free port in port_range={tuple(port_range)!r} on the rank-0 worker; "
        "widen the range or pass port_range=None to let the OS choose."
    )


def rank_task(payload, spec, feeds=None, held=None):
    """On a worker: start the rank of ``spec``, relay its metrics, stop it on abort or timeout.

    ``feeds`` (the job's ``datasets=``, pickled once on the client) starts the feeder that
    makes the chunks this rank reads (:mod:`._feeder`), for as long as the rank runs;
    ``held`` names the published futures of the persisted data they read.

    Returns
    -------
    RankResult
    """
    from distributed import get_worker

    worker = get_worker()
    files = RankFiles.create(worker.local_directory, spec.rank, payload)
    feeder = None
    try:
        env = _env.rank_environ(
            spec,
            environ=os.environ,
            nthreads=worker.state.nthreads,
            metrics_file=files.metrics,
            host=host_of(worker.address),
        )
        feeder, spool_env = start_feeder(files.folder, spec, feeds, held, worker)
        env.update(spool_env)
        relay = MetricsRelay(worker, spec, files.metrics)
        returncode, status, end_time = _run_process(files, env, spec, relay)
        relay.forward()
        logs = (tail(files.stdout), tail(files.stderr))
        return rank_result(
            spec, worker.address, files, returncode, status, end_time, relay.records, logs
        )
    finally:
        if feeder is not None:
            feeder.stop()
        files.remove()


def _run_process(files, env, spec, relay):
    """Run the rank process until it ends or must be stopped: ``(returncode, status, end)``.

    ``status`` is TIMEOUT or ABORTED when the task stopped it, else None (decided from what the
    rank wrote). Whatever happens here, the rank process does not outlive this task.
    """
    argv, cwd = rank_command(files.folder, spec.module)
    with open(files.stdout, "wb") as out, open(files.stderr, "wb") as err:
        proc = subprocess.Popen(
            [*argv, files.payload, files.result], stdout=out, stderr=err, env=env, cwd=cwd
        )
        try:
            status = watch(proc, files, spec, relay)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode, status, time.time()
