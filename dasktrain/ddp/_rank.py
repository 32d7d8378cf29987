"""Entry point of one DDP rank process: ``python -m dasktrain.ddp._rank PAYLOAD RESULT``.

``python -m dasktrain.ddp._rank --pool`` is a pooled rank (:class:`~dasktrain.ddp.RankPool`):
it joins the group with its first job and then runs one job per line of stdin (see
:func:`_serve`), so later jobs pay neither the start-up, the imports nor the rendezvous.

The worker task in :mod:`dasktrain.ddp._worker` starts this module in a fresh process with the
environment of :mod:`dasktrain.ddp._env` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...). It sets
the torch thread count and device, joins the process group, runs ``train_fn`` and writes
``(RankStatus.OK, value)`` or ``(RankStatus.ERROR, RankError)`` to RESULT (cloudpickle). The
process group is destroyed on every path.

The rank starts in a private folder (so ``python -m`` puts no user folder on ``sys.path``)
and moves to the worker's folder (``_env.ENV_WORKDIR``) before ``train_fn`` runs. Rank 0
serves the rendezvous store on ``MASTER_ADDR:MASTER_PORT`` only, never on all interfaces.

Exit codes: 0 success, 1 ``train_fn`` (or setup) raised, ``EXIT_PORT_IN_USE`` when rank 0
could not bind ``MASTER_PORT`` (the launcher retries with a fresh port), ``EXIT_ORPHANED``
when the parent worker died. What it shares with the TensorFlow rank (the parent watch, the
folders, the payload run and its result, the exit) is in :mod:`._rank_process`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import traceback

from dasktrain.ddp import _env
from dasktrain.ddp._env import POOL_FLAG
from dasktrain.ddp._rank_process import (
    enter_workdir,
    exit_process,
    flush,
    job_timeout,
    num_threads,
    port_in_use,
    run_payload,
    watch_parent,
)
from dasktrain.ddp._sockets import bind_listener

# Rank 0's rendezvous socket: the store serves on its file descriptor, so it must stay open.
_listener = None


def _store(rank, world_size, timeout):
    """The rendezvous store; rank 0 serves it on ``MASTER_ADDR:MASTER_PORT`` only.

    ``init_method="env://"`` would make rank 0 listen on every interface (``::``). A socket
    bound to the address of rank 0's worker is handed to the store instead.
    """
    import torch.distributed as dist

    global _listener
    host, port = os.environ[_env.MASTER_ADDR], int(os.environ[_env.MASTER_PORT])
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, timeout)
    _listener = bind_listener(host, port)  # OSError "Address already in use": see main()
    try:
        return dist.TCPStore(
            host,
            port,
            world_size,
            True,
            timeout,
            wait_for_workers=False,
            master_listen_fd=_listener.fileno(),
        )
    except TypeError:  # pragma: no cover - a torch without master_listen_fd
        _listener.close()
        sys.stderr.write(
            "dasktrain.ddp: this torch cannot serve the store on a given socket; "
            "it listens on all interfaces\n"
        )
        return dist.TCPStore(host, port, world_size, True, timeout, wait_for_workers=False)


def _choose_device(torch, backend):
    """Set torch's threads and this rank's device (``ENV_DEVICE``, read by rank_info)."""
    nthreads = num_threads()
    if nthreads > 0:
        # One torch thread per Dask worker thread: the worker's share of the machine.
        torch.set_num_threads(nthreads)
    if backend != "nccl":
        os.environ[_env.ENV_DEVICE] = "cpu"
        return
    local_rank = int(os.environ.get(_env.LOCAL_RANK, 0))
    # dask-cuda gives each worker CUDA_VISIBLE_DEVICES with its own GPU first, so device 0
    # is that worker's GPU; without it, pick the GPU by local rank (torchrun's rule).
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        index = 0
    else:
        index = local_rank % max(1, torch.cuda.device_count())
    torch.cuda.set_device(index)
    os.environ[_env.ENV_DEVICE] = f"cuda:{index}"


def _join_group(rank, world_size, backend):
    """Join the process group; False when rank 0 found MASTER_PORT taken."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=job_timeout())
    try:
        store = _store(rank, world_size, timeout)
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
    except Exception as exc:
        if rank == 0 and port_in_use(exc):
            sys.stderr.write(f"dasktrain.ddp: MASTER_PORT in use: {exc}\n")
            return False
        raise
    return True


def _leave_group():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            traceback.print_exc()


def _run(payload_path, result_path, rank, world_size, backend, *, join=True, leave=True):
    """Join (unless ``join`` is False), run ``train_fn``, write its outcome; the exit code.

    A pooled rank (:func:`_serve`) joins once and keeps the group between jobs (``leave``
    False) unless ``train_fn`` failed: then the process exits and the group goes with it.
    """

    def joined():
        if join and not _join_group(rank, world_size, backend):
            return None
        return contextlib.nullcontext()

    code = 1
    try:
        code = run_payload(payload_path, result_path, joined)
        return code
    finally:
        if leave or code != 0:
            _leave_group()
        flush()


def _apply_job(job, previous):
    """Set one pooled job's environment (and forget the previous job's); enter the workdir.

    Returns the names this job set, for the next call.
    """
    for name in previous:
        os.environ.pop(name, None)
    os.environ.update(job["env"])
    workdir = os.environ.get(_env.ENV_WORKDIR)
    if workdir and os.path.isdir(workdir):
        os.chdir(workdir)
    return list(job["env"])


def _serve(rank, world_size, backend):
    """Pool mode: run one job per line of stdin (JSON from the worker) until EOF.

    Only the worker that started this process can write to its stdin (a pipe), so payloads
    come from the launcher as in a one-job rank. The process leaves when its stdin closes (the
    worker let go of it), when its parent dies (``_rank_process.watch_parent``), when a job
    failed or when ``train_fn`` destroyed the process group: a later job never runs in a
    doubtful group.
    """
    import json

    import torch.distributed as dist

    previous, joined = [], False
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        job = json.loads(line)
        previous = _apply_job(job, previous)
        code = _run(
            job["payload"], job["result"], rank, world_size, backend, join=not joined, leave=False
        )
        joined = True
        if code != 0 or not dist.is_initialized():
            return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    watch_parent()

    import torch

    enter_workdir()
    backend = os.environ[_env.ENV_BACKEND]
    _choose_device(torch, backend)
    rank, world_size = int(os.environ[_env.RANK]), int(os.environ[_env.WORLD_SIZE])
    if argv[0] == POOL_FLAG:
        return _serve(rank, world_size, backend)
    payload_path, result_path = argv[0], argv[1]
    return _run(payload_path, result_path, rank, world_size, backend)


if __name__ == "__main__":
    exit_process(main)
