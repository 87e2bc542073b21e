"""ResNet-18 baseline of the notes (experiments 1-6): raw pixels or a DCT/DFT log-spectrum input."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .common import make_input, scaled
from .registry import ModelConfig, register_model


class ResNet18Detector(nn.Module):
    """torchvision ResNet-18 (random init) behind the model's own input transform.

    (B, 3, H, W) in [0, 1] -> input transform -> (B, C, S, S), C = 3 (raw, ImageNet-normalised) or the
    spectrum's C (1 or 3) -> ResNet-18 -> {"logits": (B, num_classes)}. For C != 3 only ``conv1`` is
    rebuilt (7x7, stride 2, as torchvision's), everything else is the stock network. ``width`` < 1
    (demo only) narrows every stage (64/128/256/512 channels times ``width``).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input, channels = make_input(cfg)
        self.backbone = torchvision.models.resnet18(weights=None, num_classes=cfg.num_classes)
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


class _NarrowResNet(torchvision.models.ResNet):
    """torchvision's ResNet with stage widths ``widths`` instead of 64/128/256/512 (same names, init)."""

    def __init__(self, widths: tuple[int, int, int, int], num_classes: int):
        block = torchvision.models.resnet.BasicBlock
        nn.Module.__init__(self)
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], 2)
        self.layer2 = self._make_layer(block, widths[1], 2, stride=2)
        self.layer3 = self._make_layer(block, widths[2], 2, stride=2)
        self.layer4 = self._make_layer(block, widths[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def narrow_resnet18(width: float, num_classes: int) -> nn.Module:
    """ResNet-18 with every stage ``width`` times as wide (demo only)."""
    return _NarrowResNet(tuple(scaled(c, width) for c in (64, 128, 256, 512)), num_classes)


@register_model(inputs=("raw", "dct", "dft"))  # the notes' "DCT of raw images" runs
def build_resnet18(cfg: ModelConfig) -> nn.Module:
    return ResNet18Detector(cfg)
