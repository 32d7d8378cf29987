"""Ready-made training functions that run unchanged under :func:`~dasktrain.ddp.run` and
:func:`~dasktrain.ddp.run_local` (used by the examples, the benchmarks and the ``ddp_cnn``
workload of :func:`dasktrain.compare`).

They are module-level functions of an importable module, so a rank process unpickles them by
reference instead of by value.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from ..exceptions import ValidationError
from . import _recipe_data
from ._comm import check_ddp_options
from .helpers import (
    load_checkpoint,
    micro_batches,
    prepare_model,
    rank_info,
    report,
    save_checkpoint,
    unwrap_model,
)

logger = logging.getLogger(__name__)

__all__ = ["train_classifier", "MODELS"]

MODELS = ("smallcnn", "resnet18", "resnet34", "vgg19", "mlp")
POOLS = ("max", "avg")
SCHEDULES = ("onecycle", "constant")
NORMALIZE = ("auto", "image", None)


def _pooled_head(pool, dim, num_classes):
    """Global pooling of the trunk's feature maps, then one linear layer."""
    from torch import nn

    class PooledHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(dim, num_classes)

        def forward(self, x):
            # Max: a lesion anywhere in the image counts fully, where a mean over the
            # whole map dilutes a few bright patches into the background.
            z = x.amax(dim=(2, 3)) if pool == "max" else x.mean(dim=(2, 3))
            return self.fc(z)

    return PooledHead()


def _build_model(model, *, n_features, in_channels, num_classes, seed, hidden, pool):
    import torch
    from torch import nn

    # fork_rng: the same seed gives the same weights on every rank and in the local twin,
    # without moving the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if callable(model):  # a builder (in_channels, num_classes) -> torch.nn.Module
            return model(in_channels, num_classes)
        if model == "mlp":
            return nn.Sequential(
                nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        from ..features import build_backbone, get_backbone

        trunk = build_backbone(model, num_classes=None, in_channels=in_channels, seed=seed)
        head = _pooled_head(pool, get_backbone(model).feature_dim, num_classes)
        return nn.Sequential(trunk, head)


def _allreduce(values, info):
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if info.world_size > 1:
        if info.backend == "nccl":
            t = t.to(info.device)
        dist.all_reduce(t)
    return t.cpu().tolist()


def _evaluate(net, batches, info):
    """``(loss, accuracy)`` over every rank's validation batches (sums all-reduced once)."""
    import torch
    import torch.nn.functional as F

    # Score with the bare module: a DDP wrapper's forward may broadcast buffers (a collective),
    # and ranks score different numbers of batches, so collectives here could deadlock.
    net = unwrap_model(net)
    net.eval()
    loss_sum = correct = count = 0.0
    with torch.no_grad():
        for xb, yb in batches:
            xb, yb = xb.to(info.device), yb.to(info.device).long()
            out = net(xb)
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += float((out.argmax(1) == yb).sum())
            count += len(yb)
    net.train()
    loss_sum, correct, count = _allreduce([loss_sum, correct, count], info)
    return loss_sum / max(count, 1), correct / max(count, 1)


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
    setup = _setup(
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
    return _train(setup, info, epochs)


def _train(setup, info, epochs):
    """The epochs (from the checkpoint, if any) and the result dict."""
    history, start = _resume(setup, info)
    train_time, samples = 0.0, 0.0
    train_start = time.time()
    for epoch in range(start.epoch, epochs):
        record, count, seconds = _epoch(setup, info, epoch, history, start)
        start = _Start(epoch + 1)
        train_time += seconds
        samples += count
        if setup.data.val is not None:
            record["val_loss"], record["accuracy"] = _evaluate(setup.net, setup.data.val(), info)
        else:
            record["accuracy"] = record["train_accuracy"]
        history.append(record)
        report(**record)
        _save(setup, info, epoch, history)
    return {
        "history": history,
        "samples_per_s": samples / train_time if train_time > 0 else float("nan"),
        "train_time": train_time,
        "train_start": train_start,
        "world_size": info.world_size,
        "rank": info.rank,
        "global_batch_size": setup.loader.global_batch_size,
        "lr": setup.lr,
        "resumed_from": setup.resumed[0],
        "resumed_step": setup.resumed[1],
    }


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


class _Setup(NamedTuple):
    net: object  # the prepared (DDP-wrapped when the group is active) model
    loader: object
    opt: object
    lr: float  # the learning rate of one step (scaled for batch_scaling="per-rank")
    sched: object  # the learning-rate schedule (None: constant), stepped once per batch
    accumulation_steps: int  # micro-batches per batch (gradients all-reduced once per batch)
    data: object  # _recipe_data.Data: the loader, the batch preparation, the validation
    checkpoint_steps: int | None  # also checkpoint every this many steps within an epoch
    resumed: list  # [epoch, step] the run resumed from ([None, None]: from the start)


class _Start(NamedTuple):
    """Where an epoch begins: at its start, or where a mid-epoch checkpoint left it."""

    epoch: int
    step: int = 0
    sums: tuple = (0.0, 0.0, 0.0)  # loss sum, correct, count of all ranks before the restart
    elapsed: float = 0.0  # seconds of the epoch before the restart
    skip: int = 0  # batches to pass over (an in-memory loader; a shard skips by itself)


def _setup(
    data,
    model,
    epochs,
    *,
    lr,
    seed,
    hidden,
    pool,
    schedule,
    ddp_options,
    accumulation_steps,
    checkpoint_steps,
):
    """The model (same weights on every rank), its optimiser and schedule, around ``data``."""
    import torch

    net = _build_model(
        model,
        n_features=data.n_inputs,
        in_channels=data.n_inputs,
        num_classes=data.num_classes,
        seed=seed,
        hidden=hidden,
        pool=pool,
    )
    net = prepare_model(net, **ddp_options)
    loader = data.loader
    step_lr = lr * loader.lr_scale
    opt = torch.optim.Adam(net.parameters(), lr=step_lr)
    sched = None
    if schedule == "onecycle":
        # Every rank takes len(loader) steps per epoch (the sampler pads, a shard deals equal
        # rows), as the local twin does with the global batch: the same schedule everywhere.
        steps = max(1, epochs * len(loader))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=step_lr, total_steps=steps)
    return _Setup(
        net, loader, opt, step_lr, sched, accumulation_steps, data, checkpoint_steps,
        [None, None],
    )  # fmt: skip


def _resume(setup, info):
    """``(history, start)`` from the job's checkpoint, the model, optimiser, schedule and
    loader restored; ``([], _Start(0))`` without one."""
    state = load_checkpoint() if info.checkpoint_dir else None
    if state is None:
        return [], _Start(0)
    unwrap_model(setup.net).load_state_dict(state["model"])
    setup.opt.load_state_dict(state["optimizer"])
    if setup.sched is not None and state.get("scheduler") is not None:
        setup.sched.load_state_dict(state["scheduler"])
    position = state.get("position")
    if position is None:
        start = _Start(int(state["epoch"]) + 1)
        setup.loader.set_epoch(start.epoch)
    else:
        epoch, step = int(position["epoch"]), int(position["step"])
        sums, elapsed = tuple(position["sums"]), float(position["elapsed"])
        if setup.data.shard is not None and position.get("data") is not None:
            setup.loader.load_state_dict(position["data"])  # the shard reads the rest
            start = _Start(epoch, step, sums, elapsed)
        else:
            setup.loader.set_epoch(epoch)
            start = _Start(epoch, step, sums, elapsed, skip=step)
    setup.resumed[:] = [start.epoch, start.step]
    logger.info("rank %d resumes at epoch %d, step %d", info.rank, start.epoch, start.step)
    return list(state["history"]), start


def _step(setup, xb, yb, sums):
    """One optimiser step on a batch; adds its loss sum, correct and count to ``sums``."""
    import torch.nn.functional as F

    net = setup.net
    setup.opt.zero_grad(set_to_none=True)
    # One micro-batch (the whole batch) unless accumulation_steps > 1; the gradients are
    # all-reduced once, after the last micro-batch.
    for weight, xm, ym in micro_batches(net, xb, yb, steps=setup.accumulation_steps):
        out = net(xm)
        loss = F.cross_entropy(out, ym)
        (loss * weight).backward()
        sums[0] += loss.detach().double().cpu() * len(ym)
        sums[1] += (out.detach().argmax(1) == ym).sum().cpu()
        sums[2] += len(ym)
    setup.opt.step()
    if setup.sched is not None:
        setup.sched.step()


def _epoch(setup, info, epoch, history, start):
    """One training pass from ``start``: its record, the samples all ranks trained on in this
    run, and this run's seconds of it."""
    import torch

    prep = setup.data.prep
    setup.net.train()
    t0 = time.perf_counter()
    # The loss of the steps before a restart counts once: on rank 0.
    sums = torch.tensor(start.sums if info.rank == 0 else (0.0, 0.0, 0.0), dtype=torch.float64)
    batches = iter(setup.loader)
    for _ in range(start.skip):
        next(batches, None)
    step, trained = start.step, 0
    for xb, yb in batches:
        xb = (xb if prep is None else prep(xb)).to(info.device)
        _step(setup, xb, yb.to(info.device).long(), sums)
        step += 1
        trained += len(yb)
        every = setup.checkpoint_steps
        if info.checkpoint_dir and every and step % every == 0 and step < len(setup.loader):
            elapsed = start.elapsed + time.perf_counter() - t0
            _save_position(setup, info, epoch, step, sums, elapsed, history)
    seconds = time.perf_counter() - t0
    loss_all, correct_all, count_all, trained_all = _allreduce(
        [*sums.tolist(), float(trained)], info
    )
    record = {
        "epoch": epoch,
        "loss": loss_all / count_all,
        "train_accuracy": correct_all / count_all,
        "epoch_time": start.elapsed + seconds,
    }
    return record, trained_all, seconds


def _state(setup, epoch, history):
    return {
        "model": unwrap_model(setup.net).state_dict(),
        "optimizer": setup.opt.state_dict(),
        "scheduler": setup.sched.state_dict() if setup.sched is not None else None,
        "epoch": epoch,  # the last complete epoch
        "history": history,
    }


def _save(setup, info, epoch, history):
    """Checkpoint model, optimiser and history after ``epoch`` (when checkpoints are on)."""
    if info.checkpoint_dir:
        save_checkpoint(_state(setup, epoch, history))


def _save_position(setup, info, epoch, step, sums, elapsed, history):
    """Checkpoint within ``epoch`` after ``step`` steps: also the loss so far (of all ranks:
    every rank calls this at the same step) and, for a shard, where it is."""
    totals = _allreduce(sums.tolist(), info)
    state = _state(setup, epoch - 1, history)
    state["position"] = {
        "epoch": epoch,
        "step": step,
        "sums": totals,
        "elapsed": elapsed,
        "data": setup.loader.state_dict() if setup.data.shard is not None else None,
    }
    save_checkpoint(state)
