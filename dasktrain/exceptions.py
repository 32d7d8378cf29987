"""Exceptions and warnings raised by dasktrain.

Every error names the bad value, the file or argument, and how to fix it. Each class below says
in one line when it is raised, so a user can catch exactly what they mean to handle.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DasktrainError",
    "ValidationError",
    "DatasetLayoutError",
    "ImageReadError",
    "RemoteTimeoutError",
    "ClusterConnectionError",
    "OptionalDependencyError",
    "WeightsError",
    "DDPError",
    "WorkerLostError",
    "SparkDiedError",
    "WorkersPausedError",
    "WorkloadError",
    "Unavailable",
    "UnguardedScriptError",
    "InsufficientMemoryError",
    "BusyMachineError",
    "DasktrainWarning",
    "SkippedFilesWarning",
]


class DasktrainError(Exception):
    """Base class of every exception dasktrain raises on purpose."""


class ValidationError(DasktrainError, ValueError):
    """Raised when an argument or an input array is invalid (shape, dtype, NaN, engine name...)."""


class DatasetLayoutError(ValidationError):
    """Raised when an image folder has the wrong layout (empty, no class folders, one class)."""


class ImageReadError(DasktrainError, OSError):
    """Raised when files that claim to be images cannot be decoded and ``errors="raise"``."""


class RemoteTimeoutError(ImageReadError, TimeoutError):
    """Raised when a remote store (an fsspec URL) does not answer a listing or a read within
    the ``dasktrain.images.remote-timeout`` setting; names the URL."""


class ClusterConnectionError(DasktrainError, OSError):
    """Raised when a Dask scheduler cannot be reached or a cluster cannot be started."""


class OptionalDependencyError(DasktrainError, ImportError):
    """When an optional package (torch, tensorflow, dask-cuda) is missing; names its extra."""


class WeightsError(ValidationError):
    """Raised when model weights are missing, unreadable, or do not match the backbone."""


class DDPError(DasktrainError, RuntimeError):
    """Raised when a DistributedDataParallel job fails: names the rank, worker and stderr tail.

    A failed :func:`dasktrain.ddp.run` fills in ``rank`` and ``worker`` (None when no rank is
    to blame, e.g. the job's timeout), ``logs`` and ``history`` (as on ``DDPResult``),
    ``failures`` (the attempts restarted before) and ``attempts``.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int | None = None,
        worker: str | None = None,
        logs: dict[int, Any] | None = None,
        history: list[Any] | None = None,
        failures: list[Any] | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.worker = worker
        self.logs = logs if logs is not None else {}
        self.history = history if history is not None else []
        self.failures = failures if failures is not None else []
        self.attempts = attempts


class WorkerLostError(DasktrainError, RuntimeError):
    """Raised when a Dask worker left the cluster during a step that cannot go on without it
    (and no restart is left); names the worker(s) and how to resume."""


class SparkDiedError(DasktrainError, RuntimeError):
    """Raised when the JVM of a Spark session died (killed, out of memory) before or during a
    step; names its pid and exit signal or code."""


class WorkersPausedError(DasktrainError, RuntimeError):
    """Raised when a step waited too long on Dask workers paused for memory; names them."""


class WorkloadError(ValidationError):
    """Raised when a comparison is given an unknown workload, an empty data set or bad prices."""


class Unavailable(DasktrainError):
    """Raised by a workload whose part of dasktrain (or an optional package) is not available."""


class UnguardedScriptError(DasktrainError, RuntimeError):
    """Raised when a spawned process re-runs a script that has no ``if __name__ == "__main__":``."""


class InsufficientMemoryError(DasktrainError, MemoryError):
    """Raised before a local-engine step whose estimated memory exceeds what is available."""


class BusyMachineError(DasktrainError, RuntimeError):
    """Raised before a comparison's first run when other programs kept using more than half a
    core of this machine; names them (``allow_busy=True`` measures anyway)."""


class DasktrainWarning(UserWarning):
    """Base class of dasktrain's warnings (the test suite turns them into errors)."""


class SkippedFilesWarning(DasktrainWarning):
    """Warned when files were left out because the user asked to skip unreadable input."""
