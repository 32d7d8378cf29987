"""TensorFlow multi-worker training on Dask workers: :func:`run`, and its twin :func:`run_local`.

:func:`run` is the DDP launcher's job (:mod:`dasktrain.ddp._job`: workers picked and locked, one
supervised process per worker in a private folder, logs, ``timeout``, ``max_restarts``, the
failed rank named) with another rank process, :mod:`dasktrain.ddp._tf_rank`, which starts a
``tf.distribute.MultiWorkerMirroredStrategy`` instead of a torch process group.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import _config
from .._compat import import_optional
from .._dask import get_client
from .._validation import check_positive_number
from ..exceptions import ValidationError
from ._job import check_args, run_job
from ._records import DDPResult
from ._tf_env import ENV_COLLECTIVE_TIMEOUT, ENV_KEY
from .local import check_twin, local_result, new_context, twin_context
from .tf_context import refuse_fit

if TYPE_CHECKING:
    import os

    from distributed import Client

    from .._typing import PortRange, Workers

__all__ = ["run", "run_local"]

# Seconds a collective may wait for a peer before it fails (CommunicationOptions).
DEFAULT_COLLECTIVE_TIMEOUT = 60.0


def check_all_interfaces(all_interfaces: bool | None = None) -> None:
    """Refuse to start TensorFlow's servers unless the user accepted where they listen."""
    if all_interfaces is None:
        all_interfaces = _config.get("tf.all-interfaces")
    if all_interfaces is not True:
        raise ValidationError(
            "dasktrain.tf.run starts TensorFlow's gRPC server on every worker, and it listens "
            "on all network interfaces of the worker's host (TensorFlow takes a port, not an "
            "address); dasktrain opens no such port unasked. On a network you trust pass "
            "all_interfaces=True (or set the Dask config dasktrain.tf.all-interfaces: true); "
            "otherwise train the Keras model on the torch backend with dasktrain.ddp.run "
            "(dasktrain.ddp.recipes_keras), whose ports bind one address."
        )


def run(
    train_fn: Callable[..., Any],
    *args: Any,
    client: Client | None = None,
    workers: Workers = None,
    timeout: float | None = None,
    max_restarts: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    port_range: PortRange | None = None,
    collective_timeout: float = DEFAULT_COLLECTIVE_TIMEOUT,
    all_interfaces: bool | None = None,
    **kwargs: Any,
) -> DDPResult:
    """Run ``train_fn(*args, **kwargs)`` on Dask workers under TensorFlow's multi-worker strategy.

    One process per selected worker, supervised as a rank of :func:`dasktrain.ddp.run` is.
    Each gets its ``TF_CONFIG`` and calls ``train_fn`` inside the scope of a ready
    ``tf.distribute.MultiWorkerMirroredStrategy`` (``tf.distribute.get_strategy()``
    returns it there) whose collectives time out after ``collective_timeout`` seconds.

    Parameters
    ----------
    train_fn : callable
        Pickled with cloudpickle; its return value must pickle too. Write the training loop
        with ``strategy.run`` (:func:`dasktrain.tf.recipes.train_cnn` is one);
        ``keras.Model.fit`` is refused (Keras 3 does not support it under this strategy:
        keras-team/keras#20585). Report metrics with :func:`dasktrain.ddp.report`, use
        :func:`dasktrain.tf.task_info`, :func:`~dasktrain.tf.save_weights` and
        :func:`~dasktrain.tf.load_weights`.
    *args, **kwargs
        Passed to ``train_fn`` on every rank (small things: arrays of a few MB at most).
    client, workers, timeout, max_restarts, checkpoint_dir, port_range
        As in :func:`dasktrain.ddp.run`. ``MASTER_PORT`` is where the ranks meet to learn
        each other's TensorFlow port.
    env : dict of str, optional
        Extra environment variables for the processes; ``KERAS_BACKEND`` is ``tensorflow``
        unless this says otherwise.
    collective_timeout : float
        Seconds a collective waits for its peers before it raises
        ``DeadlineExceededError``: a peer that died or left early is an error, not a hang.
    all_interfaces : bool, optional
        TensorFlow's gRPC server listens on every network interface of each worker's host
        (TensorFlow takes a port, not an address), which dasktrain never does unasked: pass
        True (or set ``dasktrain.tf.all-interfaces``, the default for None) on a network
        you trust. False refuses to start.

    Returns
    -------
    DDPResult
        ``{rank: return value}``, with ``.logs``, ``.history``, ``.attempts``, ``.failures``.

    Raises
    ------
    DDPError
        When a rank fails, its worker leaves, or ``timeout`` passes, and no restart is left.
    ValidationError
        For a bad argument, or ``all_interfaces`` not given.

    See Also
    --------
    run_local : the same ``train_fn`` in this process, one worker.
    dasktrain.ddp.run : torch, and Keras on the torch backend.

    Notes
    -----
    TensorFlow's gRPC server listens on all interfaces of each worker's host (it takes a port,
    not an address); the rendezvous, like the DDP launcher's, listens on the rank-0 worker's
    address only. Run it on a network you trust (``all_interfaces=True``).
    """
    check_all_interfaces(all_interfaces)
    timeout = _config.get("ddp.timeout") if timeout is None else timeout
    port_range = _config.get("ddp.port-range") if port_range is None else port_range
    check_args("gloo", timeout, max_restarts, workers, port_range, env)
    check_positive_number(collective_timeout, "collective_timeout", unit="seconds")
    if not callable(train_fn):
        raise ValidationError(f"train_fn={train_fn!r} must be callable.")
    client = get_client(client, what="dasktrain.tf.run")
    job_env = {"KERAS_BACKEND": "tensorflow", **(env or {})}
    job_env[ENV_KEY] = secrets.token_hex(16)
    job_env[ENV_COLLECTIVE_TIMEOUT] = str(float(collective_timeout))
    return run_job(
        client,
        train_fn,
        args,
        kwargs,
        workers=workers,
        timeout=timeout,
        max_restarts=max_restarts,
        backend="gloo",  # not used by a TensorFlow rank; skips the GPU probe
        port_range=port_range,
        env=job_env,
        checkpoint_dir=checkpoint_dir,
        module="dasktrain.ddp._tf_rank",
    )


def run_local(
    train_fn: Callable[..., Any],
    *args: Any,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> DDPResult:
    """Run ``train_fn(*args, **kwargs)`` in this process: the local twin of :func:`run`.

    ``train_fn`` runs inside the scope of TensorFlow's default strategy (one replica, this
    process's devices; ``tf.distribute.get_strategy()`` returns it), so a loop written with
    ``strategy.run`` and ``strategy.reduce`` runs unchanged. :func:`task_info` says rank 0 of
    1, :func:`dasktrain.ddp.report` keeps the records, ``keras.Model.fit`` is refused as in
    :func:`run`.

    Parameters
    ----------
    train_fn : callable
    *args, **kwargs
        Passed to ``train_fn``.
    checkpoint_dir : str or path, optional
        As in :func:`run`.

    Returns
    -------
    DDPResult
        ``{0: return value}`` with ``.history``.

    See Also
    --------
    run : the distributed engine.
    """
    check_twin(train_fn)
    tf = import_optional("tensorflow", "tensorflow")
    ctx = new_context(checkpoint_dir, None)
    with twin_context(ctx), tf.distribute.get_strategy().scope(), refuse_fit():
        value = train_fn(*args, **kwargs)
    return local_result(value, ctx)
