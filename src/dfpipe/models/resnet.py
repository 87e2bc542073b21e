"""ResNet-18 baseline of the notes (experiments 1-6): raw pixels or a DCT/DFT log-spectrum input."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from . import resnets
from .common import make_input, scaled
from .registry import SpectrumInputConfig, Width, register_model


class ResNet18Config(SpectrumInputConfig):
    """``resnet18``: raw pixels or a DCT/DFT log-spectrum input; ``width`` (demo only) narrows every stage."""

    name: Literal["resnet18"]
    width: Width = 1.0


class ResNet18Detector(nn.Module):
    """ResNet-18 (torchvision's layout and initialisation, random init) behind the model's own input transform.

    (B, 3, H, W) in [0, 1] -> input transform -> (B, C, S, S), C = 3 (raw, ImageNet-normalised) or the
    spectrum's C (1 or 3) -> ResNet-18 -> {"logits": (B, num_classes)}. For C != 3 only ``conv1`` is
    rebuilt (7x7, stride 2, as torchvision's), everything else is the stock network. ``width`` < 1
    (demo only) narrows every stage (64/128/256/512 channels times ``width``).
    """

    def __init__(self, cfg: ResNet18Config):
        super().__init__()
        self.input, channels = make_input(cfg)
        # The stock network is always built first: its initialisation draws are part of the seed's
        # stream, so a narrow network starts from the same generator state in every version.
        self.backbone: resnets.ResNet = resnets.resnet18(cfg.num_classes)
        if cfg.width != 1.0:
            self.backbone = narrow_resnet18(cfg.width, cfg.num_classes)
        if channels != 3:
            conv = nn.Conv2d(channels, self.backbone.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
            self.backbone.conv1 = conv

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """Modules that torchvision ImageNet ResNet-18 weights map onto (see ``load_weights``)."""
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.backbone(self.input(x))}


def narrow_resnet18(width: float, num_classes: int) -> resnets.ResNet:
    """ResNet-18 with every stage ``width`` times as wide (demo only)."""
    w0, w1, w2, w3 = (scaled(c, width) for c in resnets.STOCK_WIDTHS)
    return resnets.resnet18(num_classes, (w0, w1, w2, w3))


@register_model(ResNet18Config, example={"width": 0.5})  # the notes' "DCT of raw images" runs
def build_resnet18(cfg: ResNet18Config) -> nn.Module:
    return ResNet18Detector(cfg)
