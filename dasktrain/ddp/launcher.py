"""Launch a PyTorch DistributedDataParallel job on Dask workers: :func:`run`.

:func:`run` checks its arguments and hands the job to :func:`~._job.run_job`, which starts one
process group (an :class:`~._group.Attempt`: workers picked and locked, a free ``MASTER_PORT``
found on the rank-0 worker, one rank task per worker), watches it, and on a failure either
restarts the whole group (``max_restarts``: a fresh port, workers chosen again from the live
ones) or raises :class:`~dasktrain.exceptions.DDPError`. Metrics the ranks report stream to the
client as Dask events (``Client.subscribe_topic``).

Where the rest lives: ``_job`` (one job: attempts, restarts, history), ``_group`` (the client
side of one group), ``_pool`` (:class:`RankPool`), ``_worker`` and ``_supervise`` (what runs on
the worker), ``_rank`` (inside a rank process), ``_env`` (the environment contract),
``_records`` (specs, statuses, results) and ``local`` (:func:`run_local`, the one-process twin).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import _config
from .._dask import get_client
from ..exceptions import ValidationError
from . import _datasets
from ._job import check_args, run_job
from ._pool import RankPool
from ._records import DDPResult
from .local import run_local

if TYPE_CHECKING:
    import os

    from distributed import Client

    from .._typing import PortRange, Workers

__all__ = ["run", "run_local", "DDPResult", "RankPool"]


def _check_pool(
    pool: object,
    client: Client | None,
    workers: Workers,
    backend: str,
    port_range: PortRange | None,
) -> Client:
    """The pool's client; a ValidationError when ``pool`` or the arguments beside it are bad."""
    if not isinstance(pool, RankPool):
        raise ValidationError(f"pool={pool!r} must be a dasktrain.ddp.RankPool or None.")
    pool.ensure_open()
    if client is not None and client is not pool.client:
        raise ValidationError("pool= belongs to another client; pass client=None or its own.")
    if workers is not None or backend != "auto" or port_range is not None:
        raise ValidationError(
            "with pool=, the pool decides the workers, the backend and the port range: "
            "pass them to RankPool(...) and leave workers, backend and port_range unset."
        )
    return pool.client


def run(
    train_fn: Callable[..., Any],
    *args: Any,
    client: Client | None = None,
    workers: Workers = None,
    backend: str = "auto",
    timeout: float | None = None,
    max_restarts: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    port_range: PortRange | None = None,
    pool: RankPool | None = None,
    datasets: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> DDPResult:
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
        Passed to ``train_fn`` on every rank (sent once per worker with ``client.scatter``):
        small things. Data belongs in ``datasets=``.
    client : distributed.Client, optional
        Defaults to :func:`distributed.get_client`.
    workers : None, int or list of str
        ``None``: every worker; an int: that many free workers; a list: those addresses.
        The workers are locked for the job (a second job waits for them, up to ``timeout``).
    backend : {"auto", "gloo", "nccl"}
        ``"auto"``: nccl when the rank-0 worker sees a GPU, else gloo.
    timeout : float, optional
        Seconds for the whole call, restarts included; then every rank is stopped and
        :class:`DDPError` is raised. Also the process-group timeout of the collectives.
        Default: the ``dasktrain.ddp.timeout`` setting (600 unless changed with
        ``dask.config.set``).
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
    pool : RankPool, optional
        Run in the pool's rank processes, kept alive between jobs (a warm start takes a
        fraction of a second instead of a new process, ``import torch`` and a rendezvous).
        The pool decides the workers, the backend and the port range (leave ``workers``,
        ``backend`` and ``port_range`` at their defaults); ``env`` is set for this job
        inside the running processes. Failures, restarts and timeouts behave as without a
        pool; a failed job ends the pool's processes and the next job starts fresh ones.
    datasets : dict of str -> dataset, optional
        Data the ranks read without it ever coming to this process: ``{"train": ...,
        "val": ...}``, each an ``ImageSet`` of ``read_images(engine="dask")`` (lazy or
        persisted), a dask array, a dask DataFrame, or a tuple of them with aligned row
        chunks (``(X, y)``). Inside ``train_fn``, :func:`shard` gives each rank its own part,
        read chunk by chunk from its own worker: a persisted chunk from the worker that
        holds it, a lazy one decoded there. Only the graph is read here (and a DataFrame's
        partition lengths counted on the cluster).

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
        stderr; carries ``.rank``, ``.worker``, ``.logs``, ``.history``, ``.failures``,
        ``.attempts``, and the rank's original exception as ``__cause__`` when it could be
        pickled back.
    ValidationError
        For a bad argument (unknown backend, more workers than the cluster has, a dataset
        that is not a dask collection or whose parts are not aligned...).
    WorkersPausedError
        When the job's tasks (its port probe, its ranks) waited on workers paused for memory
        for ``dasktrain.paused-workers.grace``: a restart cannot help, so none is made.

    See Also
    --------
    run_local : the same ``train_fn`` in this process, world size 1 (the local engine).
    shard : a rank's part of a dataset of ``datasets=``.
    """
    timeout = _config.get("ddp.timeout") if timeout is None else timeout
    if pool is not None:
        client = _check_pool(pool, client, workers, backend, port_range)
        backend, port_range = pool.backend, pool.port_range
    port_range = _config.get("ddp.port-range") if port_range is None else port_range
    check_args(backend, timeout, max_restarts, workers, port_range, env)
    if not callable(train_fn):
        raise ValidationError(f"train_fn={train_fn!r} must be callable.")
    client = get_client(client, what="dasktrain.ddp.run")
    return run_job(
        client,
        train_fn,
        args,
        kwargs,
        workers=workers,
        timeout=timeout,
        max_restarts=max_restarts,
        backend=backend,
        port_range=port_range,
        env=env,
        checkpoint_dir=checkpoint_dir,
        pool=pool,
        feeds=_datasets.prepare(datasets, client),
    )
