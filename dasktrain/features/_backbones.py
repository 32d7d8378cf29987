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
module is cheap; the ``nn.Module`` classes are created on first use.
"""

from __future__ import annotations

import dataclasses
import functools
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

# torchvision's VGG "E" configuration (vgg19): numbers are conv widths, "M" a 2x2 max pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M")  # fmt: skip
_SMALLCNN_WIDTHS = (16, 32, 64)
_SMALLCNN_GROUPS = 8  # channels per group: 2, 4, 8


def get_backbone(name):
    """The :class:`Backbone` called ``name``; raise naming the valid ones otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValidationError(
            f"backbone={name!r} is not a known backbone; use one of "
            f"{', '.join(map(repr, BACKBONES))}."
        )
    return _REGISTRY[name]


@functools.lru_cache(maxsize=1)
def _classes():
    """Define the nn.Module classes once torch is imported (keeps torch out of module import)."""
    torch = import_optional("torch", "torch")
    nn = torch.nn

    class VGG(nn.Module):
        """torchvision-compatible VGG19: ``features`` trunk, optional ``classifier`` head."""

        def __init__(self, in_channels=3, num_classes=None):
            super().__init__()
            layers, c = [], in_channels
            for v in _VGG19_CFG:
                if v == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                    c = v
            self.features = nn.Sequential(*layers)
            self.num_classes = num_classes
            if num_classes is not None:
                self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
                self.classifier = nn.Sequential(
                    nn.Linear(512 * 7 * 7, 4096),
                    nn.ReLU(True),
                    nn.Dropout(),
                    nn.Linear(4096, 4096),
                    nn.ReLU(True),
                    nn.Dropout(),
                    nn.Linear(4096, num_classes),
                )

        def forward(self, x):
            x = self.features(x)
            if self.num_classes is None:
                return x
            return self.classifier(torch.flatten(self.avgpool(x), 1))

    class BasicBlock(nn.Module):
        """torchvision's ResNet BasicBlock (same attribute names, so the same keys)."""

        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        """torchvision-compatible ResNet-18/34: trunk up to ``layer4``, optional ``fc`` head."""

        def __init__(self, layers, in_channels=3, num_classes=None):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(64, layers[0])
            self.layer2 = self._make_layer(128, layers[1], stride=2)
            self.layer3 = self._make_layer(256, layers[2], stride=2)
            self.layer4 = self._make_layer(512, layers[3], stride=2)
            self.num_classes = num_classes
            if num_classes is not None:
                self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
                self.fc = nn.Linear(512, num_classes)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            if self.num_classes is None:
                return x
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class SmallCNN(nn.Module):
        """Three stride-2 conv-GroupNorm-ReLU blocks (16, 32, 64 channels); ~24k parameters.

        GroupNorm, not BatchNorm: its output does not depend on the other samples of the
        batch, so a DDP run whose ranks each see half of the global batch takes exactly the
        steps of the one-process run (BatchNorm on CPU cannot be synchronised across ranks,
        and per-rank statistics cost the DDP run about 0.1 accuracy in our benchmark).
        """

        def __init__(self, in_channels=3, num_classes=None):
            super().__init__()
            layers, c = [], in_channels
            for w in _SMALLCNN_WIDTHS:
                # Stride-2 convs rather than conv + max-pool: the same downsampling for a
                # fraction of the CPU time (max-pool at full resolution dominated the cost).
                layers += [
                    nn.Conv2d(c, w, kernel_size=3, stride=2, padding=1, bias=False),
                    nn.GroupNorm(_SMALLCNN_GROUPS, w),
                    nn.ReLU(inplace=True),
                ]
                c = w
            self.features = nn.Sequential(*layers)
            self.num_classes = num_classes
            if num_classes is not None:
                self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
                self.fc = nn.Linear(c, num_classes)

        def forward(self, x):
            x = self.features(x)
            if self.num_classes is None:
                return x
            return self.fc(torch.flatten(self.avgpool(x), 1))

    def init_weights(module):
        # torchvision's initialisation scheme, drawn from the seeded global generator.
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    return torch, {"VGG": VGG, "ResNet": ResNet, "SmallCNN": SmallCNN}, init_weights


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
    torch, classes, init_weights = _classes()
    # fork_rng: seed the weights without changing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if backbone.family == "vgg":
            model = classes["VGG"](in_channels=in_channels, num_classes=num_classes)
        elif backbone.family == "resnet":
            model = classes["ResNet"](
                backbone.layers, in_channels=in_channels, num_classes=num_classes
            )
        else:
            model = classes["SmallCNN"](in_channels=in_channels, num_classes=num_classes)
        init_weights(model)
    logger.debug(
        "built %s (num_classes=%s, in_channels=%d, seed=%d)", name, num_classes, in_channels, seed
    )
    return model
