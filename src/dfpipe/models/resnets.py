"""ResNet-18 / ResNet-50 (He et al., CVPR 2016; the "v1.5" layout with the stride in the 3x3 conv)
built without importing torchvision.

Why not ``torchvision.models.resnet18``: importing torchvision runs ``torchvision.ops``, which
imports ``torch._dynamo``; that is about 1.4 s of every training and evaluation stage's start-up
on the 2-core machine, for a network of 60 lines. The modules here are the same as torchvision's
(0.29): same module names (so torchvision ImageNet state dicts load by key), same construction
order and the same initialisation, so a seeded build draws the same random numbers and gives
bit-identical weights (tests/models/test_resnets.py compares them with torchvision when it is
installed). ``widths`` < the stock 64/128/256/512 narrows every stage (demo only).
"""

from __future__ import annotations

import torch
from torch import nn

STOCK_WIDTHS = (64, 128, 256, 512)


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity (or 1x1 ``downsample``) shortcut; ``(B, inplanes, H, W)
    -> (B, planes, H / stride, W / stride)``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand to ``planes * 4``; ``(B, inplanes, H, W)
    -> (B, 4 * planes, H / stride, W / stride)``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """7x7 stem, max-pool, four stages of ``blocks`` residual blocks, global average pool, ``fc``.

    ``(B, 3, H, W) -> (B, num_classes)``; ``widths``: the four stages' ``planes``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: tuple[int, int, int, int],
        num_classes: int = 1000,
        widths: tuple[int, int, int, int] = STOCK_WIDTHS,
    ):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], blocks[0])
        self.layer2 = self._make_layer(block, widths[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], blocks[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():  # He et al.'s fan-out normal init; BatchNorm as identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, widths: tuple[int, int, int, int] = STOCK_WIDTHS) -> ResNet:
    """ResNet-18 (BasicBlock x [2, 2, 2, 2]), random init."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, widths)


def resnet50(num_classes: int = 1000, widths: tuple[int, int, int, int] = STOCK_WIDTHS) -> ResNet:
    """ResNet-50 (Bottleneck x [3, 4, 6, 3]), random init; ``widths``: the four stages' ``planes``."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, widths)
