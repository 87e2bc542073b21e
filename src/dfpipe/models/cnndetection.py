"""CNNDetection (Wang et al., "CNN-generated images are surprisingly easy to spot... for now", CVPR 2020).

A stock ResNet-50 (torchvision's layout, see :mod:`.resnets`) binary classifier (github.com/PeterWang512/CNNDetection,
networks/resnet.py): the paper's generalisation comes from its training recipe, not the network --
ImageNet initialisation (the run's ``init: resnet50_imagenet``, the pinned ``pretrained@resnet50_imagenet``
input) and the "Blur+JPEG (0.5)" augmentation, which is the run's ``augment: blur_jpeg`` preset
(:mod:`dfpipe.training.augment`), applied on the train split only. :data:`PAPER` records the recipe.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from . import resnets
from .class_head import BinaryHeadConfig
from .common import make_input, scaled
from .registry import PaperRecord, Width, register_model

#: What Wang et al. (CVPR 2020) ran: Sec. 4 "Training" and their train.py / options (no resize,
#: random crop 224 + flip on train, centre crop 224 on test; blur and JPEG applied before the crop).
PAPER = PaperRecord(
    citation="S.-Y. Wang et al., CNN-generated images are surprisingly easy to spot... for now, CVPR 2020",
    settings={
        "init": "resnet50_imagenet",
        "network": "full",
        "image_size": 224,
        "train_input": "random crop 224",
        "test_input": "centre crop 224",
        "augment": "blur_jpeg + flip",
        "optimizer": "adam",
        "lr": 1e-4,
        "batch_size": 64,
        "epochs": None,  # until the lr reaches 1e-6
        "schedule": "x0.1 after 5 epochs w/o val gain, until 1e-06",
        "head": "1 logit, BCE",
    },
    sources={
        "init": "Sec. 4: ImageNet-pretrained ResNet-50",
        "augment": "Sec. 4: Blur+JPEG (0.5), random flip",
        "train_input": "options: no_resize, cropSize 224",
        "schedule": "Sec. 4: lr /10 when val acc plateaus (5 epochs), stop at 1e-6",
    },
)


class CNNDetectionConfig(BinaryHeadConfig):
    """``cnndetection``: the stock ResNet-50 on raw pixels (its recipe is in the run: init, augment;
    ``head: sigmoid``: the authors' one logit under BCE); ``width`` (demo only) narrows every stage."""

    name: Literal["cnndetection"]
    input: Literal["raw"] = "raw"
    width: Width = 1.0


class CNNDetection(nn.Module):
    """(B, 3, H, W) in [0, 1] -> resized, ImageNet-normalised -> ResNet-50 -> {"logits": (B, num_logits)}.

    ``width`` < 1 multiplies the four stages' planes (64/128/256/512, rounded to a multiple of 8);
    such a network cannot load the ImageNet weights (their shapes differ).
    """

    def __init__(self, cfg: CNNDetectionConfig):
        super().__init__()
        self.input, _ = make_input(cfg)
        w0, w1, w2, w3 = (scaled(c, cfg.width) for c in resnets.STOCK_WIDTHS)
        self.backbone = resnets.resnet50(cfg.num_logits, (w0, w1, w2, w3))

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """torchvision ImageNet ResNet-50 weights (the 1000-class fc is skipped by shape)."""
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.backbone(self.input(x))}


@register_model(CNNDetectionConfig, paper=PAPER, example={"width": 0.25})
def build_cnndetection(cfg: CNNDetectionConfig) -> nn.Module:
    return CNNDetection(cfg)
