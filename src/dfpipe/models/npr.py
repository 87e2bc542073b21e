"""NPR detector: Tan et al., "Rethinking the Up-Sampling Operations in CNN-based Generative Network
for Generalizable Deepfake Detection", CVPR 2024 (github.com/chuangchuangtan/NPR-DeepfakeDetection).

The input is the Neighbouring Pixel Relationships residual ``x - up(down(x))`` (nearest 2x down by
keeping every second pixel, nearest 2x up by repeating it), i.e. what local up-sampling leaves. The
classifier is the authors' truncated ResNet-50: a 3x3 stride-2 stem, max-pool, ``layer1`` and
``layer2`` made of torchvision **Bottleneck** blocks ([3, 4] blocks, 512 output channels), global
average pool, fc. layer3/layer4 are absent, as in the authors' code.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from . import resnets
from .class_head import BinaryHeadConfig
from .common import IMAGENET_MEAN, IMAGENET_STD, PixelInput
from .registry import PaperRecord, register_model

#: What Tan et al. (CVPR 2024) ran: Sec. 4.1 and the authors' train.py / options (loadSize 256,
#: cropSize 224, delr_freq 10 with lr x0.9, niter 50; testing on the whole 256 px image).
PAPER = PaperRecord(
    citation="C. Tan et al., Rethinking the Up-Sampling Operations in CNN-based Generative Network "
    "for Generalizable Deepfake Detection, CVPR 2024",
    settings={
        "init": "scratch",
        "network": "full",
        "image_size": 224,
        "train_input": "resize 256, random crop 224",
        "test_input": "resize 256, full image",
        "augment": "flip",
        "optimizer": "adam",
        "lr": 2e-4,
        "batch_size": 32,
        "epochs": 50,
        "schedule": "step x0.9 every 10",
        "head": "1 logit, BCE",
    },
    sources={
        "train_input": "options: loadSize 256, cropSize 224",
        "test_input": "no crop at test time",
        "schedule": "train.py: lr x0.9 every delr_freq = 10 epochs",
        "lr": "Sec. 4.1",
        "batch_size": "Sec. 4.1",
    },
)

# The authors feed ``NPR * 2/3`` into conv1 (networks/resnet.py, ResNet.forward).
NPR_SCALE = 2.0 / 3.0


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with even H, W -> same shape: ``x - nearest_up2(x[..., ::2, ::2])``.

    Equal to the authors' ``x - interpolate(interpolate(x, 0.5, nearest), 2, nearest)``: nearest
    down-sampling by 0.5 picks pixel ``2i``, which is exactly ``x[..., ::2, ::2]``.
    """
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"NPR needs even height and width, got {tuple(x.shape[-2:])}")
    return x - F.interpolate(x[..., ::2, ::2], scale_factor=2, mode="nearest")


class NPRDetector(nn.Module):
    """(B, 3, H, W) in [0, 1] -> ImageNet-normalised, resized -> NPR -> truncated ResNet-50 -> logits
    (``num_classes``, or 1 for ``head: sigmoid``)."""

    def __init__(self, cfg: NPRConfig):
        super().__init__()
        self.input = PixelInput(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)  # raw pixels only
        # test_input full: the whole (resize_to) image reaches the network, as the authors test
        self.test_resize = cfg.test_input != "full"
        net = resnets.resnet50()
        # Authors' stem: 3x3 stride 2 (the residual is a pixel-level signal a 7x7 stem would blur).
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.backbone = nn.Module()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2"):
            setattr(self.backbone, name, getattr(net, name))
        self.fc = nn.Linear(128 * resnets.Bottleneck.expansion, cfg.num_logits)

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """torchvision ResNet-50 ImageNet weights fit layer1/layer2 (conv1 differs: skipped, reported)."""
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b: Any = self.backbone  # its layers are attached with setattr in __init__
        h = npr_residual(self.input(x) if self.training or self.test_resize else self.input.normalise(x)) * NPR_SCALE
        h = b.maxpool(b.relu(b.bn1(b.conv1(h))))
        h = b.layer2(b.layer1(h))
        return {"logits": self.fc(h.mean(dim=(2, 3)))}


class NPRConfig(BinaryHeadConfig):
    """``npr``: the authors' truncated ResNet-50 on the NPR residual it computes from raw pixels
    (``head: sigmoid``: the authors' one logit under BCE)."""

    full_input_ok: ClassVar[bool] = True  # convolutions + global pooling: any even side

    name: Literal["npr"]
    input: Literal["raw"] = "raw"

    @model_validator(mode="after")
    def _even_size(self) -> NPRConfig:
        if self.image_size % 2:
            raise ValueError(f"npr needs an even image_size (2x nearest down/up-sampling), got {self.image_size}")
        return self


@register_model(NPRConfig, paper=PAPER)
def build_npr(cfg: NPRConfig) -> nn.Module:
    return NPRDetector(cfg)
