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

import numpy as np

from ..exceptions import ValidationError
from ._comm import check_ddp_options
from .helpers import (
    load_checkpoint,
    micro_batches,
    prepare_loader,
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
        if model == "mlp":
            return nn.Sequential(
                nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        from ..features._backbones import build, get_backbone

        trunk = build(model, num_classes=None, in_channels=in_channels, seed=seed)
        head = _pooled_head(pool, get_backbone(model).feature_dim, num_classes)
        return nn.Sequential(trunk, head)


def _standardize(X):
    """Each image to mean 0 and standard deviation 1 (its own statistics, so every rank and
    the local twin see the same numbers, and the brightness of an exposure does not count)."""
    axes = tuple(range(1, X.ndim))
    mean = X.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = X.std(axis=axes, keepdims=True, dtype=np.float64)
    return ((X - mean) / (std + 1e-6)).astype(np.float32)


def _as_inputs(X, y, model, name):
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if model == "mlp":
        if X.ndim != 2:
            raise ValidationError(
                f"{name} has shape {X.shape}; model='mlp' needs (n_samples, n_features). "
                "Flatten images first, or use a CNN model."
            )
    elif X.ndim != 4:
        raise ValidationError(
            f"{name} has shape {X.shape}; model={model!r} needs images (n, height, width, "
            "channels), e.g. ImageSet.X."
        )
    if len(X) != len(y):
        raise ValidationError(f"{name} has {len(X)} samples but its labels have {len(y)}.")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise ValidationError(
            f"labels for {name} must be integers >= 0 (class indices), got dtype {y.dtype}."
        )
    if X.ndim == 4:
        # (n, h, w, c) as read_images returns -> (n, c, h, w) as torch convolutions want.
        X = np.ascontiguousarray(X.transpose(0, 3, 1, 2))
    return X, y.astype(np.int64)


def _allreduce(values, info):
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if info.world_size > 1:
        if info.backend == "nccl":
            t = t.to(info.device)
        dist.all_reduce(t)
    return t.cpu().tolist()


def _evaluate(net, X, y, info, batch=256):
    import torch
    import torch.nn.functional as F

    # Each rank scores every world_size-th sample (no padding) and the sums are all-reduced,
    # so the score is exact and the work is split.
    idx = np.arange(info.rank, len(X), info.world_size)
    # Score with the bare module: a DDP wrapper's forward may broadcast buffers (a collective),
    # and ranks score different numbers of batches, so collectives here could deadlock.
    net = unwrap_model(net)
    net.eval()
    loss_sum = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            xb = torch.from_numpy(X[part]).to(info.device)
            yb = torch.from_numpy(y[part]).to(info.device)
            out = net(xb)
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += float((out.argmax(1) == yb).sum())
    net.train()
    loss_sum, correct, count = _allreduce([loss_sum, correct, float(len(idx))], info)
    return loss_sum / max(count, 1), correct / max(count, 1)


def train_classifier(
    X,
    y,
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
) -> dict:
    """Train a classifier with Adam and cross-entropy; works under ``run`` and ``run_local``.

    Parameters
    ----------
    X : ndarray of shape (n, height, width, channels) or (n, n_features)
        Images (``ImageSet.X``) for a CNN, feature vectors for ``model="mlp"``.
    y : ndarray of shape (n,)
        Integer class labels ``0..k-1``.
    X_val, y_val : ndarray, optional
        Held-out data scored after every epoch (split across the ranks).
    model : {"smallcnn", "resnet18", "resnet34", "vgg19", "mlp"}
        CNNs come from ``dasktrain.features._backbones.build`` with random weights.
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

    Returns
    -------
    dict
        ``history``: one record per epoch with ``epoch``, ``loss`` and ``train_accuracy``
        (training pass), ``accuracy`` (on ``X_val`` when given, else the training accuracy)
        and ``val_loss``; ``samples_per_s`` (training samples of all ranks per second of
        training, evaluation excluded), ``train_time`` (s), ``train_start`` (UNIX time the
        first epoch began: what came before is start-up), ``world_size``, ``rank``,
        ``global_batch_size``, ``lr``, ``resumed_from`` (epoch, or None).

    Notes
    -----
    With a ``checkpoint_dir`` the model, optimiser and history are checkpointed after every
    epoch, and a restarted job resumes from the last complete epoch.
    """
    _check_choices(normalize, pool, schedule)
    ddp_options = dict(
        comm_hook=comm_hook,
        bucket_cap_mb=bucket_cap_mb,
        gradient_as_bucket_view=gradient_as_bucket_view,
        static_graph=static_graph,
    )
    accumulation_steps = check_ddp_options(comm_hook, ddp_options, accumulation_steps)
    X, y, val = _check_inputs(X, y, X_val, y_val, model, epochs)
    if normalize == "image" or (normalize == "auto" and model != "mlp"):
        X = _standardize(X)
        val = (_standardize(val[0]), val[1]) if val is not None else None
    info = rank_info()
    setup = _setup(
        X,
        y,
        val,
        model,
        epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        batch_scaling=batch_scaling,
        hidden=hidden,
        pool=pool,
        schedule=schedule,
        ddp_options=ddp_options,
        accumulation_steps=accumulation_steps,
    )
    history, start_epoch, resumed_from = _resume(setup, info)
    train_time, samples = 0.0, 0.0
    train_start = time.time()
    for epoch in range(start_epoch, epochs):
        record, count = _epoch(setup, info, epoch)
        train_time += record["epoch_time"]
        samples += count
        if val is not None:
            record["val_loss"], record["accuracy"] = _evaluate(setup.net, *val, info)
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
        "resumed_from": resumed_from,
    }


def _check_choices(normalize, pool, schedule):
    for value, name, allowed in (
        (normalize, "normalize", NORMALIZE),
        (pool, "pool", POOLS),
        (schedule, "schedule", SCHEDULES),
    ):
        if value not in allowed:
            raise ValidationError(f"{name}={value!r} must be one of {allowed}.")


def _check_inputs(X, y, X_val, y_val, model, epochs):
    """``(X, y, val)`` ready for torch; ``val`` is ``(X_val, y_val)`` or None."""
    if model not in MODELS:
        raise ValidationError(f"model={model!r} must be one of {MODELS}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValidationError(f"epochs={epochs!r} must be a positive integer.")
    X, y = _as_inputs(X, y, model, "X")
    if X_val is None:
        return X, y, None
    if y_val is None:
        raise ValidationError("X_val was given without y_val.")
    return X, y, _as_inputs(X_val, y_val, model, "X_val")


class _Setup(NamedTuple):
    net: object  # the prepared (DDP-wrapped when the group is active) model
    loader: object
    opt: object
    lr: float  # the learning rate of one step (scaled for batch_scaling="per-rank")
    sched: object  # the learning-rate schedule (None: constant), stepped once per batch
    accumulation_steps: int  # micro-batches per batch (gradients all-reduced once per batch)


def _setup(
    X,
    y,
    val,
    model,
    epochs,
    *,
    batch_size,
    lr,
    seed,
    batch_scaling,
    hidden,
    pool,
    schedule,
    ddp_options,
    accumulation_steps,
):
    """The model (same weights on every rank), this rank's loader, optimiser and schedule."""
    import torch

    num_classes = int(max(y.max(), val[1].max() if val is not None else 0)) + 1
    net = _build_model(
        model,
        n_features=X.shape[1],
        in_channels=X.shape[1],
        num_classes=num_classes,
        seed=seed,
        hidden=hidden,
        pool=pool,
    )
    net = prepare_model(net, **ddp_options)
    loader = prepare_loader(
        (torch.from_numpy(X), torch.from_numpy(y)),
        batch_size,
        batch_scaling=batch_scaling,
        seed=seed,
    )
    step_lr = lr * loader.lr_scale
    opt = torch.optim.Adam(net.parameters(), lr=step_lr)
    sched = None
    if schedule == "onecycle":
        # Every rank takes len(loader) steps per epoch (the sampler pads), as the local twin
        # does with the global batch: the same schedule everywhere.
        steps = max(1, epochs * len(loader))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=step_lr, total_steps=steps)
    return _Setup(net, loader, opt, step_lr, sched, accumulation_steps)


def _resume(setup, info):
    """``(history, start_epoch, resumed_from)`` from the job's checkpoint, if there is one."""
    state = load_checkpoint() if info.checkpoint_dir else None
    if state is None:
        return [], 0, None
    unwrap_model(setup.net).load_state_dict(state["model"])
    setup.opt.load_state_dict(state["optimizer"])
    if setup.sched is not None and state.get("scheduler") is not None:
        setup.sched.load_state_dict(state["scheduler"])
    start_epoch = int(state["epoch"]) + 1
    setup.loader.set_epoch(start_epoch)
    logger.info("rank %d resumes at epoch %d", info.rank, start_epoch)
    return list(state["history"]), start_epoch, start_epoch


def _epoch(setup, info, epoch):
    """One training pass: its record (loss, train accuracy, time) and all ranks' samples."""
    import torch
    import torch.nn.functional as F

    net, opt = setup.net, setup.opt
    net.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    count = 0
    for xb, yb in setup.loader:
        xb, yb = xb.to(info.device), yb.to(info.device)
        opt.zero_grad(set_to_none=True)
        # One micro-batch (the whole batch) unless accumulation_steps > 1; the gradients are
        # all-reduced once, after the last micro-batch.
        for weight, xm, ym in micro_batches(net, xb, yb, steps=setup.accumulation_steps):
            out = net(xm)
            loss = F.cross_entropy(out, ym)
            (loss * weight).backward()
            loss_sum += loss.detach().double().cpu() * len(ym)
            correct += (out.detach().argmax(1) == ym).sum().cpu()
            count += len(ym)
        opt.step()
        if setup.sched is not None:
            setup.sched.step()
    epoch_time = time.perf_counter() - t0
    loss_all, correct_all, count_all = _allreduce(
        [float(loss_sum), float(correct), float(count)], info
    )
    record = {
        "epoch": epoch,
        "loss": loss_all / count_all,
        "train_accuracy": correct_all / count_all,
        "epoch_time": epoch_time,
    }
    return record, count_all


def _save(setup, info, epoch, history):
    """Checkpoint model, optimiser and history after ``epoch`` (when checkpoints are on)."""
    if info.checkpoint_dir:
        save_checkpoint(
            {
                "model": unwrap_model(setup.net).state_dict(),
                "optimizer": setup.opt.state_dict(),
                "scheduler": setup.sched.state_dict() if setup.sched is not None else None,
                "epoch": epoch,
                "history": history,
            }
        )
