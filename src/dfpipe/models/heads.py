"""Dense heads: the multi-task manipulation-mask decoder (the notes' experiment 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Five stride-2 deconvolutions undo Xception's total stride of 32 at block12; widths halve per step.
DECODER_WIDTHS = (256, 128, 64, 32, 16, 16)


class MaskDecoder(nn.Module):
    """(B, C_in, h, w) features -> (B, 1, mask_size, mask_size) mask logits.

    1x1 conv to 256 channels, five ConvTranspose2d(k=4, s=2, p=1) + BN + ReLU steps (x32, back to
    about the input resolution), a 1x1 conv to one logit channel, then bilinear resampling to exactly
    ``mask_size`` (input sizes such as 299 are not powers of two).
    """

    def __init__(self, in_channels: int, mask_size: int):
        super().__init__()
        self.mask_size = mask_size
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, DECODER_WIDTHS[0], 1, bias=False),
            nn.BatchNorm2d(DECODER_WIDTHS[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(DECODER_WIDTHS[:-1], DECODER_WIDTHS[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(DECODER_WIDTHS[-1], 1, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.body(feats))
        if logits.shape[-1] != self.mask_size or logits.shape[-2] != self.mask_size:
            logits = F.interpolate(logits, size=(self.mask_size, self.mask_size), mode="bilinear", align_corners=False)
        return logits
