"""Ready-made training functions that run unchanged under :func:`~dasktrain.ddp.run` and
:func:`~dasktrain.ddp.run_local` (used by the examples, the benchmarks and the ``ddp_cnn``
workload of :func:`dasktrain.compare`).

They are module-level functions of an importable module, so a rank process unpickles them by
reference instead of by value.
"""

from __future__ import annotations

from ..exceptions import ValidationError
from . import _recipe_data, _recipe_loop
from ._comm import check_ddp_options
from .helpers import (
    rank_info,
)

__all__ = ["train_classifier", "MODELS"]

MODELS = ("smallcnn", "resnet18", "resnet34", "vgg19", "mlp")
POOLS = ("max", "avg")
SCHEDULES = ("onecycle", "constant")
NORMALIZE = ("auto", "image", None)


def train_classifier(
    X=None,
    y=None,
    *,
    X_val=None,
    y_val=None,
    model="smallcnn",
    epochs=3,
    batch_size=64,
    lr=1e-3,
    seed=0,
    batch_scaling="global",
    hidden=64,
    normalize="auto",
    pool="max",
    schedule="onecycle",
    comm_hook=None,
    bucket_cap_mb=None,
    gradient_as_bucket_view=False,
    static_graph=False,
    accumulation_steps=1,
    num_classes=None,
    checkpoint_steps=None,
    window=2,
) -> dict:
    """Train a classifier with Adam and cross-entropy; works under ``run`` and ``run_local``.

    The data comes either from the job's datasets (``X=None``: ``ddp.run(train_classifier,
    datasets={"train": ..., "val": ...})``, each rank reading its own shard from its own
    worker, see :func:`~dasktrain.ddp.shard`) or from arrays passed to every rank.

    Parameters
    ----------
    X : ndarray of shape (n, height, width, channels) or (n, n_features), optional
        Images (``ImageSet.X``) for a CNN, feature vectors for ``model="mlp"``. None (the
        default): train on ``shard("train")`` of the job's ``datasets=`` and score on
        ``shard("val")`` when the job has a dataset ``"val"``; each batch is standardised and
        transposed as it arrives.
    y : ndarray of shape (n,), optional
        Integer class labels ``0..k-1`` (with ``X``).
    X_val, y_val : ndarray, optional
        Held-out data scored after every epoch (split across the ranks), with ``X``.
    model : {"smallcnn", "resnet18", "resnet34", "vgg19", "mlp"} or callable
        CNNs come from ``dasktrain.features.build_backbone`` with random weights. A
        callable ``model(in_channels, num_classes)`` builds a CNN for ``(n, c, h, w)``
        batches (the Keras recipe's way in, see ``recipes_keras``).
    epochs : int
    batch_size : int
        The global batch with ``batch_scaling="global"`` (the default, so 1 and ``n`` ranks
        take the same optimiser steps); the per-rank batch with ``"per-rank"``, where the
        learning rate is multiplied by the world size (linear scaling rule).
    lr : float
        Adam learning rate for the global batch (the peak rate with ``schedule="onecycle"``).
    seed : int
        Seeds the weights and the shuffle: same seed, same run on both engines.
    hidden : int
        Hidden units of the MLP.
    normalize : {"auto", "image", None}
        ``"image"`` standardises each image (mean 0, standard deviation 1, over its own
        pixels) before training and scoring; ``"auto"`` does so for the CNNs and leaves the
        MLP's features as they are; None never.
    pool : {"max", "avg"}
        Global pooling of a CNN's last feature maps before its linear head: ``"max"`` finds
        small local signs (a patch of opacity) that an average over the image dilutes.
    schedule : {"onecycle", "constant"}
        ``"onecycle"`` warms the learning rate up to ``lr`` over the first 30% of the steps
        and anneals it to almost 0 (:class:`torch.optim.lr_scheduler.OneCycleLR`): steady
        training in few epochs. ``"constant"`` keeps ``lr``.
    comm_hook : {None, "fp16", "bf16"}
        Gradients compressed to 16 bits for the all-reduce (torch's compression hooks; see
        :func:`~dasktrain.ddp.prepare_model`). No effect with one rank.
    bucket_cap_mb : float, optional
        Size of DDP's all-reduce buckets in MB (None: torch's default, 25).
    gradient_as_bucket_view : bool
        Gradients kept in DDP's buckets (one copy less per step).
    static_graph : bool
        Tell DDP the graph is the same every step (it may then skip some bookkeeping). Not
        with ``accumulation_steps > 1`` (torch's DDP fails under ``no_sync`` then).
    accumulation_steps : int
        Split each rank's batch into this many micro-batches and accumulate their gradients
        (:func:`~dasktrain.ddp.micro_batches`), all-reducing once per optimiser step under
        ``no_sync``. The global batch per optimiser step stays ``batch_size``, so the updates
        are those of ``accumulation_steps=1`` up to float rounding: it lowers the memory of a
        step, not the traffic per step.
    num_classes : int, optional
        Classes of the head. Default: from the labels (arrays) or the ImageSet's classes
        (datasets); required for other datasets, whose labels are not read up front.
    checkpoint_steps : int, optional
        With a ``checkpoint_dir``, also checkpoint every this many steps within an epoch
        (model, optimiser, schedule, the loss so far and, for datasets, where each shard is):
        a restarted job then resumes within the epoch instead of at its start.
    window : int
        Chunks of ``datasets["train"]`` whose rows are shuffled together (see
        :func:`~dasktrain.ddp.shard`).

    Returns
    -------
    dict
        ``history``: one record per epoch with ``epoch``, ``loss`` and ``train_accuracy``
        (training pass), ``accuracy`` (on ``X_val`` when given, else the training accuracy)
        and ``val_loss``; ``samples_per_s`` (training samples of all ranks per second of
        training, evaluation excluded), ``train_time`` (s), ``train_start`` (UNIX time the
        first epoch began: what came before is start-up), ``world_size``, ``rank``,
        ``global_batch_size``, ``lr``, ``resumed_from`` and ``resumed_step`` (the epoch
        and step a restarted run began at, or None).

    Notes
    -----
    With a ``checkpoint_dir`` the model, optimiser and history are checkpointed after every
    epoch (and every ``checkpoint_steps`` steps), and a restarted job resumes from the last
    checkpoint: at the next epoch, or at the step it was taken.
    """
    _check_choices(normalize, pool, schedule)
    ddp_options = dict(
        comm_hook=comm_hook,
        bucket_cap_mb=bucket_cap_mb,
        gradient_as_bucket_view=gradient_as_bucket_view,
        static_graph=static_graph,
    )
    accumulation_steps = check_ddp_options(comm_hook, ddp_options, accumulation_steps)
    _check_optional_int(num_classes, "num_classes", 2)
    _check_optional_int(checkpoint_steps, "checkpoint_steps", 1)
    info = rank_info()
    opts = {
        "model": model,
        "epochs": epochs,
        "models": MODELS + ((model,) if callable(model) else ()),
        "batch_size": batch_size,
        "batch_scaling": batch_scaling,
        "seed": seed,
        "num_classes": num_classes,
        "window": window,
        "standardize": normalize == "image" or (normalize == "auto" and model != "mlp"),
    }
    if X is None:
        if y is not None or X_val is not None:
            raise ValidationError("y or X_val were given without X; pass X too, or neither.")
        data = _recipe_data.sharded(info, opts=opts)
    else:
        data = _recipe_data.in_memory(X, y, X_val, y_val, info, opts=opts)
    setup = _recipe_loop.make_setup(
        data,
        model,
        epochs,
        lr=lr,
        seed=seed,
        hidden=hidden,
        pool=pool,
        schedule=schedule,
        ddp_options=ddp_options,
        accumulation_steps=accumulation_steps,
        checkpoint_steps=checkpoint_steps,
    )
    return _recipe_loop.train(setup, info, epochs)


def _check_optional_int(value, name, minimum):
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < minimum
    ):
        raise ValidationError(f"{name}={value!r} must be None or an integer >= {minimum}.")


def _check_choices(normalize, pool, schedule):
    for value, name, allowed in (
        (normalize, "normalize", NORMALIZE),
        (pool, "pool", POOLS),
        (schedule, "schedule", SCHEDULES),
    ):
        if value not in allowed:
            raise ValidationError(f"{name}={value!r} must be one of {allowed}.")
