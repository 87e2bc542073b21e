"""Xception's building blocks (Chollet, CVPR 2017): the depthwise-separable convolution and the
residual block of separable convolutions, built without importing timm.

The module layout, names and construction order are those of timm's ``legacy_xception`` (the
Cadene/Keras port), so timm/Cadene ImageNet state dicts load by key and a seeded build gives the
same weights as timm's (tests/models/test_resnets.py compares them when timm is installed). Importing
timm costs about 1.8 s of every Xception/F3Net stage's start-up on the 2-core machine.
"""

from __future__ import annotations

import torch
from torch import nn


class SeparableConv2d(nn.Module):
    """Depthwise ``kernel_size`` conv (one filter per channel) then a pointwise 1x1 conv:
    ``(B, in_channels, H, W) -> (B, out_channels, H', W')``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, 1, 0, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """``reps`` x (ReLU, separable 3x3, BatchNorm), then a 3x3 max-pool when ``strides`` != 1, plus
    a shortcut (a strided 1x1 conv + BatchNorm when the shape changes):
    ``(B, in_channels, H, W) -> (B, out_channels, H / strides, W / strides)``.

    ``grow_first``: the first separable conv changes the width (entry/middle flow), else the last
    one does (exit flow). ``start_with_relu`` False drops the leading ReLU (block1, right after the
    stem's ReLU); otherwise the leading ReLU is not in place, so the shortcut sees the input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reps: int,
        strides: int = 1,
        start_with_relu: bool = True,
        grow_first: bool = True,
    ):
        super().__init__()
        if out_channels != in_channels or strides != 1:
            self.skip: nn.Module | None = nn.Conv2d(in_channels, out_channels, 1, stride=strides, bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)
        else:
            self.skip = None
        rep: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                inc, outc = (in_channels if i == 0 else out_channels), out_channels
            else:
                inc, outc = in_channels, (in_channels if i < reps - 1 else out_channels)
            rep += [nn.ReLU(inplace=True), SeparableConv2d(inc, outc, 3, stride=1, padding=1), nn.BatchNorm2d(outc)]
        if not start_with_relu:
            rep = rep[1:]
        else:
            rep[0] = nn.ReLU(inplace=False)
        if strides != 1:
            rep.append(nn.MaxPool2d(3, strides, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.rep(inp)
        skip = inp if self.skip is None else self.skipbn(self.skip(inp))
        x += skip
        return x
