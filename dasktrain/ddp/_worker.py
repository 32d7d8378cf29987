"""What runs on a Dask worker for a DDP job: the port probe and the task that supervises a rank.

:func:`rank_task` starts ``python -m dasktrain.ddp._rank`` in a fresh process (training does
not run in the worker's thread pool, and a crash cannot take the worker down), forwards the
metrics the rank writes with :func:`~dasktrain.ddp.report` through ``Worker.log_event``, and
kills the process when the client sets the attempt's abort event, on timeout, or once the rank
has written its result and does not exit. Its stdout/stderr are captured to files and handed
back (the last 64 KiB) in a :class:`~._records.RankResult`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

from .._dask.events import DDP_TOPIC_PREFIX, emit
from ..exceptions import DDPError
from . import _env
from ._feeder import start_feeder
from ._records import RankResult, RankStatus
from ._sockets import bind_listener

__all__ = ["probe_port", "rank_task"]

# Bytes of each rank's stdout/stderr kept in the result (the end of the stream).
LOG_BYTES = 64 * 1024
# How often the worker task looks at the abort event (a scheduler round trip).
_ABORT_POLL_S = 0.25
# Seconds a rank may take to exit after writing its result before it is killed.
EXIT_GRACE_S = 5.0
# The dashboard page's view of a rank: its last log lines, sent at most this often.
_LINES, _LINES_EVERY_S = 5, 1.0


def _host(address):
    from distributed.comm import get_address_host

    return get_address_host(address)


def probe_port(port_range=None):
    """On the rank-0 worker: a free TCP port on its address, and its GPU count.

    The port is checked on the address the rendezvous will listen on (the worker's own, see
    ``MASTER_ADDR``), not on all interfaces.
    """
    from distributed import get_worker

    from .._compat import gpu_count

    host = _host(get_worker().address)

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


class _RankFiles(NamedTuple):
    """The private folder of one rank process and the files in it."""

    folder: str
    payload: str
    result: str
    metrics: str
    stdout: str
    stderr: str

    @classmethod
    def create(cls, parent, rank, payload):
        folder = tempfile.mkdtemp(prefix=f"dasktrain-ddp-r{rank}-", dir=parent)
        names = ("payload.pkl", "result.pkl", "metrics.jsonl", "stdout.txt", "stderr.txt")
        files = cls(folder, *(os.path.join(folder, n) for n in names))
        with open(files.payload, "wb") as fh:
            fh.write(payload)
        return files

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class _MetricsRelay:
    """Forwards the JSON lines a rank appends to its metrics file as Dask events."""

    def __init__(self, worker, spec, path):
        self.worker, self.topic, self.attempt, self.path = worker, spec.topic, spec.attempt, path
        self.rank = spec.rank
        self.shards = _held(spec.datasets, spec.rank)
        self.offset = 0
        self.records = []
        self._lines, self._next_lines = None, 0.0

    def show(self, pid, files):
        """At most every second: the rank's pid and last log lines, when they changed (a
        ``ddp-rank`` event for the dashboard page)."""
        now = time.monotonic()
        if now < self._next_lines:
            return
        self._next_lines = now + _LINES_EVERY_S
        lines = _last_lines(files.stdout) + _last_lines(files.stderr)
        if lines != self._lines:
            self._lines = lines
            emit(
                "ddp-rank",
                job=self.topic.removeprefix(DDP_TOPIC_PREFIX),
                attempt=self.attempt,
                rank=self.rank,
                pid=pid,
                lines=lines[-_LINES:],
                shards=self.shards,
            )

    def forward(self):
        """Send the complete lines written since the last call."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return  # a line still being written
        for line in data[: end + 1].splitlines():
            record = _parse(line)
            if record is not None:
                record["attempt"] = self.attempt
                self.records.append(record)
                self.worker.log_event(self.topic, record)
        self.offset += end + 1


def _held(datasets, rank):
    """``{dataset: "rows on this rank's worker of all rows"}`` of a job fed by Dask."""
    out = {}
    for name, meta in (datasets or {}).items():
        rows = meta.get("rows") or []
        mine = sum(r for r, o in zip(rows, meta.get("owners") or []) if o == rank)
        out[name] = f"{mine:,} of {sum(rows):,} rows here"
    return out


def _last_lines(path, n=_LINES, nbytes=2048):
    """The last ``n`` lines of a log file (its last ``nbytes``), decoded leniently."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - nbytes))
            data = fh.read()
    except OSError:
        return []
    return [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()][-n:]


def _parse(line):
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def rank_command(workdir, module="dasktrain.ddp._rank"):
    """argv of a rank process, and the directory it starts in.

    ``python -m`` puts its current directory first on ``sys.path``: started in the worker's
    folder, a stray ``cloudpickle.py`` or ``torch.py`` there would be imported by every rank.
    The rank starts in its own private folder (``workdir``, which holds no module) and with
    ``-P`` (nothing prepended to ``sys.path``). Not ``-I``: isolated mode
    also drops ``PYTHONPATH``, which deployments rely on. The rank then moves to the worker's
    folder for ``train_fn`` (see :mod:`dasktrain.ddp._rank`).
    """
    return [sys.executable, "-P", "-m", module], workdir


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
    files = _RankFiles.create(worker.local_directory, spec.rank, payload)
    feeder = None
    try:
        env = _env.rank_environ(
            spec,
            environ=os.environ,
            nthreads=worker.state.nthreads,
            metrics_file=files.metrics,
            host=_host(worker.address),
        )
        feeder, spool_env = start_feeder(files.folder, spec, feeds, held, worker)
        env.update(spool_env)
        relay = _MetricsRelay(worker, spec, files.metrics)
        returncode, status, end_time = _supervise(files, env, spec, relay)
        relay.forward()
        logs = (_tail(files.stdout), _tail(files.stderr))
        return _result(
            spec, worker.address, files, returncode, status, end_time, relay.records, logs
        )
    finally:
        if feeder is not None:
            feeder.stop()
        files.remove()


def _supervise(files, env, spec, relay):
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
            status = _watch(proc, files, spec, relay)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode, status, time.time()


def _watch(proc, files, spec, relay, *, persistent=False):
    """Poll the rank process; return TIMEOUT, ABORTED or None (it exited or finished).

    ``persistent``: a pooled rank stays alive after its result (see ``_pool_worker``), so the
    result alone ends the watch.
    """
    from distributed import Event

    abort = Event(spec.abort)
    deadline = time.monotonic() + spec.timeout
    last_check, exit_deadline = 0.0, None
    while True:
        exited = proc.poll() is not None
        relay.forward()
        relay.show(proc.pid, files)
        if exited:
            return None
        now = time.monotonic()
        if persistent and os.path.exists(files.result):
            return None
        if exit_deadline is None and os.path.exists(files.result):
            # train_fn is done (or failed): give the process a moment to leave the group and
            # exit, but don't let a slow teardown delay the job's verdict.
            exit_deadline = now + EXIT_GRACE_S
        if exit_deadline is not None and now > exit_deadline:
            return None
        if now > deadline:
            return RankStatus.TIMEOUT
        if now - last_check >= _ABORT_POLL_S:
            last_check = now
            if abort.is_set():
                return RankStatus.ABORTED
        time.sleep(0.05)


def _read_outcome(path):
    """``(value, written, error)`` from the result file the rank wrote (if it did)."""
    if not os.path.exists(path):
        return None, False, None
    import cloudpickle

    with open(path, "rb") as fh:
        status, content = cloudpickle.load(fh)
    if status == RankStatus.OK:
        return content, True, None
    return None, False, content


def _final_status(stopped, error, written, returncode):
    """The rank's status from how the task stopped it and what the rank wrote."""
    if error is not None:
        return RankStatus.ERROR  # it failed on its own before any abort or timeout
    if stopped is not None:
        return stopped
    if written:
        return RankStatus.OK  # even if a slow exit was cut short after the result was written
    if returncode == _env.EXIT_PORT_IN_USE:
        return RankStatus.PORT_IN_USE
    return RankStatus.ERROR


def _result(spec, address, files, returncode, stopped, end_time, records, logs):
    """The RankResult of a supervised run; ``logs`` is ``(stdout, stderr)`` (their ends)."""
    value, written, error = _read_outcome(files.result)
    return RankResult(
        rank=spec.rank,
        status=_final_status(stopped, error, written, returncode),
        worker=address,
        returncode=returncode,
        stdout=logs[0],
        stderr=logs[1],
        end_time=end_time,
        value=value,
        error=error,
        records=records,
    )


def _tail(path, limit=LOG_BYTES, start=0):
    """The last ``limit`` bytes of ``path`` written after byte ``start`` (decoded)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
