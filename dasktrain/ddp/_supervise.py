"""What supervising a rank process takes, shared by the one-job rank task (:mod:`._worker`)
and the pooled one (:mod:`._pool_worker`): its private folder and files, its command line,
the watch loop (metrics relay, abort event, timeout, the grace after its result), and its
:class:`~._records.RankResult` from what it wrote.

The rank process itself is ``python -m dasktrain.ddp._rank`` (or ``RankSpec.module``); the two
tasks differ only in whether it is started for the job or handed the job through its stdin.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import NamedTuple

from .._dask.events import DDP_TOPIC_PREFIX, emit
from . import _env
from ._records import RankResult, RankStatus

__all__ = ["RankFiles", "MetricsRelay", "rank_command", "watch", "rank_result", "tail"]

# Bytes of each rank's stdout/stderr kept in the result (the end of the stream).
LOG_BYTES = 64 * 1024
# How often the worker task looks at the abort event (a scheduler round trip).
_ABORT_POLL_S = 0.25
# Seconds a rank may take to exit after writing its result before it is killed.
EXIT_GRACE_S = 5.0
# The dashboard page's view of a rank: its last log lines, sent at most this often.
_LINES, _LINES_EVERY_S = 5, 1.0


class RankFiles(NamedTuple):
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


class MetricsRelay:
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
    return [ln for ln in tail(path, nbytes).splitlines() if ln.strip()][-n:]


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
    folder for ``train_fn`` (see :mod:`dasktrain.ddp._rank_process`).
    """
    return [sys.executable, "-P", "-m", module], workdir


def watch(proc, files, spec, relay, *, persistent=False):
    """Poll the rank process; return TIMEOUT, ABORTED or None (it exited or finished).

    ``persistent``: a pooled rank stays alive after its result (see :mod:`._pool_worker`), so the
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


def rank_result(spec, address, files, returncode, stopped, end_time, records, logs):
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


def tail(path, limit=LOG_BYTES, start=0):
    """The last ``limit`` bytes of ``path`` written after byte ``start`` (decoded)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
