"""FFD: Dang et al., "On the Detection of Digital Face Manipulation", CVPR 2020 (arXiv:1910.01717).

An Xception classifier with an attention-based layer inside its middle flow (paper Sec. 3.2): from
the feature map ``F`` (B, C, h, w) the layer estimates a one-channel attention map ``M_att``
(B, 1, h, w) and passes ``F' = F * sigmoid(M_att)`` on, so the map gates which positions reach the
classifier and doubles as the manipulation-localisation output.

* Direct regression (the paper's "Reg." map, the variant built here): ``M_att`` is a 3x3 separable
  convolution of ``F`` to one channel, without bias (authors' code, ``xception.py``
  ``RegressionMap``: ``SeparableConv2d(728, 1, 3, padding=1, bias=False)`` then a sigmoid).
* Placement: after middle-flow block 7, where the authors' code applies it (``Xception.features``:
  ``mask, vec = self.map(x)`` between block7 and block8); at 299 px that map is 19 x 19 (728
  channels), the paper's map size (train.py ``map_size: (19, 19)``).
* Supervision: the attention map is trained, or not, by the loss (``w_map`` in
  :mod:`dfpipe.training.losses`: the paper's L1 between ``sigmoid(M_att)`` and the ground-truth
  mask at the map's size; ``w_map: 0`` is the paper's unsupervised variant).

The network returns ``"mask"``: the pre-sigmoid map ``M_att`` (logits), resized bilinearly to
``mask_size`` (default 19, the paper's map) so the mask evaluation scores it like any mask head.

Not built: the paper's manipulation appearance model (MAM, ``M_att`` as the mean map plus a PCA
basis of training masks weighted by a predicted coefficient vector), which needs the basis fitted
on the training split's masks before training.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .common import INCEPTION_MEAN, INCEPTION_STD, ClassifierHead, PixelInput
from .registry import ModelConfig, PaperRecord, Width, register_model
from .xception import XceptionBackbone
from .xception_blocks import SeparableConv2d

CITATION = "H. Dang et al., On the Detection of Digital Face Manipulation, CVPR 2020"
CODE = "github.com/JStehouwer/FFD_CVPR2020"

#: What the authors' released code trains (train.py; the paper's text states none of these values).
PAPER = PaperRecord(
    citation=CITATION,
    settings={
        "init": "scratch",
        "network": "full",
        "image_size": 299,
        "train_input": "resize 299",
        "test_input": "resize 299",
        "optimizer": "adam",
        "lr": 1e-4,
        "batch_size": 15,
        "head": "2 logits, softmax CE",
    },
    sources={
        "init": f"{CODE} train.py: Model(MAPTYPE, TEMPLATES, 2, False) (no ImageNet load; init_weights)",
        "image_size": f"{CODE} train.py: CONFIGS['xcp']['img_size'] = (299, 299)",
        "optimizer": f"{CODE} train.py: optim.Adam(lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY=0.001)",
        "lr": f"{CODE} train.py: LEARNING_RATE = 0.0001",
        "batch_size": f"{CODE} train.py: BATCH_SIZE = 15",
        "head": f"{CODE} train.py: Model(..., num_classes=2), nn.CrossEntropyLoss",
    },
)

#: The paper's attention map side at its 299 px input: the middle-flow map (train.py ``map_size``).
MAP_SIZE = 19
#: Initial spread of the attention conv's weights: the authors' ``init_weights`` draws every
#: separable conv from N(0, 0.01), so the map starts near sigmoid(0) = 0.5 everywhere.
MAP_INIT_STD = 0.01


class AttentionMap(nn.Module):
    """Direct-regression attention (paper Sec. 3.2): ``(B, C, h, w) -> (F * sigmoid(M), M)`` with
    ``M`` (B, 1, h, w) the logits of a bias-free 3x3 separable conv (authors' ``RegressionMap``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = SeparableConv2d(channels, 1, 3, 1, 1)
        for m in self.conv.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, MAP_INIT_STD)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.conv(feats)
        return feats * torch.sigmoid(logits), logits


class FFDConfig(ModelConfig):
    """``ffd``: Xception with the direct-regression attention layer after middle-flow block 7;
    ``mask_size``: side of the returned attention-map logits (19: the paper's map at 299 px);
    ``reduced`` drops middle-flow blocks 4-7 (the attention then follows block 3, the entry flow);
    ``width`` (demo only) scales every channel count."""

    name: Literal["ffd"]
    input: Literal["raw"] = "raw"
    mask_size: int = Field(MAP_SIZE, ge=1, le=1024)
    reduced: bool = False
    width: Width = 1.0

    @property
    def mask_output(self) -> bool:
        return True


class FFD(nn.Module):
    """(B, 3, H, W) in [0, 1] -> {"logits": (B, K), "mask": (B, 1, mask_size, mask_size) logits}.

    Input normalised to [-1, 1] (mean = std = 0.5: train.py ``norms``); stem .. block7 ->
    attention -> block8 .. conv4 (ReLU) -> global average pool -> fc, without dropout (the authors'
    ``Xception.logits``).
    """

    def __init__(self, cfg: FFDConfig):
        super().__init__()
        self.size = cfg.image_size
        self.mask_size = cfg.mask_size
        self.input = PixelInput(cfg.image_size, INCEPTION_MEAN, INCEPTION_STD)
        self.backbone = XceptionBackbone(reduced=cfg.reduced, width=cfg.width)
        self.attention = AttentionMap(self.backbone.mid_channels)
        self.head = ClassifierHead(self.backbone.num_features, cfg.num_classes)

    def pretrained_targets(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone.to_mid(self.input(x))
        feats, map_logits = self.attention(feats)
        feats = self.backbone.tail(self.backbone.mid_to_exit(feats))
        if map_logits.shape[-1] != self.mask_size:
            map_logits = F.interpolate(
                map_logits, size=(self.mask_size, self.mask_size), mode="bilinear", align_corners=False
            )
        return {"logits": self.head(feats), "mask": map_logits}


@register_model(FFDConfig, example={"width": 0.25, "reduced": True}, paper=PAPER)
def build_ffd(cfg: FFDConfig) -> nn.Module:
    return FFD(cfg)
