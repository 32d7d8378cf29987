"""Launch a PyTorch DistributedDataParallel job on Dask workers, and its one-process twin.

How :func:`run` works
---------------------
1. Pick the workers (a count, a list of addresses, or all), lock each one with a
   :class:`distributed.Lock` named after its address so two jobs never share a worker, and
   order them by host then address: rank ``i`` is the ``i``-th worker, ``LOCAL_RANK`` counts
   ranks on the same host.
2. Run a tiny task on the rank-0 worker that binds port 0 (or a port of ``port_range``) to
   find a free ``MASTER_PORT`` there, and counts its GPUs for ``backend="auto"``.
   ``MASTER_ADDR`` is the rank-0 worker's host as the scheduler knows it, so every rank can
   reach it.
3. Submit one task per worker (``pure=False``, pinned with ``allow_other_workers=False``).
   The task starts ``python -m dasktrain.ddp._rank`` in a fresh process (training does not
   run in the worker's thread pool), forwards the metrics the rank writes with
   :func:`~dasktrain.ddp.report` through ``Worker.log_event``, and kills the process when
   the client sets the attempt's abort :class:`distributed.Event`, on ``timeout``, or when
   the rank exits. Per-rank stdout/stderr are captured to files and returned.
4. The client watches all rank futures and the worker list. When a rank fails or its worker
   leaves, it sets the abort event, collects the survivors' logs, and either restarts the
   whole group (``max_restarts``, fresh port, workers chosen again from the live ones) or
   raises :class:`~dasktrain.exceptions.DDPError`.

:func:`run_local` is the ``engine="local"`` twin: the same ``train_fn`` in the calling
process, world size 1, no process group, no Dask.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from .. import _config
from ..exceptions import DDPError, ValidationError
from . import helpers as _helpers

logger = logging.getLogger(__name__)

__all__ = ["run", "run_local", "DDPResult"]

BACKENDS = ("auto", "gloo", "nccl")
_TAIL_LINES = 20
# Bytes of each rank's stdout/stderr kept in the result (the end of the stream).
_LOG_BYTES = 64 * 1024
# How often the worker task looks at the abort event (a scheduler round trip).
_ABORT_POLL_S = 0.25
# How long the client waits for aborted ranks to hand back their logs.
_TEARDOWN_WAIT_S = 10.0
_PORT_RETRIES = 3
# Seconds a rank may take to exit after writing its result before it is killed.
_EXIT_GRACE_S = 5.0


class DDPResult(dict):
    """``{rank: return value of train_fn}``, plus what happened on the way.

    A plain dict for the results (so ``run(...)[0]`` works), with attributes:

    Attributes
    ----------
    logs : dict[int, dict]
        Per rank: ``worker`` (address), ``host``, ``returncode``, ``stdout``, ``stderr`` (the
        last 64 KiB of each; ``None`` under :func:`run_local`, which does not capture).
    history : list of dict
        Every :func:`~dasktrain.ddp.report` record in arrival order, each with ``rank``,
        ``time`` and ``attempt`` (0 for the first group, 1 after the first restart...).
    attempts : int
        How many process groups were started (1 + restarts).
    failures : list of str
        One line per attempt that failed and was restarted.
    workers : dict[int, str]
        The worker address of each rank in the final attempt.
    """

    def __init__(
        self, values=(), *, logs=None, history=None, attempts=1, failures=None, workers=None
    ):
        super().__init__(values)
        self.logs = logs or {}
        self.history = history or []
        self.attempts = attempts
        self.failures = failures or []
        self.workers = workers or {}

    def __repr__(self):
        return f"DDPResult({dict.__repr__(self)}, attempts={self.attempts})"


# --------------------------------------------------------------------------------------------
# Tasks that run on the workers
# --------------------------------------------------------------------------------------------


def _probe(port_range=None):
    """On the rank-0 worker: a free TCP port on its address, and its GPU count.

    The port is checked on the address the rendezvous will listen on (the worker's own, see
    ``MASTER_ADDR``), not on all interfaces.
    """
    from distributed import get_worker

    from .._compat import gpu_count

    host = _host(get_worker().address)

    def free(port):
        with _helpers.bind_listener(host, port) as s:
            return s.getsockname()[1]

    if port_range is None:
        port = free(0)
    else:
        low, high = port_range
        candidates = list(range(low, high + 1))
        random.shuffle(candidates)
        port = None
        for candidate in candidates:
            try:
                port = free(candidate)
                break
            except OSError:
                continue
        if port is None:
            raise DDPError(
                f"no free port in port_range={tuple(port_range)!r} on the rank-0 worker; "
                "widen the range or pass port_range=None to let the OS choose."
            )
    return port, gpu_count()


def _tail_bytes(path, limit=_LOG_BYTES):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _forward_metrics(worker, topic, path, offset, records, attempt):
    """Send the complete JSON lines appended to ``path`` since ``offset`` as Dask events."""
    import json

    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n")
    if end < 0:
        return offset  # a line still being written
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        record["attempt"] = attempt
        records.append(record)
        worker.log_event(topic, record)
    return offset + end + 1


def _rank_environ(worker_environ):
    """The environment a rank process starts from: the worker's, without the malloc trim knob.

    A Dask nanny gives its worker ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``): right for a worker that frees many small
    buffers, but in a rank it makes glibc hand torch's large activation buffers back to the OS
    on every step, which cost about 25% of the training speed against the same loop in a plain
    process (resnet18 on 64x64 images, 1 thread: 66 vs 85 samples/s). The thread-count
    variables the nanny sets are kept (the rank sets ``OMP_NUM_THREADS`` itself); ``env=`` of
    :func:`run` can still set the knob on purpose.
    """
    env = dict(worker_environ)
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


def _network_environ(host, env):
    """``GLOO_SOCKET_IFNAME`` for a rank on the worker at ``host``.

    gloo picks its address from the host name, which often resolves to a loopback address
    (Debian and Ubuntu map it to 127.0.1.1): peers on other hosts then get told to connect to
    127.0.0.1 and the full-mesh connect fails. The worker's own address is the one the other
    hosts reach, so its interface is the one to use. A value already in ``env`` (the worker's
    environment or ``env=`` of :func:`run`) wins. NCCL picks its interface by its own rules,
    not from the host name; it is not changed here (``NCCL_SOCKET_IFNAME`` through ``env=``).
    """
    if "GLOO_SOCKET_IFNAME" in env:
        return {}
    ifname = _helpers.interface_of(host)
    if ifname is None:
        logger.warning(
            "ddp: no network interface of this machine carries the worker address "
            "%s; gloo will pick one from the host name. Set GLOO_SOCKET_IFNAME "
            "(env=) if the ranks cannot connect.",
            host,
        )
        return {}
    return {"GLOO_SOCKET_IFNAME": ifname}


def _rank_command(workdir):
    """argv of a rank process, and the directory it starts in.

    ``python -m`` puts its current directory first on ``sys.path``: started in the worker's
    folder, a stray ``cloudpickle.py`` or ``torch.py`` there would be imported by every rank.
    The rank starts in its own private folder (``workdir``, which holds no module) and, on
    Python >= 3.11, with ``-P`` (nothing prepended to ``sys.path``). Not ``-I``: isolated mode
    also drops ``PYTHONPATH``, which deployments rely on. The rank then moves to the worker's
    folder for ``train_fn`` (see :mod:`dasktrain.ddp._rank`).
    """
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *flags, "-m", "dasktrain.ddp._rank"], workdir


def _rank_task(payload, spec):
    """On a worker: start the rank process, relay its metrics, stop it on abort or timeout."""
    from distributed import Event, get_worker

    worker = get_worker()
    nthreads = worker.state.nthreads
    rank = spec["rank"]
    tmp = tempfile.mkdtemp(prefix=f"dasktrain-ddp-r{rank}-", dir=worker.local_directory)
    payload_path = os.path.join(tmp, "payload.pkl")
    result_path = os.path.join(tmp, "result.pkl")
    metrics_path = os.path.join(tmp, "metrics.jsonl")
    out_path = os.path.join(tmp, "stdout.txt")
    err_path = os.path.join(tmp, "stderr.txt")
    with open(payload_path, "wb") as fh:
        fh.write(payload)

    env = _rank_environ(os.environ)
    env.update(spec["env"])
    env.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(spec["world_size"]),
            "LOCAL_RANK": str(spec["local_rank"]),
            "LOCAL_WORLD_SIZE": str(spec["local_world_size"]),
            "MASTER_ADDR": spec["master_addr"],
            "MASTER_PORT": str(spec["master_port"]),
            "OMP_NUM_THREADS": str(nthreads),
            _helpers.ENV_NUM_THREADS: str(nthreads),
            _helpers.ENV_TIMEOUT: str(spec["timeout"]),
            "DASKTRAIN_DDP_PARENT_PID": str(os.getpid()),
            _helpers.ENV_BACKEND: spec["backend"],
            _helpers.ENV_METRICS_FILE: metrics_path,
            _helpers.ENV_CHECKPOINT_DIR: spec["checkpoint_dir"] or "",
            _helpers.ENV_WORKDIR: os.getcwd(),
        }
    )
    env.update(_network_environ(_host(worker.address), env))
    abort = Event(spec["abort"])
    topic = spec["topic"]
    records = []
    offset = 0
    status = None
    deadline = time.monotonic() + spec["timeout"]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        argv, cwd = _rank_command(tmp)
        proc = subprocess.Popen(
            [*argv, payload_path, result_path],
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
        )
        try:
            last_check = 0.0
            exit_deadline = None
            while True:
                returncode = proc.poll()
                offset = _forward_metrics(
                    worker, topic, metrics_path, offset, records, spec["attempt"]
                )
                if returncode is not None:
                    break
                now = time.monotonic()
                if exit_deadline is None and os.path.exists(result_path):
                    # train_fn is done (or failed): give the process a moment to leave the
                    # group and exit, but don't let a slow teardown delay the job's verdict.
                    exit_deadline = now + _EXIT_GRACE_S
                if exit_deadline is not None and now > exit_deadline:
                    break
                if now > deadline:
                    status = "timeout"
                    break
                if now - last_check >= _ABORT_POLL_S:
                    last_check = now
                    if abort.is_set():
                        status = "aborted"
                        break
                time.sleep(0.05)
        finally:
            # Whatever happened above (abort, timeout, an error in this loop), the rank
            # process must not outlive this task.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            end_time = time.time()
    offset = _forward_metrics(worker, topic, metrics_path, offset, records, spec["attempt"])

    value = error = None
    value_written = False
    if os.path.exists(result_path):
        import cloudpickle

        with open(result_path, "rb") as fh:
            kind, content = cloudpickle.load(fh)
        if kind == "ok":
            value, value_written = content, True
        else:
            error = content
    if error is not None:
        status = "error"  # it failed on its own before any abort or timeout
    elif status is None and value_written:
        status = "ok"  # even if a slow exit was cut short after the result was written
    elif status is None:
        if proc.returncode == _helpers.EXIT_PORT_IN_USE:
            status = "port-in-use"
        else:
            status = "error"
    result = {
        "rank": rank,
        "status": status,
        "end_time": end_time,
        "value": value,
        "error": error,
        "returncode": proc.returncode,
        "stdout": _tail_bytes(out_path),
        "stderr": _tail_bytes(err_path),
        "worker": worker.address,
        "records": records,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


def _check_args(backend, timeout, max_restarts, workers, port_range, env):
    if backend not in BACKENDS:
        raise ValidationError(f"backend={backend!r} must be one of {BACKENDS}.")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValidationError(f"timeout={timeout!r} must be a positive number of seconds.")
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ValidationError(f"max_restarts={max_restarts!r} must be an integer >= 0.")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, (int, list, tuple)):
            raise ValidationError(
                f"workers={workers!r} must be None (all workers), a count, or a list of "
                "worker addresses."
            )
        if isinstance(workers, int) and workers < 1:
            raise ValidationError(f"workers={workers!r} must be >= 1.")
        if isinstance(workers, (list, tuple)) and len(set(workers)) != len(workers):
            raise ValidationError(f"workers={workers!r} lists a worker twice.")
    if port_range is not None:
        ok = (
            isinstance(port_range, (list, tuple))
            and len(port_range) == 2
            and all(isinstance(p, int) for p in port_range)
            and 1024 <= port_range[0] <= port_range[1] <= 65535
        )
        if not ok:
            raise ValidationError(
                f"port_range={port_range!r} must be (low, high) with 1024 <= low <= high "
                "<= 65535, or None to let the OS pick a free port."
            )
    if env is not None and not (
        isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise ValidationError(f"env={env!r} must be a dict of str -> str.")


def _live_workers(client):
    # client.nthreads() asks the scheduler every time; client.scheduler_info() can return a
    # cached identity whose worker list a periodic refresh has just emptied.
    return set(client.nthreads())


def _host(address):
    from distributed.comm import get_address_host

    return get_address_host(address)


def _order(addresses):
    return sorted(addresses, key=lambda a: (_host(a), a))


def _lock(client, address):
    from distributed import Lock

    return Lock(f"dasktrain-ddp-worker-{address}", scheduler_rpc=client.scheduler, loop=client.loop)


class _Selection:
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


def _select_workers(client, workers, deadline, first, world_size=None):
    """Choose and lock the workers of one attempt (waits while they are busy or missing)."""
    preferred = list(workers) if isinstance(workers, (list, tuple)) else []
    while True:
        live = _live_workers(client)
        if world_size is not None:
            # A restart keeps the world size (waiting for replacements), so that the
            # checkpoint resumes the same run.
            need = world_size
        elif workers is None:
            need = len(live)
        elif isinstance(workers, int):
            need = workers
        else:
            need = len(preferred)
        if first:
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
        # Asked-for workers first; on a restart, other live workers replace the dead ones.
        candidates = [w for w in preferred if w in live]
        candidates += _order(live - set(candidates))
        chosen, locks = [], []
        for address in candidates:
            if len(chosen) == need:
                break
            lock = _lock(client, address)
            if lock.acquire(blocking=False):
                chosen.append(address)
                locks.append(lock)
        if len(chosen) == need and need > 0:
            return _Selection(_order(chosen), locks)
        _Selection(chosen, locks).release()
        if time.monotonic() > deadline:
            raise DDPError(
                f"could not lock {need} free workers within the timeout: {len(live)} live, "
                f"{len(chosen)} not busy with another dasktrain.ddp job. Wait for the other job, "
                "pass fewer workers, or raise timeout."
            )
        time.sleep(0.5)


class _Failure(Exception):
    def __init__(
        self,
        rank,
        worker,
        message,
        stderr="",
        cause=None,
        port_in_use=False,
        when=None,
        lost_worker=False,
    ):
        super().__init__(message)
        self.when = when
        self.lost_worker = lost_worker
        self.rank = rank
        self.worker = worker
        self.message = message
        self.stderr = stderr
        self.cause = cause
        self.port_in_use = port_in_use


def _stderr_tail(text, lines=_TAIL_LINES):
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def _failure_from_result(res):
    rank, worker = res["rank"], res["worker"]
    if res["status"] == "port-in-use":
        return _Failure(rank, worker, "MASTER_PORT was taken", res["stderr"], port_in_use=True)
    if res["status"] == "timeout":
        return _Failure(rank, worker, "timed out", res["stderr"])
    err = res["error"]
    cause = None
    when = err.get("time") if err is not None else None
    when = res.get("end_time") if when is None else when
    if err is not None:
        message = f"{err['type']}: {err['message']}"
        if err.get("exception") is not None:
            try:
                import cloudpickle

                cause = cloudpickle.loads(err["exception"])
            except Exception:
                cause = None
    else:
        message = f"the rank process exited with code {res['returncode']}"
        if res["returncode"] is not None and res["returncode"] < 0:
            message += f" (killed by signal {-res['returncode']})"
        # Every rank writes its result (or its error) before it exits; no result file means
        # the process left on its own first, which must never pass for a success.
        if res["returncode"] == 0:
            message += (
                " without delivering a result from train_fn (did it call os._exit() "
                "or end the process some other way before returning?)"
            )
    return _Failure(rank, worker, message, res["stderr"], cause=cause, when=when)


class _Attempt:
    """One process group: submit the ranks, watch them, tear them down."""

    def __init__(
        self,
        client,
        selection,
        payload,
        *,
        attempt,
        job,
        backend,
        timeout_s,
        env,
        checkpoint_dir,
        port_range,
    ):
        from distributed import Event

        self.client = client
        self.addresses = selection.addresses
        self.attempt = attempt
        self.abort = Event(f"dasktrain-ddp-abort-{job}-{attempt}", client=client)
        self.futures = {}
        self.results = {}
        self.payload_future = None
        self.port = None
        self._job = job
        self._options = dict(
            backend=backend,
            timeout_s=timeout_s,
            env=env,
            checkpoint_dir=checkpoint_dir,
            port_range=port_range,
            payload=payload,
        )

    def start(self):
        """Find the port, send the payload, submit one task per rank."""
        client, job, attempt = self.client, self._job, self.attempt
        opts = self._options
        backend, timeout_s = opts["backend"], opts["timeout_s"]
        port_future = client.submit(
            _probe,
            opts["port_range"],
            workers=[self.addresses[0]],
            allow_other_workers=False,
            pure=False,
            key=f"dasktrain-ddp-port-{job}-{attempt}",
        )
        try:
            port, n_gpus = port_future.result(timeout=max(1.0, timeout_s))
        except DDPError:
            raise
        except Exception as exc:
            # The rank-0 worker died or is unreachable: a failure like any other (restartable).
            raise _Failure(
                0, self.addresses[0], f"could not probe a free port ({exc!r})", cause=exc
            ) from exc
        if backend == "auto":
            backend = "nccl" if n_gpus > 0 else "gloo"
        self.backend = backend
        self.port = port
        master_addr = _host(self.addresses[0])
        hosts = [_host(a) for a in self.addresses]
        env, checkpoint_dir = opts["env"], opts["checkpoint_dir"]
        payload_future = client.scatter(
            opts["payload"], workers=self.addresses, broadcast=True, hash=False
        )
        self.payload_future = payload_future
        for rank, address in enumerate(self.addresses):
            same_host = [i for i, h in enumerate(hosts) if h == hosts[rank]]
            spec = {
                "rank": rank,
                "world_size": len(self.addresses),
                "local_rank": same_host.index(rank),
                "local_world_size": len(same_host),
                "master_addr": master_addr,
                "master_port": port,
                "backend": backend,
                "timeout": timeout_s,
                "env": env,
                "checkpoint_dir": checkpoint_dir,
                "abort": self.abort.name,
                "attempt": attempt,
                "topic": f"dasktrain-ddp-{job}",
            }
            self.futures[rank] = client.submit(
                _rank_task,
                payload_future,
                spec,
                workers=[address],
                allow_other_workers=False,
                pure=False,
                retries=0,
                key=f"dasktrain-ddp-rank{rank}-{job}-{attempt}",
            )
        logger.info(
            "ddp attempt %d: %d ranks on %s, backend=%s, MASTER_ADDR=%s MASTER_PORT=%d",
            attempt,
            len(self.addresses),
            self.addresses,
            backend,
            master_addr,
            port,
        )

    def watch(self, deadline):
        """Wait for all ranks; raise _Failure on the first failed rank or lost worker."""
        last_live_check = 0.0
        pending = dict(self.futures)
        while pending:
            for rank, future in list(pending.items()):
                if not future.done():
                    continue
                del pending[rank]
                if future.status != "finished":
                    exc = future.exception() if future.status == "error" else None
                    raise _Failure(
                        rank,
                        self.addresses[rank],
                        f"its task failed ({type(exc).__name__}: {exc})"
                        if exc is not None
                        else f"its task was {future.status}",
                        cause=exc,
                    )
                res = future.result()
                self.results[rank] = res
                if res["status"] != "ok":
                    raise _failure_from_result(res)
            if not pending:
                break
            now = time.monotonic()
            if now > deadline:
                raise _Failure(None, None, "the job ran past its timeout")
            if now - last_live_check >= 0.5:
                last_live_check = now
                live = _live_workers(self.client)
                for rank in pending:
                    if self.addresses[rank] not in live:
                        raise _Failure(
                            rank,
                            self.addresses[rank],
                            "its Dask worker left the cluster (killed or crashed)",
                            lost_worker=True,
                        )
            time.sleep(0.05)

    def teardown(self):
        """Abort the ranks still running and collect what they hand back (logs)."""
        running = [f for f in self.futures.values() if not f.done()]
        if running:
            self.abort.set()
            # A task whose worker died never returns: only wait for those on live workers.
            try:
                live = _live_workers(self.client)
            except Exception:
                live = set()
            alive = [
                f for r, f in self.futures.items() if not f.done() and self.addresses[r] in live
            ]
            # Poll rather than distributed.wait, which needs a default client.
            until = time.monotonic() + _TEARDOWN_WAIT_S
            while any(not f.done() for f in alive) and time.monotonic() < until:
                time.sleep(0.05)
            stuck = [f.key for f in alive if not f.done()]
            if stuck:
                logger.warning(
                    "ddp teardown: ranks still running after %.0f s: %s", _TEARDOWN_WAIT_S, stuck
                )
        for rank, future in self.futures.items():
            if rank not in self.results and future.status == "finished":
                self.results[rank] = future.result()
        # Clear the abort flag only when no task can still be polling it: a task on a lost
        # worker (or one that did not return in time) must still see it if it ever runs on.
        all_returned = all(f.status == "finished" for f in running)
        extra = [self.payload_future] if self.payload_future is not None else []
        self.client.cancel(list(self.futures.values()) + extra, force=True)
        if running and all_returned:
            try:
                self.abort.clear()
            except Exception:
                logger.debug("could not clear %s", self.abort.name, exc_info=True)

    def root_cause(self, failure):
        """The failure to report: a lost worker, else the rank that failed first.

        When one rank dies the others fail soon after inside a collective ("connection closed
        by peer"); whichever the client noticed first, the earliest failure is the cause.
        """
        if failure.lost_worker or failure.port_in_use:
            return failure
        # A dead worker explains its peers' "connection closed" errors, even when the client
        # saw those errors before it noticed the worker was gone.
        try:
            live = _live_workers(self.client)
        except Exception:
            live = set(self.addresses)
        for rank, address in enumerate(self.addresses):
            if address not in live and rank not in self.results:
                return _Failure(
                    rank,
                    address,
                    "its Dask worker left the cluster (killed or crashed)",
                    lost_worker=True,
                )
        candidates = [failure]
        for res in self.results.values():
            if res["status"] in ("error", "port-in-use"):
                candidates.append(_failure_from_result(res))
        if any(c.port_in_use for c in candidates):
            return next(c for c in candidates if c.port_in_use)
        return min(candidates, key=lambda c: float("inf") if c.when is None else c.when)

    def logs(self):
        out = {}
        for rank, address in enumerate(self.addresses):
            res = self.results.get(rank, {})
            out[rank] = {
                "worker": address,
                "host": _host(address),
                "returncode": res.get("returncode"),
                "stdout": res.get("stdout"),
                "stderr": res.get("stderr"),
                "status": res.get("status", "lost"),
            }
        return out


def _describe(failure, attempt):
    if failure.rank is None:
        head = f"DDP job failed (attempt {attempt}): {failure.message}"
    else:
        head = (
            f"DDP rank {failure.rank} on worker {failure.worker} failed "
            f"(attempt {attempt}): {failure.message}"
        )
    tail = _stderr_tail(failure.stderr)
    if tail:
        head += f"\n--- last lines of rank {failure.rank} stderr ---\n{tail}"
    return head


def run(
    train_fn,
    *args,
    client=None,
    workers=None,
    backend="auto",
    timeout=600,
    max_restarts=0,
    checkpoint_dir=None,
    env=None,
    port_range=None,
    **kwargs,
):
    """Run ``train_fn(*args, **kwargs)`` as a DistributedDataParallel job on Dask workers.

    One rank process per selected worker is started for the job, so training does not run in
    the worker's thread pool and a crash cannot take the worker down. Inside ``train_fn`` the
    process group is ready (``torch.distributed`` works); use :func:`prepare_model`,
    :func:`prepare_loader`, :func:`report` and the checkpoint helpers.

    Parameters
    ----------
    train_fn : callable
        Pickled with cloudpickle and sent to every rank; its return value must pickle too.
    *args, **kwargs
        Passed to ``train_fn`` on every rank (sent once per worker with ``client.scatter``).
    client : distributed.Client, optional
        Defaults to :func:`distributed.get_client`.
    workers : None, int or list of str
        ``None``: every worker; an int: that many free workers; a list: those addresses.
        The workers are locked for the job (a second job waits for them, up to ``timeout``).
    backend : {"auto", "gloo", "nccl"}
        ``"auto"``: nccl when the rank-0 worker sees a GPU, else gloo.
    timeout : float
        Seconds for the whole call, restarts included; then every rank is stopped and
        :class:`DDPError` is raised. Also the process-group timeout of the collectives.
    max_restarts : int
        How many times to restart the whole group after a rank or worker fails. ``train_fn``
        resumes from :func:`load_checkpoint` if it saved one.
    checkpoint_dir : str or path, optional
        Folder for :func:`save_checkpoint` / :func:`load_checkpoint`; every rank must see it
        (a shared file system on a multi-machine cluster).
    env : dict of str, optional
        Extra environment variables for the rank processes.
    port_range : (int, int), optional
        Ports allowed for ``MASTER_PORT``; default ``dasktrain.ddp.port-range`` (None: any
        free port the OS gives).

    Returns
    -------
    DDPResult
        A dict ``{rank: return value}`` with ``.logs`` (per-rank stdout/stderr),
        ``.history`` (the :func:`report` records), ``.attempts`` and ``.failures``.

    Raises
    ------
    DDPError
        When a rank raises, exits non-zero or loses its worker and no restart is left, or on
        timeout: names the rank, the worker, the exception and the last lines of that rank's
        stderr; carries ``.rank``, ``.worker``, ``.logs``, ``.history``, ``.failures``, and the
        rank's original exception as ``__cause__`` when it could be pickled back.
    ValidationError
        For a bad argument (unknown backend, more workers than the cluster has...).

    See Also
    --------
    run_local : the same ``train_fn`` in this process, world size 1 (the local engine).
    """
    import cloudpickle

    if port_range is None:
        port_range = _config.get("ddp.port-range")
    _check_args(backend, timeout, max_restarts, workers, port_range, env)
    if not callable(train_fn):
        raise ValidationError(f"train_fn={train_fn!r} must be callable.")
    from .._dask import get_client

    client = get_client(client, what="dasktrain.ddp.run")
    if checkpoint_dir is not None:
        checkpoint_dir = os.path.abspath(os.fspath(checkpoint_dir))
        os.makedirs(checkpoint_dir, exist_ok=True)
    payload = cloudpickle.dumps((train_fn, args, kwargs))
    job = uuid.uuid4().hex[:12]
    topic = f"dasktrain-ddp-{job}"
    history = []
    history_lock = threading.Lock()

    def on_event(event):
        _, record = event
        record = dict(record)
        record.pop("worker", None)  # added by the scheduler; the rank says who it is
        with history_lock:
            history.append(record)
        if record.get("rank") == 0:
            logger.info("ddp %s", _helpers._format(record))

    start = time.monotonic()
    deadline = start + timeout
    failures = []
    port_retries = 0
    attempt = 0
    world_size = None
    client.subscribe_topic(topic, on_event)
    try:
        while True:
            selection = _select_workers(
                client, workers, deadline, first=(attempt == 0), world_size=world_size
            )
            world_size = len(selection.addresses)
            current = None
            try:
                remaining = max(1.0, deadline - time.monotonic())
                current = _Attempt(
                    client,
                    selection,
                    payload,
                    attempt=attempt,
                    job=job,
                    backend=backend,
                    timeout_s=remaining,
                    env=dict(env or {}),
                    checkpoint_dir=checkpoint_dir,
                    port_range=port_range,
                )
                current.start()
                current.watch(deadline)
            except _Failure as failure:
                current.teardown()
                failure = current.root_cause(failure)
                logs = current.logs()
                if failure.rank is not None and not failure.stderr:
                    failure.stderr = logs.get(failure.rank, {}).get("stderr") or ""
                if failure.port_in_use and port_retries < _PORT_RETRIES:
                    port_retries += 1
                    logger.warning(
                        "ddp: MASTER_PORT %d was taken; retrying with a new port", current.port
                    )
                    continue
                message = _describe(failure, attempt)
                timed_out = time.monotonic() >= deadline
                if attempt < max_restarts and not timed_out:
                    failures.append(message)
                    logger.warning(
                        "%s\nrestarting the group (%d of %d restarts)",
                        message,
                        attempt + 1,
                        max_restarts,
                    )
                    attempt += 1
                    continue
                if timed_out and failure.rank is not None:
                    message += f"\n(timeout={timeout} s reached)"
                err = DDPError(message)
                err.rank, err.worker = failure.rank, failure.worker
                err.logs, err.failures, err.attempts = logs, failures, attempt + 1
                err.history = _final_history(history, history_lock, current)
                raise err from failure.cause
            except BaseException:
                # KeyboardInterrupt, a scheduler error...: never leave ranks running.
                if current is not None:
                    current.teardown()
                raise
            finally:
                selection.release()
            result = DDPResult(
                {rank: res["value"] for rank, res in sorted(current.results.items())},
                logs=current.logs(),
                history=_final_history(history, history_lock, current),
                attempts=attempt + 1,
                failures=failures,
                workers=dict(enumerate(current.addresses)),
            )
            current.client.cancel([current.payload_future], force=True)
            logger.info("ddp job %s finished in %.2f s", job, time.monotonic() - start)
            return result
    finally:
        try:
            client.unsubscribe_topic(topic)
        except Exception:
            logger.debug("could not unsubscribe %s", topic, exc_info=True)


def _final_history(history, lock, attempt):
    """The streamed records, completed from the ranks' own copies if events are still in flight.

    Events and task results travel separate paths to the client; give the stream a moment,
    then fall back to what the ranks returned, so the history is never silently short.
    """
    returned = [r for res in attempt.results.values() for r in res.get("records", [])]
    wait_until = time.monotonic() + 2.0
    while True:
        with lock:
            streamed = [r for r in history if r.get("attempt") == attempt.attempt]
            if len(streamed) >= len(returned) or time.monotonic() > wait_until:
                earlier = [r for r in history if r.get("attempt") != attempt.attempt]
                break
        time.sleep(0.02)
    if len(streamed) >= len(returned):
        return earlier + streamed
    return earlier + sorted(returned, key=lambda r: r["time"])


def run_local(train_fn, *args, checkpoint_dir=None, **kwargs):
    """Run ``train_fn(*args, **kwargs)`` in this process with world size 1: the local twin.

    The same function :func:`run` distributes runs here unchanged, with no Dask and no process
    group: :func:`rank_info` says rank 0 of 1, :func:`prepare_model` only moves the model to the
    device (CUDA when available, else CPU), :func:`prepare_loader` uses one replica with the
    same shuffle, :func:`report` keeps records in memory and logs them, and the checkpoint
    helpers use ``checkpoint_dir``.

    It runs in the calling process on purpose: that is what a user's plain training script
    does, so the comparison is against the real baseline. Torch uses this process's thread
    count (``torch.get_num_threads()``); for a per-core comparison with workers of ``n``
    threads call ``torch.set_num_threads(n)`` first (the benchmarks do). Launch cost is not
    part of the local twin, and it is part of :func:`run`, as it is in real life; throughput
    measured inside ``train_fn`` excludes it on both sides.

    Returns
    -------
    DDPResult
        ``{0: return value}`` with ``.history`` (the :func:`report` records, ``attempt`` 0) and
        ``.logs`` (``stdout``/``stderr`` are ``None``: nothing is captured in-process).

    See Also
    --------
    run : the distributed engine.
    """
    if not callable(train_fn):
        raise ValidationError(f"train_fn={train_fn!r} must be callable.")
    if _helpers._local_context() is not None:
        raise DDPError("run_local() cannot be nested inside another run_local() call.")
    if checkpoint_dir is not None:
        checkpoint_dir = os.path.abspath(os.fspath(checkpoint_dir))
        os.makedirs(checkpoint_dir, exist_ok=True)
    import torch

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    ctx = _helpers._LocalContext(checkpoint_dir, device)
    _helpers._local.ctx = ctx
    try:
        value = train_fn(*args, **kwargs)
    finally:
        _helpers._local.ctx = None
    history = [dict(r, attempt=0) for r in ctx.history]
    logs = {
        0: {
            "worker": None,
            "host": "localhost",
            "returncode": 0,
            "stdout": None,
            "stderr": None,
            "status": "ok",
        }
    }
    return DDPResult({0: value}, logs=logs, history=history, attempts=1)
