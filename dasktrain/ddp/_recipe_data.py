"""The inputs of :func:`~dasktrain.ddp.recipes.train_classifier`: arrays, or the job's shards.

Two ways in, one shape out (:class:`Data`): the training loader, a per-batch preparation, the
validation batches of this rank, and what the network is built from (input channels or
features, classes).

* **in memory** (``X, y`` passed to ``train_fn``): checked, standardised and put in the
  ``(n, c, h, w)`` layout once; :func:`~dasktrain.ddp.prepare_loader`'s DistributedSampler
  shares them; each rank scores every ``world_size``-th validation image.
* **shards** (``X=None``: the job's ``datasets={"train": ..., "val": ...}``): ``shard("train")``
  read through :func:`~dasktrain.ddp.prepare_loader`; ``shard("val", shuffle=False,
  even=False)`` scored in batches; each batch is standardised and transposed as it arrives,
  since the whole set is never in one place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..exceptions import ValidationError
from .loaders import prepare_loader
from .shards import dataset_names, shard

__all__ = ["Data", "in_memory", "sharded", "standardize"]

EVAL_BATCH = 256


class Data(NamedTuple):
    loader: object
    prep: object  # callable: a batch of inputs as the network takes it
    val: object  # callable -> iterable of (x, y) tensor batches of this rank, or None
    n_inputs: int  # input channels of a CNN, features of the MLP
    num_classes: int
    shard: object  # the training shard, or None in memory


def standardize(X):
    """Each image to mean 0 and standard deviation 1 (its own statistics, so every rank and
    the local twin see the same numbers, and the brightness of an exposure does not count)."""
    axes = tuple(range(1, X.ndim))
    mean = X.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = X.std(axis=axes, keepdims=True, dtype=np.float64)
    return ((X - mean) / (std + 1e-6)).astype(np.float32)


def _standardize_tensor(x):
    """:func:`standardize` of a batch of tensors (float64 statistics, as for numpy)."""
    import torch

    axes = tuple(range(1, x.ndim))
    x64 = x.to(torch.float64)
    mean = x64.mean(dim=axes, keepdim=True)
    std = x64.std(dim=axes, keepdim=True, correction=0)
    return ((x64 - mean) / (std + 1e-6)).to(torch.float32)


def _as_inputs(X, y, model, name):
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    _check_row_shape(X.shape[1:], model, name)
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


def _check_row_shape(row, model, name):
    if model == "mlp":
        if len(row) != 1:
            raise ValidationError(
                f"{name} has rows of shape {tuple(row)}; model='mlp' needs (n_samples, "
                "n_features). Flatten images first, or use a CNN model."
            )
    elif len(row) != 3:
        raise ValidationError(
            f"{name} has rows of shape {tuple(row)}; model={model!r} needs images (n, height, "
            "width, channels), e.g. ImageSet.X."
        )


def _check_epochs(model, epochs, models):
    if model not in models:
        raise ValidationError(f"model={model!r} must be one of {models}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValidationError(f"epochs={epochs!r} must be a positive integer.")


def _val_in_memory(val, info):
    """This rank's validation batches: every ``world_size``-th sample, no padding."""
    import torch

    Xv, yv = val
    idx = np.arange(info.rank, len(Xv), info.world_size)
    for start in range(0, len(idx), EVAL_BATCH):
        part = idx[start : start + EVAL_BATCH]
        yield torch.from_numpy(Xv[part]), torch.from_numpy(yv[part])


def in_memory(X, y, X_val, y_val, info, *, opts):
    """:class:`Data` of arrays passed to ``train_fn``."""
    import torch

    _check_epochs(opts["model"], opts["epochs"], opts["models"])
    X, y = _as_inputs(X, y, opts["model"], "X")
    val = None
    if X_val is not None:
        if y_val is None:
            raise ValidationError("X_val was given without y_val.")
        val = _as_inputs(X_val, y_val, opts["model"], "X_val")
    if opts["standardize"]:
        X = standardize(X)
        val = (standardize(val[0]), val[1]) if val is not None else None
    num_classes = opts["num_classes"] or int(max(y.max(), val[1].max() if val else 0)) + 1
    loader = prepare_loader(
        (torch.from_numpy(X), torch.from_numpy(y)),
        opts["batch_size"],
        batch_scaling=opts["batch_scaling"],
        seed=opts["seed"],
    )
    evaluate = None if val is None else (lambda: _val_in_memory(val, info))
    return Data(loader, None, evaluate, X.shape[1], num_classes, None)


def _batch_prep(model, standardizing):
    def prep(x):
        if model != "mlp":
            x = x.permute(0, 3, 1, 2)  # (n, h, w, c) -> (n, c, h, w)
        x = _standardize_tensor(x) if standardizing else x.float()
        return x.contiguous()

    return prep


def sharded(info, *, opts):
    """:class:`Data` of the job's shards ``"train"`` (and ``"val"`` when the job has one)."""
    _check_epochs(opts["model"], opts["epochs"], opts["models"])
    names = dataset_names()
    if "train" not in names:
        raise ValidationError(
            "train_classifier(X=None) trains on the job's dataset 'train': pass "
            "datasets={'train': ..., 'val': ...} to ddp.run / run_local, or pass X and y; "
            f"this job's datasets are {names!r}."
        )
    train = shard("train", seed=opts["seed"], window=opts["window"])
    row = train.row_shapes[0]
    _check_row_shape(row, opts["model"], "datasets['train']")
    num_classes = opts["num_classes"] or (len(train.classes) if train.classes else None)
    if not num_classes:
        raise ValidationError(
            "train_classifier on datasets['train'] needs num_classes= (its labels are not read "
            "up front) unless the dataset is an ImageSet, whose classes are known."
        )
    loader = prepare_loader(train, opts["batch_size"], batch_scaling=opts["batch_scaling"])
    prep = _batch_prep(opts["model"], opts["standardize"])
    evaluate = None
    if "val" in names:
        val = shard("val", shuffle=False, even=False)
        _check_row_shape(val.row_shapes[0], opts["model"], "datasets['val']")
        evaluate = lambda: ((prep(x), y) for x, y in val.batches(EVAL_BATCH))  # noqa: E731
    n_inputs = row[-1] if opts["model"] != "mlp" else row[0]
    return Data(loader, prep, evaluate, int(n_inputs), int(num_classes), train)
