"""Entry point of one DDP rank process: ``python -m dasktrain.ddp._rank PAYLOAD RESULT``.

The worker task in :mod:`dasktrain.ddp.launcher` starts this module in a fresh process with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` set. It sets the torch thread count and device, joins the process group, runs
``train_fn`` and writes ``("ok", value)`` or ``("error", info)`` to RESULT (cloudpickle). The
process group is destroyed on every path.

The rank starts in a private folder (so ``python -m`` puts no user folder on ``sys.path``)
and moves to the worker's folder (``DASKTRAIN_DDP_WORKDIR``) before ``train_fn`` runs. Rank 0
serves the rendezvous store on ``MASTER_ADDR:MASTER_PORT`` only, never on all interfaces.

Exit codes: 0 success, 1 ``train_fn`` (or setup) raised, ``EXIT_PORT_IN_USE`` when rank 0
could not bind ``MASTER_PORT`` (the launcher retries with a fresh port), ``EXIT_ORPHANED``
when the parent worker died.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
import traceback

from dasktrain.ddp.helpers import (
    ENV_BACKEND,
    ENV_DEVICE,
    ENV_NUM_THREADS,
    ENV_TIMEOUT,
    ENV_WORKDIR,
    EXIT_ORPHANED,
    EXIT_PORT_IN_USE,
    bind_listener,
)

# Rank 0's rendezvous socket: the store serves on its file descriptor, so it must stay open.
_listener = None


def _watch_parent(parent_pid):
    # If the Dask worker that started us dies (killed, OOM), nobody would ever stop this rank:
    # it would sit in an all-reduce forever. Poll the parent and leave with it.
    while True:
        if os.getppid() != parent_pid:
            os._exit(EXIT_ORPHANED)
        time.sleep(0.5)


def _port_in_use(exc):
    text = str(exc).lower()
    return "address already in use" in text or "eaddrinuse" in text or "errno 98" in text


def _enter_workdir():
    """Move to the worker's folder, keeping it (and the start folder) off ``sys.path``."""
    start = os.getcwd()
    # Python < 3.11 has no -P: `python -m` put the start folder (private, empty of modules)
    # first on sys.path; drop it, and '' (the current folder, whatever it becomes).
    sys.path[:] = [p for p in sys.path if p not in ("", start)]
    workdir = os.environ.get(ENV_WORKDIR)
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            sys.stderr.write(f"dasktrain.ddp: staying in {start}: cannot enter {workdir}: {exc}\n")


def _store(rank, world_size, timeout):
    """The rendezvous store; rank 0 serves it on ``MASTER_ADDR:MASTER_PORT`` only.

    ``init_method="env://"`` would make rank 0 listen on every interface (``::``). A socket
    bound to the address of rank 0's worker is handed to the store instead.
    """
    import torch.distributed as dist

    global _listener
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
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


def _write_result(path, payload):
    import cloudpickle

    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        cloudpickle.dump(payload, fh)
    os.replace(tmp, path)


def _error_info(exc):
    import cloudpickle

    info = {
        # When it failed: the launcher blames the rank that failed first (the others usually
        # fail after it, with "connection closed by peer" from the collective).
        "time": time.time(),
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "exception": None,
    }
    try:
        # Keep the original exception object when it pickles, so DDPError can chain it.
        info["exception"] = cloudpickle.dumps(exc)
    except Exception:
        pass
    return info


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    payload_path, result_path = argv[0], argv[1]
    parent = int(os.environ.get("DASKTRAIN_DDP_PARENT_PID", os.getppid()))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()

    import cloudpickle
    import torch
    import torch.distributed as dist

    _enter_workdir()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    nthreads = int(os.environ.get(ENV_NUM_THREADS, "0") or 0)
    if nthreads > 0:
        # One torch thread per Dask worker thread: the worker's share of the machine.
        torch.set_num_threads(nthreads)
    backend = os.environ[ENV_BACKEND]
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        # dask-cuda gives each worker CUDA_VISIBLE_DEVICES with its own GPU first, so device 0
        # is that worker's GPU; without it, pick the GPU by local rank (torchrun's rule).
        if os.environ.get("CUDA_VISIBLE_DEVICES"):
            index = 0
        else:
            index = local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        os.environ[ENV_DEVICE] = f"cuda:{index}"
    else:
        os.environ[ENV_DEVICE] = "cpu"

    timeout = datetime.timedelta(seconds=float(os.environ.get(ENV_TIMEOUT, "600")))
    code = 0
    try:
        try:
            store = _store(rank, world_size, timeout)
            dist.init_process_group(
                backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
            )
        except Exception as exc:
            if rank == 0 and _port_in_use(exc):
                sys.stderr.write(f"dasktrain.ddp: MASTER_PORT in use: {exc}\n")
                return EXIT_PORT_IN_USE
            raise
        with open(payload_path, "rb") as fh:
            fn, args, kwargs = cloudpickle.load(fh)
        value = fn(*args, **kwargs)
        _flush()
        # The result goes first: the launcher acts on it at once and gives the process a
        # short grace to leave the group and exit (see _EXIT_GRACE_S in the launcher).
        _write_result(result_path, ("ok", value))
    except BaseException as exc:  # noqa: BLE001 - report everything, including SystemExit
        traceback.print_exc()
        _flush()
        try:
            _write_result(result_path, ("error", _error_info(exc)))
        except Exception:
            traceback.print_exc()
        code = 1
    finally:
        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                traceback.print_exc()
        _flush()
    return code


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


if __name__ == "__main__":
    exit_code = main()
    _flush()
    # Skip the interpreter's teardown (torch's atexit hooks, thread joins): the result and the
    # logs are written, and a slow exit only delays the job.
    os._exit(exit_code)
