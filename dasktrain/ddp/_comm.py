"""How the ranks exchange gradients: DDP's options, communication hooks, accumulation.

On a few CPU cores the all-reduce of the gradients (gloo) competes with the backward pass
for the same cores, so what is sent, when, and how often decides how well ranks scale. The
knobs torch offers are exposed here, checked before anything runs:

* ``comm_hook``: torch's own compression hooks
  (:func:`torch.distributed.algorithms.ddp_comm_hooks.default_hooks.fp16_compress_hook`,
  ``bf16_compress_hook``): half the bytes per all-reduce, for a rounding of the gradients;
* the :class:`~torch.nn.parallel.DistributedDataParallel` keywords ``bucket_cap_mb``,
  ``gradient_as_bucket_view``, ``static_graph``, ``broadcast_buffers``,
  ``find_unused_parameters``;
* :func:`micro_batches`: gradient accumulation over micro-batches with
  :meth:`~torch.nn.parallel.DistributedDataParallel.no_sync` for all but the last.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from .._validation import check_bool, check_positive_int, check_positive_number
from ..exceptions import ValidationError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["COMM_HOOKS", "check_ddp_options", "register_comm_hook", "micro_batches"]

# comm_hook name -> the function of torch.distributed.algorithms.ddp_comm_hooks.default_hooks
COMM_HOOKS = {"fp16": "fp16_compress_hook", "bf16": "bf16_compress_hook"}
_BOOL_OPTIONS = (
    "gradient_as_bucket_view",
    "static_graph",
    "broadcast_buffers",
    "find_unused_parameters",
)


# torch's DDP with static_graph=True crashes under no_sync() (expect_autograd_hooks_ INTERNAL
# ASSERT on the first backward; pytorch/pytorch#143580), and the open fix (#187732) says the
# gradients then stop being all-reduced after the first step: refuse the combination.
_STATIC_NO_SYNC = (
    "static_graph=True cannot be combined with gradient accumulation (accumulation_steps > 1): "
    "torch's DDP fails under no_sync() with a static graph (pytorch/pytorch#143580). Use "
    "static_graph=False or accumulation_steps=1."
)


def check_ddp_options(
    comm_hook: str | None, ddp_kwargs: Mapping[str, Any], accumulation_steps: int = 1
) -> int:
    """Check ``comm_hook``, the DDP keywords dasktrain knows and their combination with
    ``accumulation_steps``; raise ValidationError naming the argument.

    Unknown keywords are left to :class:`~torch.nn.parallel.DistributedDataParallel`.
    """
    if comm_hook is not None and comm_hook not in COMM_HOOKS:
        raise ValidationError(
            f"comm_hook={comm_hook!r} must be None or one of {tuple(COMM_HOOKS)} "
            "(torch's fp16/bf16 gradient compression hooks)."
        )
    if ddp_kwargs.get("bucket_cap_mb") is not None:
        check_positive_number(ddp_kwargs["bucket_cap_mb"], "bucket_cap_mb")
    for name in _BOOL_OPTIONS:
        if name in ddp_kwargs:
            check_bool(ddp_kwargs[name], name)
    steps = check_positive_int(accumulation_steps, "accumulation_steps")
    if steps > 1 and ddp_kwargs.get("static_graph"):
        raise ValidationError(_STATIC_NO_SYNC)
    return steps


def register_comm_hook(
    ddp_model: torch.nn.parallel.DistributedDataParallel,
    comm_hook: str | None,
    *,
    device_type: str = "cpu",
) -> torch.nn.parallel.DistributedDataParallel:
    """Register torch's compression hook named ``comm_hook`` (None: DDP's plain all-reduce)."""
    if comm_hook is None:
        return ddp_model
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    hook = getattr(default_hooks, COMM_HOOKS[comm_hook])
    if comm_hook == "bf16" and device_type != "cuda":
        hook = _bf16_compress_hook_cpu
    # state=None: the hooks then use the default process group.
    ddp_model.register_comm_hook(None, hook)
    return ddp_model


# No annotations: DDP reads a hook's at run time and refuses any but dist.GradBucket and
# torch.futures.Future[torch.Tensor] objects (a postponed annotation is a string).
def _bf16_compress_hook_cpu(process_group, bucket):  # type: ignore[no-untyped-def]
    """torch's ``bf16_compress_hook`` under another name, for gloo on CPU.

    DDP refuses a hook *named* ``bf16_compress_hook`` unless CUDA and NCCL >= 2.10 are there
    (a check written for NCCL), but gloo all-reduces bfloat16 on CPU (checked in the tests).
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    return default_hooks.bf16_compress_hook(process_group, bucket)


def micro_batches(
    model: torch.nn.Module, *tensors: torch.Tensor, steps: int = 1
) -> Iterator[tuple[Any, ...]]:
    """Split one batch into ``steps`` micro-batches for gradient accumulation.

    Yields ``(weight, *parts)``; call ``(loss(parts) * weight).backward()`` for each and step
    the optimiser once after the loop. ``weight`` is the micro-batch's share of the batch, so
    with a mean loss the accumulated gradient is the batch's mean gradient: the same update as
    one backward over the whole batch, up to float rounding (layers that mix samples, such as
    BatchNorm, see the micro-batch instead). The batch per optimiser step, and so the global
    batch, stays the same; accumulation trades speed for memory, it does not enlarge the batch.

    When ``model`` is a :class:`~torch.nn.parallel.DistributedDataParallel`, the forward and
    backward passes of every micro-batch but the last run under ``model.no_sync()``: the
    gradients are all-reduced once per batch, not once per micro-batch. Run the forward pass
    inside the loop (``no_sync`` must cover it).

    Parameters
    ----------
    model : torch.nn.Module
        The prepared model (:func:`prepare_model`).
    *tensors : torch.Tensor
        The batch (e.g. inputs and labels), all with the same first dimension.
    steps : int
        Micro-batches per batch (not with a DDP model built with ``static_graph=True``: torch
        fails under ``no_sync`` then) (fewer when the batch has fewer samples; every rank then gets
        the same count, as the loaders of :func:`prepare_loader` give equal batches).

    Yields
    ------
    weight : float
    *parts : torch.Tensor

    Examples
    --------
    >>> for weight, xb, yb in micro_batches(net, x, y, steps=4):  # doctest: +SKIP
    ...     (F.cross_entropy(net(xb), yb) * weight).backward()
    >>> opt.step()  # doctest: +SKIP
    """
    import contextlib

    import torch

    steps = check_positive_int(steps, "accumulation_steps")
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    if ddp and steps > 1 and getattr(model, "static_graph", False):
        raise ValidationError(_STATIC_NO_SYNC)
    if not tensors:
        raise ValidationError("micro_batches() needs at least one tensor to split.")
    n = len(tensors[0])
    if n == 0 or any(len(t) != n for t in tensors):
        raise ValidationError(
            f"micro_batches(): the tensors have lengths {[len(t) for t in tensors]}; "
            "they must be equal and non-zero."
        )
    pieces = [torch.tensor_split(t, min(steps, n)) for t in tensors]
    count = len(pieces[0])
    for i in range(count):
        parts = tuple(p[i] for p in pieces)
        last = i == count - 1
        ctx = (
            cast("torch.nn.parallel.DistributedDataParallel", model).no_sync()
            if ddp and not last
            else contextlib.nullcontext()
        )
        with ctx:
            yield (len(parts[0]) / n, *parts)
