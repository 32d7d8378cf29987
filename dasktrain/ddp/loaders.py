"""Loaders inside ``train_fn``: :func:`prepare_loader` and its batch rule, :func:`batch_sizes`.

The global batch rule: with ``batch_scaling="global"`` the ranks together take the batch a
single process would, so one ``train_fn`` converges alike on both engines.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..exceptions import DDPError, ValidationError
from .helpers import rank_info

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["batch_sizes", "prepare_loader", "BATCH_SCALINGS"]

BATCH_SCALINGS = ("global", "per-rank")


def batch_sizes(
    batch_size: int, world_size: int, batch_scaling: str = "global"
) -> tuple[int, int, float]:
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

        def state_dict(self):
            """Where the next batch of a shard's loader comes from (see ``Shard.state_dict``)."""
            return self._shard().state_dict()

        def load_state_dict(self, state):
            """Resume a shard's loader where :meth:`state_dict` was taken, also mid-epoch."""
            self._shard().load_state_dict(state)
            self.epoch = int(state["epoch"])

        def _shard(self):
            if not hasattr(self.dataset, "state_dict"):
                raise DDPError(
                    "only a loader over ddp.shard(...) keeps its place within an epoch; this "
                    "one samples an in-memory dataset: resume it at the start of an epoch "
                    "with set_epoch()."
                )
            return self.dataset

        def __iter__(self):
            # DistributedSampler (or a shard) reshuffles only when told the epoch; forgetting
            # it makes every epoch use the same order, so the loader does it.
            target = self.sampler if hasattr(self.sampler, "set_epoch") else self.dataset
            target.set_epoch(self.epoch)
            self.epoch += 1
            return super().__iter__()

    return EpochDataLoader


_EPOCH_LOADER = None


def prepare_loader(
    dataset: Any,
    batch_size: int,
    *,
    batch_scaling: str = "global",
    shuffle: bool | None = None,
    seed: int | None = None,
    **loader_kwargs: Any,
) -> torch.utils.data.DataLoader[Any]:
    """A DataLoader that gives this rank its share of ``dataset``.

    For an in-memory dataset, uses :class:`torch.utils.data.DistributedSampler` on every
    engine (with one replica under the local twin), so the local twin and ``n`` ranks see the
    same shuffled order: with ``batch_scaling="global"``, step ``k`` of the ranks together
    covers exactly the samples of step ``k`` of the local twin. For a :func:`shard` (a part
    of a dataset streamed from the workers) it reads the shard's rows in whole batches of
    the per-rank size, ``ceil(len(shard) / per_rank)`` steps on every rank. The epoch is
    advanced automatically on every ``iter()``.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset, tuple of arrays/tensors, or Shard
        A tuple ``(X, y)`` is wrapped in a :class:`~torch.utils.data.TensorDataset`; a shard
        of :func:`shard` is read as it comes.
    batch_size : int
        The global batch (``"global"``) or the per-rank batch (``"per-rank"``).
    batch_scaling : {"global", "per-rank"}
        See :func:`batch_sizes`.
    shuffle : bool, default True
        Not for a shard (it shuffles by itself: ``shard(name, shuffle=...)``).
    seed : int, default 0
        Shuffle seed; must be the same on all ranks (it is, when passed as an argument). Not
        for a shard (``shard(name, seed=...)``).
    **loader_kwargs
        Passed to :class:`torch.utils.data.DataLoader` (``num_workers``, ``pin_memory``...).

    Returns
    -------
    DataLoader
        With ``per_rank_batch_size``, ``global_batch_size``, ``lr_scale``, ``set_epoch`` (and,
        for a shard, ``state_dict`` / ``load_state_dict`` to resume mid-epoch).
    """
    global _EPOCH_LOADER
    import torch
    from torch.utils.data import DistributedSampler, TensorDataset

    from ._shard import Shard

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
    if _EPOCH_LOADER is None:
        _EPOCH_LOADER = _epoch_loader_class()
    if isinstance(dataset, Shard):
        _check_shard_loader(shuffle, seed, loader_kwargs)
        loader = _EPOCH_LOADER(dataset.batches(per_rank), batch_size=None, **loader_kwargs)
        loader.epoch = dataset.epoch
    else:
        sampler: DistributedSampler = DistributedSampler(
            dataset,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True if shuffle is None else shuffle,
            seed=0 if seed is None else seed,
        )
        loader = _EPOCH_LOADER(dataset, batch_size=per_rank, sampler=sampler, **loader_kwargs)
        loader.epoch = 0
    loader.per_rank_batch_size = per_rank
    loader.global_batch_size = global_batch
    loader.lr_scale = lr_scale
    loader.batch_scaling = batch_scaling
    return loader


def _check_shard_loader(shuffle, seed, loader_kwargs):
    if shuffle is not None or seed is not None:
        raise ValidationError(
            "prepare_loader(shard, shuffle=..., seed=...): a shard shuffles by itself; pass "
            "them to ddp.shard(name, shuffle=..., seed=...)."
        )
    if loader_kwargs.get("num_workers", 0):
        raise ValidationError(
            f"prepare_loader(shard, num_workers={loader_kwargs['num_workers']!r}): use 0; a "
            "shard's chunks are made on the Dask worker already, and each loader process "
            "would read the whole shard again."
        )
