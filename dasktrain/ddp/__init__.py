"""PyTorch DistributedDataParallel on Dask workers, and its one-process local twin.

``run(train_fn, ...)`` starts one rank process per selected Dask worker and returns
``{rank: value}`` (a :class:`DDPResult` that also carries per-rank logs and the metric
history); ``run_local(train_fn, ...)`` runs the same function in this process with world size 1.
Inside ``train_fn`` use :func:`prepare_model`, :func:`prepare_loader`, :func:`micro_batches`,
:func:`report`, :func:`save_checkpoint` / :func:`load_checkpoint`, :func:`rank_info`, and
:func:`shard` for this rank's part of a dataset passed as ``datasets=``; they work on both
engines. Importing this package does not import torch.

**Note for developers.** The modules stand in layers; each imports only modules of the layers
below its own (``tests/test_architecture.py`` checks it).

1. ``launcher``, ``recipes_keras``, ``tf_launcher``
   ``run()``: its arguments checked, the job handed on; a Keras 3 model (torch backend) as a
   ``train_fn``; ``dasktrain.tf.run()``: the same job with TensorFlow rank processes
   (``TF_CONFIG``, ``MultiWorkerMirroredStrategy``), and ``run_local()``'s TensorFlow twin.
2. ``_pool``, ``recipes``, ``tf_recipes``
   The warm ``RankPool`` (its first job runs through ``_job``); the ready-made ``train_fn``
   recipes, torch and TensorFlow.
3. ``_job``, ``_recipe_data``, ``_recipe_loop``
   One job: the launcher's argument checks, attempts (a pool's workers from its
   ``workers_for_attempt``), restarts, the report history; the recipes' data (arrays or
   shards) and training loop (network, resume, epochs, evaluation, checkpoints).
4. ``_group``, ``_select``, ``_tf_rank``
   One process group (start, watch, teardown, root cause; a pool's group through the pool's
   ``group_for``, ``rank_task``, ``reset``); its workers chosen and locked (one
   ``distributed.Lock`` each, all or none); the TensorFlow rank process.
5. ``_pool_worker``, ``_rank``, ``_worker``, ``loaders``, ``local``, ``shards``, ``tf_context``
   On a worker: the pooled rank process of each pool and its watchdog, the one-job rank task
   and the port probe; the torch rank process (one job, or a pool's); ``prepare_loader`` and
   the batch rule; ``run_local()`` and what every twin shares; ``shard()``; what a
   TensorFlow ``train_fn`` calls (task info, weights, the ``model.fit`` refusal).
6. ``_feeder``, ``_rank_process``, ``_supervise``, ``helpers``
   The thread beside a rank that makes the chunks it asks for; what every rank process does
   (parent watch, folders, the payload run and its result, the exit); what both rank tasks do
   to supervise one (files, command, watch, result); rank info, metrics, the model and
   checkpoints inside ``train_fn``.
7. ``_env``, ``_shard``
   The environment-variable contract and exit codes (the only place their names are
   written); the torch dataset of a shard.
8. ``_chunks``, ``_comm``, ``_datasets``, ``_plan``, ``_records``, ``_sockets``, ``_tf_env``,
   ``_tf_net``
   One chunk made; how the ranks exchange gradients (DDP options, hooks); ``datasets=``
   checked and described as a ``Feed``; the epoch's chunks dealt; ``RankSpec``,
   ``RankStatus``, ``RankResult``, ``Failure``, ``DDPResult``; the rendezvous sockets bound
   to one address, the host and the interface of an address; TensorFlow's variables; the
   TensorFlow small CNN and Adam.
"""

from ..exceptions import DDPError

# ``X as X``: the environment contract of a rank process, for the other rooms of dasktrain (the
# harness's monitor names the DDP ranks among a worker's children), not in __all__.
from ._env import ENV_BACKEND as ENV_BACKEND
from ._env import RANK as RANK
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
