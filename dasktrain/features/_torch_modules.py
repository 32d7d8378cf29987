"""The torch modules of the backbones, with torchvision's parameter names.

Imports torch: load it only through :func:`dasktrain.features._backbones.build`, which keeps
torch out of ``import dasktrain``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "ResNet", "SmallCNN", "init_weights"]

# torchvision's VGG "E" configuration (vgg19): numbers are conv widths, "M" a 2x2 max pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M")  # fmt: skip
_SMALLCNN_WIDTHS = (16, 32, 64)
_SMALLCNN_GROUPS = 8  # channels per group: 2, 4, 8


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
    """torchvision's initialisation scheme, drawn from the seeded global generator."""
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
