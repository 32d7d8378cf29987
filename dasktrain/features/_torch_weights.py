"""Weights of the torch extractor: torchvision's ImageNet checkpoints and state-dict files.

Files load with ``torch.load(..., weights_only=True)``; every mismatch is a
:class:`~dasktrain.exceptions.WeightsError` that names the keys.
"""

from __future__ import annotations

import os

from .._compat import import_optional
from ..exceptions import WeightsError
from . import _backbones

__all__ = ["imagenet_path", "load_state_dict", "apply_state_dict"]


def imagenet_path(backbone):
    """Path of torchvision's cached ImageNet checkpoint for ``backbone``; WeightsError if absent.

    Nothing is downloaded: the file must already be in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), where torchvision puts it.
    """
    fname = _backbones.get_backbone(backbone).imagenet_file
    if fname is None:
        raise WeightsError(
            f"weights='imagenet' is not available for backbone={backbone!r} (no ImageNet "
            f"checkpoint exists); use weights=None (seeded random) or a file path."
        )
    torch = import_optional("torch", "torch")
    path = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
    if not os.path.isfile(path):
        raise WeightsError(
            f"weights='imagenet': torchvision's ImageNet checkpoint {fname!r} for {backbone!r} is "
            f"not in the torch hub cache ({path}) and dasktrain never downloads at run time. "
            f"Download https://download.pytorch.org/models/{fname} on a machine with internet "
            f"and pass weights='/path/to/{fname}', normalize='imagenet' (or copy it into "
            f"{os.path.dirname(path)})."
        )
    return path


def load_state_dict(path, backbone=None):
    """Read a torchvision-compatible state dict from ``path`` and keep the trunk's entries.

    Loads with ``torch.load(path, map_location="cpu", weights_only=True)``. A checkpoint
    wrapped as ``{"state_dict": ...}`` / ``{"model": ...}`` or saved from a
    DistributedDataParallel model (``module.`` prefix) is unwrapped. For a named backbone the
    classification-head keys (``classifier.*`` / ``fc.*``) are dropped: the trunk has no head;
    for a model of the user's (``backbone=None``) every key is kept.

    Raises
    ------
    WeightsError
        Unreadable file, missing or unexpected keys (named), or shape mismatches.
    """
    torch = import_optional("torch", "torch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file {path!r} does not exist.") from exc
    except Exception as exc:
        raise WeightsError(
            f"weights file {path!r} could not be read as a torch state dict with "
            f"weights_only=True ({type(exc).__name__}: {exc}). Save it with "
            "`torch.save(model.state_dict(), path)`."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(
            f"weights file {path!r} holds a {type(state).__name__}, not a state dict of tensors; "
            "save it with `torch.save(model.state_dict(), path)`."
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if backbone is None:
        return state
    heads = _backbones.get_backbone(backbone).head_prefixes
    return {k: v for k, v in state.items() if not k.startswith(heads)}


def apply_state_dict(model, state, backbone, path):
    """Load ``state`` into ``model`` strictly.

    Raises a WeightsError naming the missing, unexpected and mis-shaped keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
        what = "your model" if backbone is None else f"backbone {backbone!r}"
        raise WeightsError(
            f"weights file {path!r} does not match {what}: "
            + "; ".join(parts)
            + ". Pass a torchvision-compatible state dict saved from the same architecture."
        )
    model.load_state_dict(state, strict=True)


def _short(items, n=6):
    shown = ", ".join(map(repr, items[:n]))
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
