"""What every rank process does, whatever trains in it: the torch rank (:mod:`._rank`, one job
or a pool's jobs) and the TensorFlow one (:mod:`._tf_rank`).

Around its framework's own set-up, a rank process started by the worker task
(:mod:`._worker`, :mod:`._pool_worker`): leaves when its parent worker dies
(:func:`watch_parent`), moves from its private start folder to the worker's folder without
putting either on ``sys.path`` (:func:`enter_workdir`), runs ``train_fn`` from the payload
file and writes ``(RankStatus.OK, value)`` or ``(RankStatus.ERROR, RankError)`` to the result
file (:func:`run_payload`), and ends with :func:`exit_process` (no interpreter teardown). The
job's settings that the launcher puts in its environment are read here too
(:func:`num_threads`, :func:`job_timeout`).

Exit codes (:mod:`._env`): 0 success, 1 ``train_fn`` (or set-up) raised, ``EXIT_PORT_IN_USE``
when a port it had to bind was taken (the launcher retries with a fresh port),
``EXIT_ORPHANED`` when the parent worker died.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from dasktrain import _config
from dasktrain.ddp import _env
from dasktrain.ddp._env import EXIT_ORPHANED, EXIT_PORT_IN_USE
from dasktrain.ddp._records import RankError, RankStatus

__all__ = [
    "watch_parent",
    "enter_workdir",
    "port_in_use",
    "run_payload",
    "report_error",
    "write_result",
    "flush",
    "exit_process",
    "num_threads",
    "job_timeout",
]


def watch_parent():
    """Leave (``EXIT_ORPHANED``) once the worker that started this process is gone."""
    parent = int(os.environ.get(_env.ENV_PARENT_PID, os.getppid()))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent_pid):
    # If the Dask worker that started us dies (killed, OOM), nobody would ever stop this rank:
    # it would sit in an all-reduce forever. Poll the parent and leave with it.
    while True:
        if os.getppid() != parent_pid:
            os._exit(EXIT_ORPHANED)
        time.sleep(0.5)


def enter_workdir():
    """Move to the worker's folder, keeping it (and the start folder) off ``sys.path``."""
    start = os.getcwd()
    # -P (see _supervise.rank_command) keeps the start folder off sys.path; an empty PYTHONPATH
    # entry still puts '' there (the current folder, whatever it becomes): drop it, and the
    # start folder should anything else have put it there.
    sys.path[:] = [p for p in sys.path if p not in ("", start)]
    workdir = os.environ.get(_env.ENV_WORKDIR)
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            sys.stderr.write(f"dasktrain.ddp: staying in {start}: cannot enter {workdir}: {exc}\n")


def num_threads():
    """Threads for the framework: the worker's share of the machine (0: its own default)."""
    return int(os.environ.get(_env.ENV_NUM_THREADS, "0") or 0)


def job_timeout():
    """Seconds the job may take (set by the launcher; ``dasktrain.ddp.timeout`` without it)."""
    value = os.environ.get(_env.ENV_TIMEOUT)
    return float(value) if value else float(_config.get("ddp.timeout"))


def port_in_use(exc):
    """Whether ``exc`` says a port was taken (a bind's ``EADDRINUSE``, in any wording)."""
    text = str(exc).lower()
    return "address already in use" in text or "eaddrinuse" in text or "errno 98" in text


def run_payload(payload_path, result_path, setup):
    """Run ``train_fn`` of the payload and write its outcome; the exit code.

    ``setup()`` readies the framework and gives the context manager ``train_fn`` runs in, or
    None when a port it binds was taken (``EXIT_PORT_IN_USE``). An exception anywhere,
    ``SystemExit`` included, is written as the rank's error (exit code 1).
    """
    import cloudpickle

    try:
        scope = setup()
        if scope is None:
            return EXIT_PORT_IN_USE
        with open(payload_path, "rb") as fh:
            fn, args, kwargs = cloudpickle.load(fh)
        with scope:
            value = fn(*args, **kwargs)
        flush()
        # The result goes first: the worker task acts on it at once and gives the process a
        # short grace to leave its group and exit (see _supervise.EXIT_GRACE_S).
        write_result(result_path, (RankStatus.OK, value))
        return 0
    except BaseException as exc:  # noqa: BLE001 - report everything, including SystemExit
        report_error(result_path, exc)
        return 1


def write_result(path, payload):
    """Write ``payload`` to ``path`` whole or not at all (the worker task polls for it)."""
    import cloudpickle

    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        cloudpickle.dump(payload, fh)
    os.replace(tmp, path)


def report_error(result_path, exc):
    """After ``train_fn`` raised: its traceback on stderr, then the error as the result."""
    traceback.print_exc()
    flush()
    try:
        write_result(result_path, (RankStatus.ERROR, _error_info(exc)))
    except Exception:
        traceback.print_exc()


def _error_info(exc):
    """The RankError of ``exc``, keeping the exception itself when it pickles."""
    import cloudpickle

    try:
        # Keep the original exception object when it pickles, so DDPError can chain it.
        pickled = cloudpickle.dumps(exc)
    except Exception:
        pickled = None
    return RankError(
        # When it failed: the launcher blames the rank that failed first (the others usually
        # fail after it, with "connection closed by peer" from the collective).
        time=time.time(),
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        exception=pickled,
    )


def flush():
    """Flush stdout and stderr, whatever state they are in."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def exit_process(main):
    """``main()``'s exit code, after flushing, without the interpreter's teardown.

    The result and the logs are written; torch's atexit hooks, thread joins or TensorFlow's
    collective executor (which may wait on peers that left) would only delay the job.
    """
    code = main()
    flush()
    os._exit(code)
