"""Two-stream detector: an RGB stream and a facial-landmark-map stream, fused before one classification head.

After Songsri-in & Zafeiriou, "Complement Face Forensic Detection and Localization with Facial
Landmarks", arXiv:1910.05455 (2019), whose abstract reports that "explicit adding facial landmarks
information in addition to input images improves the performance". Here the landmarks reach the
network as a rendered landmark map at the image's resolution (spatially aligned with the pixels),
not as a coordinate vector: our reading of the paper, whose method section was not available to
check offline.

Input: ``(B, 4, H, W)`` in [0, 1]: RGB, then the landmark map that
:class:`dfpipe.training.data.LandmarkDataset` draws from the ``features@`` landmark cache
(MediaPipe's 468 points, :mod:`dfpipe.features.landmarks`): 1 at each landmark's pixel, 0
elsewhere, all 0 when the item's landmarks were rejected. Being a channel of the image, the map is
flipped and cropped with the pixels.

- RGB stream: ResNet-18 (:mod:`.resnets`, ``width`` narrows it for the demo) on the ImageNet-
  normalised RGB resized to ``image_size``, pooled to its ``512 * width`` features;
- landmark stream: the map brought to ``image_size`` by max pooling (no point is lost when
  shrinking), blurred by a fixed Gaussian of ``sigma`` px into a heatmap scaled to peak 1, then a
  small CNN (3 stride-2 conv + BatchNorm + ReLU, ``landmark_width`` x 1/2/4 channels, global
  average pool);
- fusion: ``[rgb features, present * landmark features, present]`` -> one linear head, where
  ``present`` (1 / 0) says whether the map holds any landmark: an item without landmarks is kept
  (tables stay comparable with the RGB-only runs) and the head is told explicitly that its
  landmark stream carries nothing.

Simplified (demo budget; no paper record is registered): a ResNet-18 RGB stream (``width`` < 1 in
the demo) whatever the paper's backbone, one channel holding every landmark rather than one map per
landmark, MediaPipe's 468-point mesh as the landmark detector, and no localisation branch (the
paper's second branch predicts the manipulation mask).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from . import resnets
from .common import IMAGENET_MEAN, IMAGENET_STD, PixelInput
from .registry import ModelConfig, Width, register_model
from .resnet import narrow_resnet18


class TwoStreamConfig(ModelConfig):
    """``two_stream``: RGB ResNet-18 + landmark-map CNN. ``width`` (demo only) narrows the ResNet-18;
    ``landmark_width``: channels of the landmark CNN's first conv; ``sigma``: the heatmap's Gaussian
    in pixels at ``image_size``."""

    #: Its loader draws the features@ landmark cache as a fourth input channel (training.data).
    landmark_input: ClassVar[bool] = True

    name: Literal["two_stream"]
    input: Literal["raw"] = "raw"
    width: Width = 1.0
    landmark_width: int = Field(16, ge=1, le=256)
    sigma: float = Field(1.5, gt=0, le=16)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """``(1, 1, k, 1)`` normalised 1-D Gaussian, ``k = 2 * ceil(3 sigma) + 1`` (applied along both axes)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).view(1, 1, -1, 1)


class TwoStreamDetector(nn.Module):
    """(B, 4, H, W) in [0, 1] -> {"logits": (B, num_classes)} (module docstring)."""

    kernel: torch.Tensor  # registered buffer

    def __init__(self, cfg: TwoStreamConfig):
        super().__init__()
        self.size = cfg.image_size
        self.rgb_input = PixelInput(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
        # stock network first, as resnet18's detector does: the same initialisation stream
        rgb: resnets.ResNet = resnets.resnet18(cfg.num_classes)
        if cfg.width != 1.0:
            rgb = narrow_resnet18(cfg.width, cfg.num_classes)
        rgb_dim = rgb.fc.in_features
        rgb.fc = nn.Identity()  # type: ignore[assignment]
        self.rgb = rgb
        w = cfg.landmark_width
        layers: list[nn.Module] = []
        for cin, cout in ((1, w), (w, 2 * w), (2 * w, 4 * w)):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.landmarks = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for m in self.landmarks.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.head = nn.Linear(rgb_dim + 4 * w + 1, cfg.num_classes)
        # a constant of the architecture, not learned: non-persistent, state dicts stay portable
        self.register_buffer("kernel", gaussian_kernel(cfg.sigma), persistent=False)

    def heatmap(self, lm: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) landmark map -> (B, 1, size, size) heatmap with peak 1 (all 0 stays 0)."""
        if lm.shape[-1] > self.size:
            lm = F.adaptive_max_pool2d(lm, self.size)
        elif lm.shape[-1] < self.size:
            lm = F.interpolate(lm, size=(self.size, self.size), mode="nearest")
        k, pad = self.kernel.to(lm.dtype), self.kernel.shape[2] // 2  # separable: rows, then columns
        heat = F.conv2d(F.conv2d(lm, k, padding=(pad, 0)), k.transpose(2, 3), padding=(0, pad))
        return heat / heat.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 4:
            raise ValueError(
                f"two_stream expects (B, 4, H, W) RGB + landmark map (its loader draws the features@ "
                f"landmark cache), got shape {tuple(x.shape)}"
            )
        lm = x[:, 3:4]
        present = (lm.amax(dim=(1, 2, 3)) > 0).to(x.dtype)[:, None]  # (B, 1): any landmark drawn
        rgb = self.rgb(self.rgb_input(x[:, :3].contiguous()))
        marks = self.landmarks(self.heatmap(lm))
        return {"logits": self.head(torch.cat([rgb, marks * present.to(marks.dtype), present.to(rgb.dtype)], 1))}


@register_model(TwoStreamConfig, example={"width": 0.25, "landmark_width": 8}, cites="arXiv:1910.05455")
def build_two_stream(cfg: TwoStreamConfig) -> nn.Module:
    return TwoStreamDetector(cfg)
