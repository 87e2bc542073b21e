"""Xception (Chollet, CVPR 2017) as staged backbone for the baseline and both F3Net streams.

The network is timm's ``legacy_xception`` (the original architecture, Cadene/Keras port): stem
conv1-conv2, entry flow block1-block3, middle flow block4-block11, exit flow block12 + conv3/conv4.
:class:`XceptionBackbone` keeps timm's module names (so timm/Cadene ImageNet weights load by key)
and splits the forward pass at the points where F3Net's MixBlocks sit.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .common import INCEPTION_MEAN, INCEPTION_STD, ClassifierHead, make_input, scaled
from .registry import PaperRecord, SpectrumInputConfig, Width, register_model
from .xception_blocks import Block, SeparableConv2d

# The notes (seed 002, F3Net runs): "removed the four blocks 4, 5, 6, 7" of the middle flow.
REDUCED_BLOCKS = (4, 5, 6, 7)
MIDDLE_BLOCKS = tuple(range(4, 12))
#: What Qian et al. (ECCV 2020) ran for F3-Net and its Xception baseline (their ablation's
#: "Baseline" row), Sec. 4.1: ImageNet Xception in every stream, 299 px faces, Adam lr 2e-4, batch 128.
PAPER = PaperRecord(
    citation="Y. Qian et al., Thinking in Frequency: Face Forgery Detection by Mining Frequency-aware Clues, ECCV 2020",
    settings={
        "init": "xception_imagenet",
        "network": "full",
        "image_size": 299,
        "train_input": "resize 299",
        "test_input": "resize 299",
        "optimizer": "adam",
        "lr": 2e-4,
        "batch_size": 128,
    },
    sources={"init": "Sec. 4.1: ImageNet-pretrained Xception", "lr": "Sec. 4.1: Adam, lr 2e-4, batch 128"},
)

FEATURES = 2048  # Xception exit-flow width (conv4)
MID_CHANNELS = 728  # entry/middle-flow width
EXIT_CHANNELS = 1024  # block12 output width
# Dropout before the classifier, as in the F3Net code (F3Net.__init__: nn.Dropout(p=0.2)); the
# Baseline row (plain Xception) gets the same head so the ablation differs only in the input streams.
HEAD_DROPOUT = 0.2


class XceptionBackbone(nn.Module):
    """Feature extractor: (B, in_chans, S, S) -> (B, 2048, ~S/32, ~S/32) (after act4 ReLU).

    ``stem_stride``: stride of conv1 (2 in Xception; 1 for F3Net's LFS stream, whose input map is
    already half resolution). ``reduced``: delete middle-flow blocks 4-7 (the notes' shortened net).
    Stages: :meth:`to_mid` (stem .. block7, 728 ch), :meth:`mid_to_exit` (block8 .. block12,
    1024 ch), :meth:`tail` (conv3/conv4, 2048 ch). ``width`` < 1 (demo only) scales every channel
    count (:func:`~dfpipe.models.common.scaled`); the module names stay timm's. Channel counts:
    ``mid_channels``, ``exit_channels``, ``num_features``.
    """

    conv1: nn.Conv2d  # set in _build (replaced for stem_stride != 2)

    def __init__(self, in_chans: int = 3, stem_stride: int = 2, reduced: bool = False, width: float = 1.0):
        super().__init__()
        self._build(in_chans, width)
        self.mid_channels = scaled(MID_CHANNELS, width)
        self.exit_channels = scaled(EXIT_CHANNELS, width)
        if stem_stride != 2:
            self.conv1 = nn.Conv2d(in_chans, self.conv1.out_channels, 3, stem_stride, 0, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm
        self.reduced = reduced
        if reduced:
            for i in REDUCED_BLOCKS:
                delattr(self, f"block{i}")
        kept = [i for i in MIDDLE_BLOCKS if not (reduced and i in REDUCED_BLOCKS)]
        self.blocks_to_mid = tuple(f"block{i}" for i in (1, 2, 3, *[k for k in kept if k <= 7]))
        self.blocks_to_exit = tuple(f"block{i}" for i in (*[k for k in kept if k > 7], 12))

    def _build(self, in_chans: int, width: float) -> None:
        """timm's legacy Xception layout, construction order and init (``num_classes=0``: no
        classifier) with every width multiplied by ``width``; at width 1 the weights equal timm's."""
        c = {n: scaled(n, width) for n in (32, 64, 128, 256, MID_CHANNELS, EXIT_CHANNELS, 1536, FEATURES)}
        self.in_chans, self.num_features = in_chans, c[FEATURES]
        self.conv1, self.bn1, self.act1 = (
            nn.Conv2d(in_chans, c[32], 3, 2, 0, bias=False),
            nn.BatchNorm2d(c[32]),
            nn.ReLU(True),
        )
        self.conv2, self.bn2, self.act2 = nn.Conv2d(c[32], c[64], 3, bias=False), nn.BatchNorm2d(c[64]), nn.ReLU(True)
        self.block1 = Block(c[64], c[128], 2, 2, start_with_relu=False)
        self.block2 = Block(c[128], c[256], 2, 2)
        self.block3 = Block(c[256], c[MID_CHANNELS], 2, 2)
        for i in MIDDLE_BLOCKS:
            setattr(self, f"block{i}", Block(c[MID_CHANNELS], c[MID_CHANNELS], 3, 1))
        self.block12 = Block(c[MID_CHANNELS], c[EXIT_CHANNELS], 2, 2, grow_first=False)
        self.conv3, self.bn3, self.act3 = (
            SeparableConv2d(c[EXIT_CHANNELS], c[1536], 3, 1, 1),
            nn.BatchNorm2d(c[1536]),
            nn.ReLU(True),
        )
        self.conv4, self.bn4, self.act4 = (
            SeparableConv2d(c[1536], c[FEATURES], 3, 1, 1),
            nn.BatchNorm2d(c[FEATURES]),
            nn.ReLU(True),
        )
        for m in self.modules():  # timm's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def to_mid(self, x: torch.Tensor) -> torch.Tensor:
        """Stem + entry flow + middle blocks up to 7: (B, C_in, S, S) -> (B, 728, ~S/16, ~S/16)."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        for name in self.blocks_to_mid:
            x = getattr(self, name)(x)
        return x

    def mid_to_exit(self, x: torch.Tensor) -> torch.Tensor:
        """Middle blocks 8-11 + exit block12: (B, 728, h, w) -> (B, 1024, ~h/2, ~w/2)."""
        for name in self.blocks_to_exit:
            x = getattr(self, name)(x)
        return x

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """Exit-flow separable convs: (B, 1024, h, w) -> (B, 2048, h, w), ReLU-activated."""
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.mid_to_exit(self.to_mid(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class XceptionConfig(SpectrumInputConfig):
    """``xception``: raw pixels (or a DCT/DFT log-spectrum); ``reduced`` drops middle-flow blocks
    4-7 (the group's shortened network), ``width`` (demo only) scales every channel count."""

    name: Literal["xception"]
    reduced: bool = False
    width: Width = 1.0


class XceptionDetector(nn.Module):
    """Xception baseline (F3Net's "Baseline" row, 299 px in the paper): input -> backbone -> pool ->
    dropout 0.2 (as F3Net's head) -> fc.

    Raw input is normalised with mean = std = 0.5 (the Xception/Inception convention of its ImageNet
    weights); dct/dft input uses the spectra stage's statistics.
    """

    def __init__(self, cfg: XceptionConfig):
        super().__init__()
        self.input, channels = make_input(cfg, INCEPTION_MEAN, INCEPTION_STD)
        self.backbone = XceptionBackbone(in_chans=channels, reduced=cfg.reduced, width=cfg.width)
        self.head = ClassifierHead(self.backbone.num_features, cfg.num_classes, dropout=HEAD_DROPOUT)

    def pretrained_targets(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.backbone(self.input(x)))}


@register_model(XceptionConfig, example={"width": 0.25, "reduced": True}, paper=PAPER)
def build_xception(cfg: XceptionConfig) -> nn.Module:
    return XceptionDetector(cfg)
