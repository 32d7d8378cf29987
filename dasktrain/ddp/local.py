"""The one-process twin of :func:`~dasktrain.ddp.run`: :func:`run_local` (``engine="local"``).

What every twin does (the torch one here, :func:`dasktrain.tf.run_local` in
:mod:`.tf_launcher`) is here too: :func:`check_twin` before anything is imported,
:func:`new_context` and :func:`twin_context` around ``train_fn`` (the state
:func:`rank_info`, :func:`report` and the checkpoint helpers read in this process) and
:func:`local_result`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .. import _malloc
from .._compat import import_optional
from .._dask import maybe_client
from ..exceptions import DDPError, ValidationError
from . import _datasets
from . import helpers as _helpers
from ._chunks import LocalSource
from ._records import DDPResult, RankStatus

__all__ = ["run_local", "check_twin", "new_context", "twin_context", "local_result"]


def run_local(
    train_fn: Callable[..., Any],
    *args: Any,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    datasets: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> DDPResult:
    """Run ``train_fn(*args, **kwargs)`` in this process with world size 1: the local twin.

    The same function :func:`run` distributes runs here unchanged, with no Dask and no process
    group: :func:`rank_info` says rank 0 of 1, :func:`prepare_model` only moves the model to the
    device (CUDA when available, else CPU), :func:`prepare_loader` uses one replica with the
    same shuffle, :func:`report` keeps records in memory and logs them, and the checkpoint
    helpers use ``checkpoint_dir``, and :func:`shard` reads every chunk of ``datasets=`` in
    this process, in the order the ranks of :func:`run` read them (with one rank).

    It runs in the calling process on purpose: that is what a user's plain training script
    does, so the comparison is against the real baseline. Torch uses this process's thread
    count (``torch.get_num_threads()``); for a per-core comparison with workers of ``n``
    threads call ``torch.set_num_threads(n)`` first (the benchmarks do). Launch cost is not
    part of the local twin, and it is part of :func:`run`, as it is in real life; throughput
    measured inside ``train_fn`` excludes it on both sides.

    Parameters
    ----------
    train_fn : callable
    *args, **kwargs
        Passed to ``train_fn``.
    checkpoint_dir : str or path, optional
        As in :func:`run`.
    datasets : dict of str -> dataset, optional
        As in :func:`run`. A lazy dataset is computed chunk by chunk here (with dask's
        synchronous scheduler, a chunk ahead in a thread); a persisted one is fetched from
        its cluster through the client that persisted it.

    Returns
    -------
    DDPResult
        ``{0: return value}`` with ``.history`` (the :func:`report` records, ``attempt`` 0) and
        ``.logs`` (``stdout``/``stderr`` are ``None``: nothing is captured in-process).

    See Also
    --------
    run : the distributed engine.
    shard : a part of a dataset of ``datasets=`` (here: all of it).
    """
    check_twin(train_fn)
    torch = import_optional("torch", "torch")  # names the extra when torch is missing
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    ctx = new_context(checkpoint_dir, device)  # the folder made before datasets= are read
    client = maybe_client() if datasets is not None else None
    feeds = _datasets.prepare(datasets, client)
    ctx.datasets, ctx.source = feeds, LocalSource(feeds, client)
    try:
        # Activations stay in the heap from step to step, as in a rank (dasktrain._malloc).
        with twin_context(ctx), _malloc.large_buffers():
            value = train_fn(*args, **kwargs)
    finally:
        ctx.source.close()  # a shard's next epoch, asked for early, is never read now
    return local_result(value, ctx)


def check_twin(train_fn: object) -> None:
    """Raise unless ``train_fn`` can run as a twin here (callable, no twin already running)."""
    if not callable(train_fn):
        raise ValidationError(f"train_fn={train_fn!r} must be callable.")
    if _helpers._local_context() is not None:
        raise DDPError("run_local() cannot be nested inside another run_local() call.")


def new_context(
    checkpoint_dir: str | os.PathLike[str] | None, device: Any
) -> _helpers._LocalContext:
    """The state of one twin (world size 1, records in memory), its checkpoint folder made."""
    return _helpers._LocalContext(_helpers.make_checkpoint_dir(checkpoint_dir), device)


@contextlib.contextmanager
def twin_context(ctx: _helpers._LocalContext) -> Iterator[_helpers._LocalContext]:
    """Install ``ctx`` (from :func:`new_context`) for this thread while the block runs."""
    _helpers._local.ctx = ctx
    try:
        yield ctx
    finally:
        _helpers._local.ctx = None


def local_result(value: Any, ctx: _helpers._LocalContext) -> DDPResult:
    """The :class:`DDPResult` of a local twin: rank 0 of one, its records, one attempt."""
    history = [dict(r, attempt=0) for r in ctx.history]
    logs = {
        0: {
            "worker": None,
            "host": "localhost",
            "returncode": 0,
            "stdout": None,
            "stderr": None,
            "status": RankStatus.OK,
        }
    }
    return DDPResult({0: value}, logs=logs, history=history, attempts=1)
