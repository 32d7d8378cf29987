"""CNN backbones defined here (no torchvision dependency), with torchvision's state-dict keys.

Each backbone is one :class:`Backbone` record in a named registry (:func:`get_backbone`):
feature length, smallest input, head keys, ImageNet file and downsampling live together.

``build(name)`` returns the convolutional *trunk*: a module whose ``forward`` returns feature
maps of shape ``(n, feature_dim, h', w')``; pooling to one vector per image is the
caller's choice (:class:`~dasktrain.features.CNNFeatures` does it). ``build(name,
num_classes=k)`` adds torchvision's classification head (global pooling + ``classifier`` /
``fc``) and returns logits of shape ``(n, k)``, ready to train.

Parameter names and shapes follow torchvision's ``vgg19`` (``features.N``, ``classifier.N``)
and ``resnet18`` / ``resnet34`` (``conv1``, ``bn1``, ``layerL.B.conv1``, ``downsample.0``,
``fc``), so a state dict saved by torchvision loads with ``load_state_dict`` (use
``torch.load(path, weights_only=True)``). ``smallcnn`` is our own: three stride-2 conv +
GroupNorm blocks, about 24 thousand parameters, fast on a CPU, for demos and tests.

torch is imported lazily (through :func:`dasktrain._compat.import_optional`) so importing this
module is cheap; the ``nn.Module`` classes live in :mod:`._torch_modules`, imported on first
build.
"""

from __future__ import annotations

import dataclasses
import logging

from .._compat import import_optional
from ..exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["Backbone", "BACKBONES", "get_backbone", "build"]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One torch trunk dasktrain defines: everything the extractor, the loaders and
    :func:`build` need to know about it, in one record.

    Attributes
    ----------
    name : str
    family : {"vgg", "resnet", "smallcnn"}
        Which module class builds it.
    feature_dim : int
        Channels of the trunk's last feature map (the length of a pooled feature vector).
    min_size : int
        Smallest input side the trunk accepts.
    head_prefixes : tuple of str
        State-dict prefixes of the classification head (not part of the trunk).
    imagenet_file : str or None
        torchvision's ImageNet checkpoint in the torch hub cache (None: there is none).
    halvings : int
        How many times the trunk halves the image side on the way to its last map.
    rounds_up : bool
        Whether a halving rounds up (stride-2 convs with padding) or down (2x2 max pools).
    layers : tuple of int
        ResNet: basic blocks per stage.
    """

    name: str
    family: str
    feature_dim: int
    min_size: int
    head_prefixes: tuple
    imagenet_file: str | None
    halvings: int
    rounds_up: bool
    layers: tuple = ()

    def feature_map_size(self, height, width):
        """Spatial size ``(h', w')`` of the last feature map for an image of that size.

        VGG19 halves the size five times with 2x2 max pools (rounding down); the ResNets'
        stride-2 stem conv, max pool and three stride-2 stages, and smallcnn's three stride-2
        convs, each map a side ``s`` to ``(s - 1) // 2 + 1`` (padding keeps the rounding up).
        """
        for _ in range(self.halvings):
            if self.rounds_up:
                height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
            else:
                height, width = height // 2, width // 2
        return height, width


# VGG19 halves the image five times; ResNet downsamples by 32 overall; smallcnn halves it three
# times (stride-2 convs).
_REGISTRY = {
    b.name: b
    for b in (
        Backbone("vgg19", "vgg", 512, 32, ("classifier.",), "vgg19-dcbb9e9d.pth", 5, False),
        Backbone(
            "resnet18", "resnet", 512, 32, ("fc.",), "resnet18-f37072fd.pth", 5, True, (2, 2, 2, 2)
        ),
        Backbone(
            "resnet34", "resnet", 512, 32, ("fc.",), "resnet34-b627a593.pth", 5, True, (3, 4, 6, 3)
        ),
        Backbone("smallcnn", "smallcnn", 64, 8, ("fc.",), None, 3, True),
    )
}

#: Names of the torch backbones, in the order the docs list them.
BACKBONES = tuple(_REGISTRY)


def get_backbone(name):
    """The :class:`Backbone` called ``name``; raise naming the valid ones otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValidationError(
            f"backbone={name!r} is not a known backbone; use one of "
            f"{', '.join(map(repr, BACKBONES))}."
        )
    return _REGISTRY[name]


def build(name, *, num_classes=None, in_channels=3, seed=0):
    """Build backbone ``name`` with deterministic random weights.

    Parameters
    ----------
    name : {"vgg19", "resnet18", "resnet34", "smallcnn"}
        Backbone architecture (see :data:`BACKBONES`).
    num_classes : int, optional
        None (default) builds the trunk, whose ``forward`` returns feature maps of shape
        ``(n, get_backbone(name).feature_dim, h', w')``. An integer adds torchvision's
        classification head and ``forward`` returns logits of shape ``(n, num_classes)``.
    in_channels : int, default 3
        Channels of the input images. Anything but 3 changes the first conv's weight shape, so
        torchvision checkpoints no longer fit.
    seed : int, default 0
        Seed of the weight initialisation: the same seed gives the same weights in every
        process. The global torch RNG state is left as it was.

    Returns
    -------
    torch.nn.Module
        In training mode (call ``.eval()`` for inference), on the CPU, float32.

    Raises
    ------
    ValidationError
        Unknown ``name``, or a non-positive ``num_classes`` / ``in_channels``.
    """
    from .._validation import check_positive_int

    backbone = get_backbone(name)
    in_channels = check_positive_int(in_channels, "in_channels")
    if num_classes is not None:
        num_classes = check_positive_int(num_classes, "num_classes")
    seed = check_positive_int(seed, "seed", minimum=0)
    torch = import_optional("torch", "torch")
    from . import _torch_modules

    # fork_rng: seed the weights without changing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if backbone.family == "vgg":
            model = _torch_modules.VGG(in_channels=in_channels, num_classes=num_classes)
        elif backbone.family == "resnet":
            model = _torch_modules.ResNet(
                backbone.layers, in_channels=in_channels, num_classes=num_classes
            )
        else:
            model = _torch_modules.SmallCNN(in_channels=in_channels, num_classes=num_classes)
        _torch_modules.init_weights(model)
    logger.debug(
        "built %s (num_classes=%s, in_channels=%d, seed=%d)", name, num_classes, in_channels, seed
    )
    return model
