"""Helpers called inside ``train_fn``: rank info, metrics, model/loader preparation, checkpoints.

The same helpers work in the two places a training function runs:

* inside a rank process started by :func:`dasktrain.ddp.run` (the process group is set up by
  :mod:`dasktrain.ddp._rank`; rank, world size, device and checkpoint folder come from the
  environment), and
* in the calling process under :func:`dasktrain.ddp.run_local` (world size 1, no process group).

So one ``train_fn`` runs unchanged on both engines.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

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
    "prepare_loader",
    "batch_sizes",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "unwrap_model",
]

CHECKPOINT_NAME = "checkpoint.pt"
BATCH_SCALINGS = ("global", "per-rank")


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


def _local_context():
    return getattr(_local, "ctx", None)


class _LocalContext:
    """State of a run_local call: world size 1, metrics kept in memory."""

    def __init__(self, checkpoint_dir, device):
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.device = device
        self.history = []


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


def report(**metrics) -> None:
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
    info = rank_info()
    record = {"rank": info.rank, "time": time.time()}
    for key, value in metrics.items():
        record[key] = _plain(value, key)
    ctx = _local_context()
    if ctx is not None:
        ctx.history.append(record)
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


def unwrap_model(model) -> torch.nn.Module:
    """Return the module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def prepare_model(model, *, comm_hook=None, **ddp_kwargs) -> torch.nn.Module:
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


def batch_sizes(batch_size, world_size, batch_scaling="global") -> tuple[int, int, float]:
    """Per-rank batch, global batch and learning-rate factor for a batch-scaling policy.

    ``"global"`` divides ``batch_size`` across the ranks so that one optimiser step sees the
    same number of samples as the single-process run (same convergence, same learning rate).
    ``"per-rank"`` keeps ``batch_size`` on every rank: the global batch grows with the world
    size, and ``lr_scale = world_size`` is the linear learning-rate rule (Goyal et al., 2017),
    which the caller applies explicitly (``lr * loader.lr_scale``).

    Returns
    -------
    per_rank : int
    global_batch : int
    lr_scale : float

    Raises
    ------
    ValidationError
        Unknown ``batch_scaling``, or a global batch smaller than the number of ranks.
    """
    if batch_scaling not in BATCH_SCALINGS:
        raise ValidationError(f"batch_scaling={batch_scaling!r} must be one of {BATCH_SCALINGS}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size={batch_size!r} must be a positive integer.")
    if batch_scaling == "per-rank":
        return batch_size, batch_size * world_size, float(world_size)
    if batch_size < world_size:
        raise ValidationError(
            f"batch_size={batch_size} is the global batch with batch_scaling='global' and must "
            f"be >= the world size {world_size}; raise batch_size or use batch_scaling='per-rank'."
        )
    per_rank = batch_size // world_size
    if per_rank * world_size != batch_size:
        logger.warning(
            "batch_size=%d is not divisible by world size %d: the global batch is %d",
            batch_size,
            world_size,
            per_rank * world_size,
        )
    return per_rank, per_rank * world_size, 1.0


def _epoch_loader_class():
    from torch.utils.data import DataLoader

    class EpochDataLoader(DataLoader):
        """A DataLoader whose DistributedSampler moves to the next epoch on every ``iter()``.

        Attributes ``per_rank_batch_size``, ``global_batch_size``, ``lr_scale`` and
        ``batch_scaling`` describe the batch policy; ``epoch`` is the epoch the next
        iteration uses (set it with :meth:`set_epoch` when resuming from a checkpoint).
        """

        def set_epoch(self, epoch):
            self.epoch = int(epoch)

        def __iter__(self):
            # DistributedSampler reshuffles only when told the epoch; forgetting it makes every
            # epoch use the same order, so the loader does it.
            self.sampler.set_epoch(self.epoch)
            self.epoch += 1
            return super().__iter__()

    return EpochDataLoader


_EPOCH_LOADER = None


def prepare_loader(
    dataset, batch_size, *, batch_scaling="global", shuffle=True, seed=0, **loader_kwargs
) -> torch.utils.data.DataLoader:
    """A DataLoader that gives this rank its share of ``dataset``.

    Uses :class:`torch.utils.data.DistributedSampler` on every engine (with one replica under
    the local twin), so the local twin and ``n`` ranks see the same shuffled order: with
    ``batch_scaling="global"``, step ``k`` of the ranks together covers exactly the samples of
    step ``k`` of the local twin. The epoch is advanced automatically on every ``iter()``.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset or tuple of arrays/tensors
        A tuple ``(X, y)`` is wrapped in a :class:`~torch.utils.data.TensorDataset`.
    batch_size : int
        The global batch (``"global"``) or the per-rank batch (``"per-rank"``).
    batch_scaling : {"global", "per-rank"}
        See :func:`batch_sizes`.
    shuffle : bool
    seed : int
        Shuffle seed; must be the same on all ranks (it is, when passed as an argument).
    **loader_kwargs
        Passed to :class:`torch.utils.data.DataLoader` (``num_workers``, ``pin_memory``...).

    Returns
    -------
    DataLoader
        With ``per_rank_batch_size``, ``global_batch_size``, ``lr_scale``, ``set_epoch``.
    """
    global _EPOCH_LOADER
    import torch
    from torch.utils.data import DistributedSampler, TensorDataset

    if isinstance(dataset, (tuple, list)):
        dataset = TensorDataset(*(torch.as_tensor(a) for a in dataset))
    for key in ("sampler", "batch_sampler", "shuffle"):
        if key in loader_kwargs:
            raise ValidationError(
                f"prepare_loader(..., {key}=...) is not allowed: the loader sets its own "
                "DistributedSampler; use shuffle= and seed= instead."
            )
    info = rank_info()
    per_rank, global_batch, lr_scale = batch_sizes(batch_size, info.world_size, batch_scaling)
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed
    )
    if _EPOCH_LOADER is None:
        _EPOCH_LOADER = _epoch_loader_class()
    loader = _EPOCH_LOADER(dataset, batch_size=per_rank, sampler=sampler, **loader_kwargs)
    loader.epoch = 0
    loader.per_rank_batch_size = per_rank
    loader.global_batch_size = global_batch
    loader.lr_scale = lr_scale
    loader.batch_scaling = batch_scaling
    return loader


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


def save_checkpoint(state) -> str | None:
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


def load_checkpoint() -> dict | None:
    """Load the job's last checkpoint, or return ``None`` when there is none yet.

    Every rank reads the file (with ``torch.load(..., weights_only=True)``, so only tensors
    and plain containers load) onto its own device.
    """
    import torch

    path = checkpoint_path()
    if path is None or not os.path.exists(path):
        return None
    return torch.load(path, map_location=rank_info().device, weights_only=True)
