"""Records of a DDP job, after torch elastic's ``WorkerSpec`` / ``WorkerState`` / ``RunResult``.

* :class:`RankSpec`: what one rank is told (where it stands, where to meet, how long);
* ``RankStatus``: what became of it (the states below);
* :class:`RankError`: how ``train_fn`` failed, as the rank process saw it;
* :class:`RankResult`: what the worker task hands back for one rank;
* :class:`Failure`: why an attempt of the whole group failed (the one rank to blame);
* :class:`DDPResult`: what :func:`~dasktrain.ddp.run` returns.

The state machine of one rank
-----------------------------
The worker task starts the rank process and supervises it until one of these holds::

    running --(train_fn returned, result written)------------------> OK
            --(train_fn or the setup raised, error written)--------> ERROR
            --(exited without a result: a crash, a signal)---------> ERROR
            --(rank 0 could not bind MASTER_PORT, exit 75)---------> PORT_IN_USE
            --(the job's timeout passed)-----------------------------> TIMEOUT
            --(the client set the attempt's abort event)-------------> ABORTED
    (no answer: the worker left the cluster; seen by the client)------> LOST

A rank in any state but OK fails its attempt. The client then tears the group down (every
running rank becomes ABORTED), blames one rank (a lost worker first, then a taken port, else the
earliest failure), and restarts the whole group (``max_restarts``; a
taken port is retried with a fresh port without counting) or raises
:class:`~dasktrain.exceptions.DDPError`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RankStatus", "RankSpec", "RankError", "RankResult", "Failure", "DDPResult"]


class RankStatus(str, enum.Enum):  # noqa: UP042  (StrEnum would change str() of a status)
    """What became of one rank (a ``str``, so ``status == "ok"`` holds for ``OK``)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    PORT_IN_USE = "port-in-use"
    LOST = "lost"

    def __str__(self):
        return self.value


@dataclasses.dataclass(frozen=True)
class RankSpec:
    """Everything one rank of one attempt needs to start (sent with its task).

    Attributes
    ----------
    rank, world_size, local_rank, local_world_size : int
        Its place in the group (``local_*`` counts ranks on the same host).
    master_addr : str
        The host of the rank-0 worker, as the scheduler knows it.
    master_port : int
    backend : {"gloo", "nccl"}
    timeout : float
        Seconds the rank may run (and the process-group timeout).
    env : dict of str
        Extra environment variables (``env=`` of :func:`~dasktrain.ddp.run`).
    checkpoint_dir : str or None
    abort : str
        Name of the attempt's abort :class:`distributed.Event`.
    attempt : int
        0 for the first group, 1 after the first restart...
    topic : str
        The event topic the rank's :func:`~dasktrain.ddp.report` records go to.
    datasets : dict or None
        ``{name: meta}`` of the job's ``datasets=`` (rows and holder of each chunk...: what
        the rank plans its epochs with, see ``_datasets.Feed.meta``); None without datasets.
    module : str
        The rank process's module (``python -m``): torch's ``dasktrain.ddp._rank``, or
        ``dasktrain.ddp._tf_rank`` for :func:`dasktrain.tf.run`.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    backend: str
    timeout: float
    env: dict
    checkpoint_dir: str | None
    abort: str
    attempt: int
    topic: str
    datasets: dict | None = None
    module: str = "dasktrain.ddp._rank"


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """What every attempt of one job starts its ranks with (checked by ``run()`` before).

    ``timeout`` is what is left of the job's time when an attempt starts (each attempt gets a
    copy with its own, :func:`dataclasses.replace`).
    """

    backend: str  # "auto", "gloo" or "nccl"
    timeout: float
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    checkpoint_dir: str | None = None
    port_range: tuple[int, int] | None = None
    pool: Any = None  # a RankPool whose processes run the ranks, or None
    datasets: Any = None  # (feeds, pickled feeds) of ``datasets=``, or None
    module: str = RankSpec.module  # the rank process


@dataclasses.dataclass(frozen=True)
class RankError:
    """How ``train_fn`` (or the rank's setup) failed, written by the rank process."""

    time: float  # when: the launcher blames the rank that failed first
    type: str
    message: str
    traceback: str
    exception: bytes | None = None  # the exception itself (cloudpickle), when it pickles

    def cause(self):
        """The original exception, unpickled, or None when it could not be pickled back."""
        if self.exception is None:
            return None
        try:
            import cloudpickle

            return cloudpickle.loads(self.exception)
        except Exception:  # noqa: BLE001 - a class the client cannot import: no cause
            return None


@dataclasses.dataclass(frozen=True)
class RankResult:
    """What the worker task hands back for one rank."""

    rank: int
    status: RankStatus
    worker: str
    returncode: int | None
    stdout: str
    stderr: str
    end_time: float
    value: object = None
    error: RankError | None = None
    records: list = dataclasses.field(default_factory=list)

    def failure(self):
        """The :class:`Failure` this result stands for (its status is not OK)."""
        if self.status is RankStatus.PORT_IN_USE:
            return Failure(
                self.rank, self.worker, "MASTER_PORT was taken", self.status, self.stderr
            )
        if self.status is RankStatus.TIMEOUT:
            return Failure(self.rank, self.worker, "timed out", self.status, self.stderr)
        if self.error is not None:
            return Failure(
                self.rank,
                self.worker,
                f"{self.error.type}: {self.error.message}",
                RankStatus.ERROR,
                self.stderr,
                cause=self.error.cause(),
                when=self.error.time,
            )
        message = self._exit_message()
        return Failure(
            self.rank, self.worker, message, RankStatus.ERROR, self.stderr, when=self.end_time
        )

    def _exit_message(self):
        message = f"the rank process exited with code {self.returncode}"
        if self.returncode is not None and self.returncode < 0:
            message += f" (killed by signal {-self.returncode})"
        # Every rank writes its result (or its error) before it exits; no result file means
        # the process left on its own first, which must never pass for a success.
        if self.returncode == 0:
            message += (
                " without delivering a result from train_fn (did it call os._exit() "
                "or end the process some other way before returning?)"
            )
        return message


@dataclasses.dataclass
class Failure:
    """Why an attempt failed: the rank (None: the whole job) to blame and what happened.

    ``status`` is ERROR, TIMEOUT, LOST (its worker left) or PORT_IN_USE.
    """

    rank: int | None
    worker: str | None
    message: str
    status: RankStatus = RankStatus.ERROR
    stderr: str = ""
    cause: BaseException | None = None
    when: float | None = None  # when it failed (for the earliest failure)

    @property
    def lost_worker(self):
        return self.status is RankStatus.LOST

    @property
    def port_in_use(self):
        return self.status is RankStatus.PORT_IN_USE


class AttemptFailed(Exception):
    """Raised inside the client's orchestration when an attempt fails; carries the Failure."""

    def __init__(self, failure):
        super().__init__(failure.message)
        self.failure = failure


class DDPResult(dict):
    """``{rank: return value of train_fn}``, plus what happened on the way.

    A plain dict for the results (so ``run(...)[0]`` works), with attributes:

    Attributes
    ----------
    logs : dict[int, dict]
        Per rank: ``worker`` (address), ``host``, ``returncode``, ``stdout``, ``stderr`` (the
        last 64 KiB of each; ``None`` under :func:`run_local`, which does not capture) and
        ``status`` (a ``RankStatus``, equal to its string: ``"ok"``, ``"error"``...).
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
        self,
        values: Mapping[int, Any] | Iterable[tuple[int, Any]] = (),
        *,
        logs: dict[int, dict[str, Any]] | None = None,
        history: list[dict[str, Any]] | None = None,
        attempts: int = 1,
        failures: list[str] | None = None,
        workers: dict[int, str] | None = None,
    ) -> None:
        super().__init__(values)
        self.logs = logs or {}
        self.history = history or []
        self.attempts = attempts
        self.failures = failures or []
        self.workers = workers or {}

    def __repr__(self):
        return f"DDPResult({dict.__repr__(self)}, attempts={self.attempts})"
