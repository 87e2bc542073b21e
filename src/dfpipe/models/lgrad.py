"""LGrad (Tan et al., "Learning on Gradients: Generalized Artifacts Representation for GAN-Generated
Images Detection", CVPR 2023): a CNN classifier on gradient maps of a fixed transformation model.

The gradient maps ``d f(x) / d x`` are computed once per variant by ``features@<name>``
(:func:`dfpipe.features.encoders.gradient_maps`, min-max scaled to [0, 1] per image as the authors
save them as images) and read back in place of images (input ``lgrad``). The classifier is the
authors' ResNet-50 (their CNNDetection code base); ``reduced: true`` swaps in a ResNet-18 for the
2-core demo.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from . import resnets
from .class_head import BinaryHeadConfig
from .common import IMAGENET_MEAN, IMAGENET_STD, PixelInput
from .registry import PaperRecord, register_model

#: What Tan et al. (CVPR 2023) ran: Sec. 4.1 (StyleGAN discriminator as the transformation model
#: at 256 px, one image at a time; ImageNet ResNet-50 classifier; Adam lr 5e-4, batch 16, 100
#: epochs, lr x0.8 decay). The decay interval (every 10 epochs) is their code base's delr_freq.
PAPER = PaperRecord(
    citation="C. Tan et al., Learning on Gradients: Generalized Artifacts Representation for "
    "GAN-Generated Images Detection, CVPR 2023",
    settings={
        "init": "resnet50_imagenet",
        "network": "full",
        "encoder": "StyleGAN discriminator",
        "encoder_size": 256,
        "gradients": "per image",
        "optimizer": "adam",
        "lr": 5e-4,
        "batch_size": 16,
        "epochs": 100,
        "schedule": "step x0.8 every 10",
        "head": "1 logit, BCE",
    },
    sources={
        "encoder": "Sec. 3.2 / 4.1: pretrained StyleGAN discriminator (256 px)",
        "gradients": "the authors' gradient script runs one image per forward (minibatch std sees one image)",
        "schedule": "Sec. 4.1: lr x0.8 decay; interval: code base delr_freq 10",
    },
)


class LGradConfig(BinaryHeadConfig):
    """``lgrad``: the classifier on cached gradient maps (``input: lgrad``); ``reduced`` swaps the
    authors' ResNet-50 for a ResNet-18 (the 2-core demo); ``head: sigmoid``: the authors' one logit
    under BCE."""

    name: Literal["lgrad"]
    input: Literal["lgrad"] = "lgrad"
    reduced: bool = False


class LGradDetector(nn.Module):
    """(B, 3, H, W) gradient maps in [0, 1] -> resized, ImageNet-normalised -> ResNet -> logits."""

    def __init__(self, cfg: LGradConfig):
        super().__init__()
        self.input = PixelInput(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
        arch = resnets.resnet18 if cfg.reduced else resnets.resnet50
        self.backbone = arch(cfg.num_logits)

    def pretrained_targets(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.backbone(self.input(x))}


@register_model(LGradConfig, example={"reduced": True}, paper=PAPER)
def build_lgrad(cfg: LGradConfig) -> nn.Module:
    return LGradDetector(cfg)
