"""CNNDetection (Wang et al., "CNN-generated images are surprisingly easy to spot... for now", CVPR 2020).

A stock ResNet-50 (torchvision's layout, see :mod:`.resnets`) binary classifier (github.com/PeterWang512/CNNDetection,
networks/resnet.py): the paper's generalisation comes from its training recipe, not the network --
ImageNet initialisation (``model.weights``) and the "Blur+JPEG (0.5)" augmentation, which is the
run's ``augment: blur_jpeg`` preset (:mod:`dfpipe.training.augment`), applied on the train split only.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from . import resnets
from .common import make_input
from .registry import ModelConfig, register_model


class CNNDetectionConfig(ModelConfig):
    """``cnndetection``: the stock ResNet-50 on raw pixels (its recipe is in the run: init, augment)."""

    name: Literal["cnndetection"]
    input: Literal["raw"] = "raw"


class CNNDetection(nn.Module):
    """(B, 3, H, W) in [0, 1] -> resized, ImageNet-normalised -> ResNet-50 -> {"logits": (B, num_classes)}."""

    def __init__(self, cfg: CNNDetectionConfig):
        super().__init__()
        self.input, _ = make_input(cfg)
        self.backbone = resnets.resnet50(cfg.num_classes)

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """torchvision ImageNet ResNet-50 weights (the 1000-class fc is skipped by shape)."""
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.backbone(self.input(x))}


@register_model(CNNDetectionConfig)
def build_cnndetection(cfg: CNNDetectionConfig) -> nn.Module:
    return CNNDetection(cfg)
