"""The training loop of :func:`~dasktrain.ddp.recipes.train_classifier`.

The network (the same weights on every rank: a backbone with a pooled linear head, or an
MLP), wrapped for DDP with its Adam optimiser and one-cycle schedule (:func:`make_setup`);
then :func:`train`: resume from the job's checkpoint (at an epoch, or at a step within one), the
epochs of steps (micro-batches under ``no_sync``), the validation after each epoch with every
rank's sums all-reduced once, and the checkpoints. The recipe checks the arguments and picks
the data (:mod:`._recipe_data`); this module only trains.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from .helpers import (
    load_checkpoint,
    micro_batches,
    prepare_model,
    report,
    save_checkpoint,
    unwrap_model,
)

# The recipe's logger: a rank's "resumes at epoch" line is the recipe's to tell.
logger = logging.getLogger("dasktrain.ddp.recipes")

__all__ = ["make_setup", "train"]


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


def train(setup, info, epochs):
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


def make_setup(
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
