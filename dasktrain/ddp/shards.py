"""Inside ``train_fn``: each rank's own part of a dataset of the job, :func:`shard`.

``ddp.run(train_fn, datasets={"train": images, ...})`` hands the datasets to the job without
bringing them to the client; inside ``train_fn``, ``ddp.shard("train")`` is this rank's part
of ``images``, read chunk by chunk from this rank's own worker (see :mod:`._feeder`). Under
:func:`~dasktrain.ddp.run_local` the same call reads every chunk, in the same order, in this
process. :func:`dataset_names` lists what the job was given.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..exceptions import DDPError, ValidationError
from . import _env
from .helpers import _local_context, rank_info

if TYPE_CHECKING:
    from ._shard import Shard

__all__ = ["shard", "dataset_names"]

# The rank's spool (one per job: a pooled rank process serves many jobs, each its own folder).
_SPOOL: dict = {}


def _source():
    """``(meta by dataset, source)`` of this job's datasets, or None without datasets."""
    ctx = _local_context()
    if ctx is not None:
        if not ctx.datasets:
            return None
        return {n: f.meta() for n, f in ctx.datasets.items()}, ctx.source
    folder = os.environ.get(_env.ENV_SHARDS) if _env.launched() else None
    if not folder:
        return None
    if folder not in _SPOOL:
        from ._feeder import SpoolSource

        _SPOOL.clear()  # an earlier job's spool is gone
        _SPOOL[folder] = SpoolSource(folder)
    source = _SPOOL[folder]
    return source.meta, source


def dataset_names() -> list[str]:
    """The names of the datasets of this job (``datasets=`` of ``run``), ``[]`` when none."""
    found = _source()
    return [] if found is None else list(found[0])


def _check_int(value, name, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValidationError(f"{name}={value!r} must be an integer >= {minimum}.")


def shard(
    name: str,
    *,
    shuffle: bool = True,
    seed: int = 0,
    even: bool = True,
    window: int = 2,
    prefetch: int = 2,
) -> Shard:
    """This rank's part of the dataset ``name`` of the job, read chunk by chunk.

    Every epoch (each ``iter()``), the chunks of the whole dataset are put in a seeded order
    that changes with the epoch and dealt to the ranks: a chunk held in the memory of a rank's
    worker (a persisted dataset) goes to that rank, the others (a lazy ``ImageSet``: decoded
    on the rank's own worker) so that every rank gets the same number of rows. A rank reads
    its chunks ``window`` at a time and shuffles the rows of a window together, while its
    worker prepares the next ``prefetch`` chunks: it never holds more than
    ``window + prefetch`` chunks, whatever the size of the dataset. Nothing goes through the
    client.

    Parameters
    ----------
    name : str
        A key of ``datasets=`` of :func:`~dasktrain.ddp.run` / :func:`run_local`.
    shuffle : bool
        Shuffle the chunk order and the rows (False: chunks in order, rows in order; for
        validation).
    seed : int
        Seeds the order of every epoch: the same on every rank (and in the local twin), so
        an epoch's order is reproducible and differs from the next epoch's.
    even : bool
        True (training): every rank reads exactly ``total // world_size`` rows per epoch, so
        every rank takes the same number of steps; the last ``total % world_size`` rows of
        the epoch's order (fewer than one per rank, different rows every epoch) are left out.
        False (evaluation): every row exactly once; ranks differ by one row at most, so do not
        run collectives per batch (score with :func:`~dasktrain.ddp.unwrap_model` and reduce
        the sums once, as :mod:`~dasktrain.ddp.recipes` does).
    window : int
        Chunks whose rows are shuffled together. A batch mixes rows of ``window`` chunks;
        more mixes better (chunks that each hold one class, as ``read_images`` lists files
        class by class, need it), at ``window`` chunks of memory.
    prefetch : int
        Chunks prepared ahead on the worker (or, under ``run_local``, in a thread).

    Returns
    -------
    Shard
        A :class:`torch.utils.data.IterableDataset` of ``(x, y)`` tensors (one tensor for a
        one-part dataset) with ``len()`` (rows per epoch on this rank), ``set_epoch``,
        ``state_dict`` / ``load_state_dict`` (resume mid-epoch), ``batches(n)``, ``classes``
        and ``row_shapes``. Pass it to :func:`~dasktrain.ddp.prepare_loader` for batches that
        keep the global batch rule.

    Raises
    ------
    DDPError
        Outside a job with ``datasets=``, or when a chunk cannot be read (the message names
        the chunk, the dataset and the worker).
    ValidationError
        An unknown ``name`` (the job's names are listed) or a bad option.

    See Also
    --------
    dataset_names : the datasets of this job.
    """
    for value, label in ((shuffle, "shuffle"), (even, "even")):
        if not isinstance(value, bool):
            raise ValidationError(f"{label}={value!r} must be True or False.")
    _check_int(seed, "seed", 0)
    _check_int(window, "window", 1)
    _check_int(prefetch, "prefetch", 1)
    found = _source()
    if found is None:
        raise DDPError(
            f"shard({name!r}) reads a dataset of the job: call it inside train_fn of "
            "ddp.run(train_fn, ..., datasets={...}) or ddp.run_local(train_fn, ..., "
            "datasets={...})."
        )
    meta, source = found
    if name not in meta:
        raise ValidationError(
            f"shard({name!r}): the job has no dataset {name!r}; its datasets are {sorted(meta)!r}."
        )
    from ._shard import Shard  # noqa: F811 (imports torch: at call time only)

    info = rank_info()
    return Shard(
        name,
        meta[name],
        source,
        rank=info.rank,
        world_size=info.world_size,
        shuffle=shuffle,
        seed=seed,
        even=even,
        window=window,
        prefetch=prefetch,
    )
