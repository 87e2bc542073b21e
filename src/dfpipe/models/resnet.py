"""ResNet-18 baseline of the notes (experiments 1-6): raw pixels or a DCT/DFT log-spectrum input."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .common import make_input
from .registry import ModelConfig, register_model


class ResNet18Detector(nn.Module):
    """torchvision ResNet-18 (random init) behind the model's own input transform.

    (B, 3, H, W) in [0, 1] -> input transform -> (B, C, S, S), C = 3 (raw, ImageNet-normalised) or the
    spectrum's C (1 or 3) -> ResNet-18 -> {"logits": (B, num_classes)}. For C != 3 only ``conv1`` is
    rebuilt (7x7, stride 2, as torchvision's), everything else is the stock network.
    """

    def __init__(self, cfg: ModelConfig, spectrum_stats=None):
        super().__init__()
        self.input, channels = make_input(cfg, spectrum_stats)
        self.backbone = torchvision.models.resnet18(weights=None, num_classes=cfg.num_classes)
        if channels != 3:
            conv = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
            self.backbone.conv1 = conv

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """Modules that torchvision ImageNet ResNet-18 weights map onto (see ``load_weights``)."""
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.backbone(self.input(x))}


@register_model(inputs=("raw", "dct", "dft"))  # the notes' "DCT of raw images" runs
def build_resnet18(cfg: ModelConfig, spectrum_stats=None) -> nn.Module:
    return ResNet18Detector(cfg, spectrum_stats)
