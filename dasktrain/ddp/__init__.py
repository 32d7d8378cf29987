"""PyTorch DistributedDataParallel on Dask workers, and its one-process local twin.

``run(train_fn, ...)`` starts one rank process per selected Dask worker and returns
``{rank: value}`` (a :class:`DDPResult` that also carries per-rank logs and the metric
history); ``run_local(train_fn, ...)`` runs the same function in this process with world size 1.
Inside ``train_fn`` use :func:`prepare_model`, :func:`prepare_loader`, :func:`micro_batches`,
:func:`report`, :func:`save_checkpoint` / :func:`load_checkpoint`, :func:`rank_info`, and
:func:`shard` for this rank's part of a dataset passed as ``datasets=``; they work on both
engines. Importing this package does not import torch.
"""

from ..exceptions import DDPError
from ._pool import RankPool
from ._records import DDPResult
from .helpers import (
    load_checkpoint,
    micro_batches,
    prepare_model,
    rank_info,
    report,
    save_checkpoint,
    unwrap_model,
)
from .launcher import run
from .loaders import batch_sizes, prepare_loader
from .local import run_local
from .shards import dataset_names, shard

__all__ = [
    "run",
    "run_local",
    "RankPool",
    "DDPResult",
    "DDPError",
    "report",
    "prepare_model",
    "micro_batches",
    "prepare_loader",
    "batch_sizes",
    "save_checkpoint",
    "load_checkpoint",
    "rank_info",
    "unwrap_model",
    "shard",
    "dataset_names",
]
