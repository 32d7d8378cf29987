"""Helpers called inside ``train_fn``: rank info, metrics, model preparation, checkpoints.

The same helpers work in the two places a training function runs:

* inside a rank process started by :func:`dasktrain.ddp.run` (the process group is set up by
  :mod:`dasktrain.ddp._rank`; rank, world size, device and checkpoint folder come from the
  environment), and
* in the calling process under :func:`dasktrain.ddp.run_local` (world size 1, no process group).

So one ``train_fn`` runs unchanged on both engines. The loaders are in :mod:`.loaders`, the
datasets of a job in :mod:`.shards`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._dask.events import keep
from ..exceptions import DDPError, ValidationError
from . import _env
from ._comm import check_ddp_options, micro_batches, register_comm_hook

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "RankInfo",
    "rank_info",
    "report",
    "prepare_model",
    "micro_batches",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "unwrap_model",
]

CHECKPOINT_NAME = "checkpoint.pt"


class RankInfo(dict):
    """Where this ``train_fn`` runs: rank, world size, local rank, device, backend.

    A dict (``info["rank"]``) whose keys are also attributes (``info.rank``).
    """

    def __getattr__(self, name):
        # AttributeError (not KeyError) so hasattr(), copy and pickle behave.
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# The local twin (run_local) installs an in-process context here; inside a rank process it
# stays None and everything is read from the environment the launcher set.
_local = threading.local()


def _local_context() -> _LocalContext | None:
    return getattr(_local, "ctx", None)


class _LocalContext:
    """State of a run_local call: world size 1, metrics kept in memory."""

    def __init__(self, checkpoint_dir, device):
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.device = device
        self.history = []
        self.datasets = {}  # name -> Feed of datasets=, read by shard() through source
        self.source = None


def _default_device():
    import torch

    if torch.cuda.is_available():
        # Under the launcher the rank process already chose its device (DASKTRAIN_DDP_DEVICE).
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_info() -> RankInfo:
    """Return this process's place in the job.

    Returns
    -------
    RankInfo
        ``rank``, ``world_size``, ``local_rank``, ``local_world_size``, ``device``
        (a :class:`torch.device`), ``backend`` (``"gloo"``, ``"nccl"`` or ``None`` for the
        local twin) and ``checkpoint_dir`` (``None`` when checkpoints are off).
    """
    ctx = _local_context()
    if ctx is not None:
        return _only_rank(ctx.device, ctx.checkpoint_dir)
    if not _env.launched():
        # Plain script: behave like the local twin without checkpoints.
        return _only_rank(_default_device(), None)
    import torch

    env = os.environ
    return RankInfo(
        rank=int(env[_env.RANK]),
        world_size=int(env[_env.WORLD_SIZE]),
        local_rank=int(env.get(_env.LOCAL_RANK, 0)),
        local_world_size=int(env.get(_env.LOCAL_WORLD_SIZE, 1)),
        device=torch.device(env.get(_env.ENV_DEVICE) or "cpu"),
        backend=env[_env.ENV_BACKEND],
        checkpoint_dir=env.get(_env.ENV_CHECKPOINT_DIR) or None,
    )


def _only_rank(device, checkpoint_dir):
    """The RankInfo of a world of one (the local twin, or a plain script)."""
    return RankInfo(
        rank=0,
        world_size=1,
        local_rank=0,
        local_world_size=1,
        device=device,
        backend=None,
        checkpoint_dir=checkpoint_dir,
    )


def _group_active():
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def report(**metrics: Any) -> None:
    """Send metrics (numbers, short strings) from ``train_fn`` to the client while the job runs.

    Every rank may report; each record carries ``rank`` and ``time``. The client logs the
    records of rank 0 as progress (logger ``dasktrain.ddp.launcher``, INFO) and keeps all of
    them in ``result.history``, in arrival order.

    Parameters
    ----------
    **metrics
        JSON-serialisable values, e.g. ``report(epoch=1, loss=0.31, accuracy=0.88)``. Torch or
        NumPy scalars are converted with ``float()``.
    """
    # The rank from the environment, not rank_info() (which imports torch): report() also
    # serves the TensorFlow ranks of dasktrain.tf.run, which may have no torch.
    ctx = _local_context()
    rank = 0 if ctx is not None or not _env.launched() else int(os.environ[_env.RANK])
    record = {"rank": rank, "time": time.time()}
    for key, value in metrics.items():
        record[key] = _plain(value, key)
    if ctx is not None:
        ctx.history.append(record)
        keep({"kind": "ddp-metrics", "job": "local", **record})  # the report's rank curves
        logger.info("local: %s", _format(record))
        return
    path = os.environ.get(_env.ENV_METRICS_FILE)
    if path is None:
        logger.info("%s", _format(record))
        return
    # One JSON line per record, appended and flushed: the worker task tails this file and
    # forwards each line with Worker.log_event (a rank process is not a Dask worker).
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def _plain(value, key):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"report({key}={value!r}): metrics must be numbers or strings "
            "(convert tensors with .item())."
        ) from None


def _format(record):
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in record.items()
        if k != "time"
    )


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def prepare_model(
    model: torch.nn.Module, *, comm_hook: str | None = None, **ddp_kwargs: Any
) -> torch.nn.Module:
    """Move ``model`` to this rank's device and wrap it in DistributedDataParallel.

    With world size 1 (the local twin, or a one-rank job) the model is only moved to the
    device: a DDP wrapper over one process would only add overhead, and ``comm_hook`` and the
    DDP keywords have nothing to act on (they are still checked, so a bad value fails on both
    engines). On GPUs BatchNorm layers become SyncBatchNorm; on CPU (gloo) they stay per-rank,
    so a model with BatchNorm does not follow the local twin exactly (each rank normalises
    over its share of the global batch).

    Parameters
    ----------
    model : torch.nn.Module
    comm_hook : {None, "fp16", "bf16"}
        Compress the gradients to half precision for the all-reduce (torch's
        ``fp16_compress_hook`` / ``bf16_compress_hook``): half the bytes to send, gradients
        rounded to 16 bits (bf16 keeps float32's range, fp16 more mantissa). None sends
        float32. See the DDP guide for what each measured on CPU.
    **ddp_kwargs
        Passed to :class:`torch.nn.parallel.DistributedDataParallel`, e.g. ``bucket_cap_mb``
        (a number > 0, default 25: gradients are all-reduced in buckets of this size, each
        as soon as its gradients are ready), ``gradient_as_bucket_view`` (bool: gradients
        live in the all-reduce buckets, saving a copy), ``static_graph`` (bool),
        ``broadcast_buffers`` (bool). These are checked here; others go to DDP as they are.

    Returns
    -------
    torch.nn.Module
        Use :func:`unwrap_model` to reach the original module (e.g. for ``state_dict``).

    Raises
    ------
    ValidationError
        An unknown ``comm_hook`` or a bad value of the DDP keywords above.

    See Also
    --------
    micro_batches : gradient accumulation with ``no_sync``.
    """
    import torch

    check_ddp_options(comm_hook, ddp_kwargs)
    ddp_kwargs = {k: v for k, v in ddp_kwargs.items() if not (k == "bucket_cap_mb" and v is None)}
    info = rank_info()
    model = model.to(info.device)
    if not _group_active():
        return model
    if info.device.type == "cuda":
        # BatchNorm statistics over the global batch, as in the single-process run
        # (SyncBatchNorm only runs on GPUs; on CPU each rank normalises its own share).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp_kwargs.setdefault("device_ids", [info.device.index])
    ddp = torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    return register_comm_hook(ddp, comm_hook, device_type=info.device.type)


def make_checkpoint_dir(checkpoint_dir) -> str | None:
    """``checkpoint_dir`` as an absolute folder, created; None stays None (checkpoints off).

    Raises
    ------
    ValidationError
        When the folder cannot be made: a file is in the way (named), or no permission.
    """
    if checkpoint_dir is None:
        return None
    checkpoint_dir = os.path.abspath(os.fspath(checkpoint_dir))
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = _file_in_the_way(checkpoint_dir)
        raise ValidationError(
            f"checkpoint_dir={checkpoint_dir!r} cannot be a folder: {blocker!r} is a file. "
            "Pass checkpoint_dir= a folder (created when missing), or move the file away."
        ) from exc
    except OSError as exc:
        raise ValidationError(
            f"checkpoint_dir={checkpoint_dir!r} cannot be created ({type(exc).__name__}: "
            f"{exc}). Pass checkpoint_dir= a folder this process may write to."
        ) from exc
    return checkpoint_dir


def _file_in_the_way(path):
    """The first part of ``path``, from its root, that exists and is not a folder."""
    parts = []
    while True:
        parts.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return next((p for p in reversed(parts) if os.path.exists(p) and not os.path.isdir(p)), path)


def checkpoint_path() -> str | None:
    """Path of this job's checkpoint file, or ``None`` when no ``checkpoint_dir`` was given."""
    directory = rank_info().checkpoint_dir
    return None if directory is None else os.path.join(directory, CHECKPOINT_NAME)


def save_checkpoint(state: Mapping[str, Any]) -> str | None:
    """Save ``state`` (a dict of tensors, numbers, lists) as the job's checkpoint.

    Rank 0 writes with :func:`torch.save` to a temporary file and renames it over the old
    checkpoint (:func:`os.replace`), so a rank killed mid-write never leaves a torn file. The
    other ranks return at once. Save ``unwrap_model(model).state_dict()``, not the DDP wrapper.

    Raises
    ------
    DDPError
        When the job was started without ``checkpoint_dir``.
    """
    import torch

    path = checkpoint_path()
    if path is None:
        raise DDPError(
            "save_checkpoint() needs a checkpoint folder: pass checkpoint_dir=... to "
            "dasktrain.ddp.run() or run_local()."
        )
    if rank_info().rank != 0:
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint() -> dict[str, Any] | None:
    """Load the job's last checkpoint, or return ``None`` when there is none yet.

    Every rank reads the file (with ``torch.load(..., weights_only=True)``, so only tensors
    and plain containers load) onto its own device.
    """
    import torch

    path = checkpoint_path()
    if path is None or not os.path.exists(path):
        return None
    return torch.load(path, map_location=rank_info().device, weights_only=True)
