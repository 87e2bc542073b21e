"""F3-Net: Qian et al., "Thinking in Frequency: Face Forgery Network Detection by Mining
Frequency-aware Clues", ECCV 2020 (arXiv:2007.09355). Modes: ``fad``, ``lfs``, ``both``, ``mix``.

* FAD (Frequency-Aware Decomposition, paper Sec. 3.1): full-image 2-D DCT per colour channel,
  N = 4 filters (low, middle, high, all-pass), each ``f_base + sigma(f_w)`` with a fixed binary
  band ``f_base`` and a learnable ``f_w`` squashed by ``sigma(x) = (1 - e^-x)/(1 + e^-x) = 2
  sigmoid(x) - 1``; inverse DCT back to the image domain; 3 colours x 4 bands = 12 channels.
* LFS (Local Frequency Statistics, Sec. 3.2): grey image, 10x10 sliding-window DCT with stride 2,
  ``log10 |.|`` of the coefficients, M = 6 learnable band filters, each averaged over its band
  -> a (B, 6, ~S/2, ~S/2) map.
* Each stream runs an Xception (:class:`XceptionBackbone`). ``both`` concatenates the two pooled
  2048-d features; ``mix`` fuses the streams with a cross-attention :class:`MixBlock` after block 7
  (middle flow) and after block 12 (exit flow), as in the paper (Sec. 3.3).
* Multi-task (the notes' experiment 5): with ``seg_head`` a deconvolution decoder reads the fused
  features after the second MixBlock and outputs a manipulation-mask logit map.

All DCT arithmetic runs in float32 with autocast disabled: log10 of small coefficients and the
DCT round trip are ill-conditioned in bf16/fp16.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from .common import INCEPTION_MEAN, INCEPTION_STD, PixelInput, resize_square
from .heads import MaskDecoder
from .registry import ModelConfig, Width, register_model
from .spectrum import GRAY_WEIGHTS, dct_matrix
from .xception import HEAD_DROPOUT, XceptionBackbone
from .xception import PAPER as F3NET_PAPER

#: Qian et al. train F3-Net with their Xception baseline's recipe (:data:`.xception.PAPER`).
PAPER = F3NET_PAPER

# FAD bands (paper Sec. 3.1: low = first 1/16 of the spectrum, middle = 1/16 .. 1/8, high = last
# 7/8). On the S x S DCT grid with anti-diagonal index d = i + j, the triangle d <= t covers t^2/2
# coefficients, i.e. 1/16 of S^2 at t = S / sqrt(8) and 1/8 at t = S / 2. The authors' code writes
# the first boundary as ``size // 2.82`` (2.82 ~ sqrt(8)); we use the same constant.
FAD_LOW_DIVISOR = 2.82
FAD_MID_DIVISOR = 2.0
FAD_BANDS = ("low", "middle", "high", "all")
# LFS (paper Sec. 3.2 / Sec. 4.1): window 10, stride 2, M = 6 bands; the authors' code pads by 4.
LFS_WINDOW = 10
LFS_STRIDE = 2
LFS_PADDING = 4
LFS_BANDS = 6
LOG_EPS = 1e-15  # log10(|c| + eps), as in the authors' code
# Initial spread of the learnable filter parts (authors' code: learnable.data.normal_(0, 0.1)).
FILTER_INIT_STD = 0.1


def fad_band_masks(size: int) -> torch.Tensor:
    """Binary FAD bases (4, size, size) float32: low, middle, high, all, over d = i + j.

    low: d <= floor(size / 2.82); middle: floor(size / 2.82) < d <= floor(size / 2); high: the rest;
    all: ones. Unlike the authors' code (which includes each boundary diagonal in both neighbouring
    bands) the three bands partition the spectrum exactly.
    """
    d = np.add.outer(np.arange(size), np.arange(size))
    t_low = math.floor(size / FAD_LOW_DIVISOR)
    t_mid = math.floor(size / FAD_MID_DIVISOR)
    masks = np.stack([d <= t_low, (d > t_low) & (d <= t_mid), d > t_mid, np.ones_like(d, dtype=bool)])
    return torch.from_numpy(masks.astype(np.float32))


def lfs_band_masks(window: int = LFS_WINDOW, bands: int = LFS_BANDS) -> torch.Tensor:
    """Binary LFS bases (bands, window, window) float32: band k holds 2w/M * k <= i + j < 2w/M * (k+1).

    Equal-width slices of the anti-diagonal range [0, 2w) (authors' code: ``Filter(w, 2w/M*i,
    2w/M*(i+1))``), half-open so that every coefficient lies in exactly one band.
    """
    d = np.add.outer(np.arange(window), np.arange(window)).astype(np.float64)
    edges = [2.0 * window / bands * k for k in range(bands + 1)]
    masks = np.stack([(d >= lo) & (d < hi) for lo, hi in zip(edges[:-1], edges[1:])])
    return torch.from_numpy(masks.astype(np.float32))


def lfs_output_size(size: int) -> int:
    return (size + 2 * LFS_PADDING - LFS_WINDOW) // LFS_STRIDE + 1


class FAD(nn.Module):
    """(B, 3, S, S) image (any normalisation) -> (B, 12, S, S): band-passed images, band-major
    channel order [low RGB, middle RGB, high RGB, all RGB]."""

    base: torch.Tensor  # registered buffers
    dct: torch.Tensor

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        # Fixed by ``size``: not persistent, so only the learnable parts go into checkpoints.
        self.register_buffer("base", fad_band_masks(size), persistent=False)
        self.register_buffer("dct", dct_matrix(size).clone(), persistent=False)
        self.learnable = nn.Parameter(torch.randn(len(FAD_BANDS), size, size) * FILTER_INIT_STD)

    def filters(self) -> torch.Tensor:
        """(4, S, S): f_base + sigma(f_w), sigma(x) = 2 sigmoid(x) - 1 in (-1, 1)."""
        return self.base + (2.0 * torch.sigmoid(self.learnable.float()) - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            d = self.dct
            freq = d @ x @ d.T  # (B, 3, S, S) DCT-II per channel
            passed = freq.unsqueeze(1) * self.filters()[None, :, None]  # (B, 4, 3, S, S)
            out = d.T @ passed @ d  # inverse DCT
        return out.reshape(b, len(FAD_BANDS) * 3, self.size, self.size)


class LFS(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 6, S', S'), S' = (S + 8 - 10) // 2 + 1 (149 at S = 299).

    Grey value (ITU-R BT.601 weights) on the 0-255 scale as in the authors' code, 10x10 windows
    every 2 pixels (zero padding 4), per-window DCT, q = log10(|DCT| + 1e-15), then for each band k:
    mean over the band's coefficients of (f_base_k + sigma(f_w_k)) * q (the authors' ``norm=True``
    filter divides by the band's coefficient count).
    """

    base: torch.Tensor  # registered buffers
    count: torch.Tensor
    dct: torch.Tensor
    gray: torch.Tensor

    def __init__(self, size: int):
        super().__init__()
        self.out_size = lfs_output_size(size)
        base = lfs_band_masks()
        self.register_buffer("base", base, persistent=False)
        self.register_buffer("count", base.sum(dim=(1, 2)), persistent=False)
        self.register_buffer("dct", dct_matrix(LFS_WINDOW).clone(), persistent=False)
        self.register_buffer("gray", torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.learnable = nn.Parameter(torch.randn(LFS_BANDS, LFS_WINDOW, LFS_WINDOW) * FILTER_INIT_STD)

    def filters(self) -> torch.Tensor:
        """(M, w, w) band weights, divided by each band's coefficient count."""
        filt = self.base + (2.0 * torch.sigmoid(self.learnable.float()) - 1.0)
        return filt / self.count[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w = LFS_WINDOW
        with torch.autocast(device_type=x.device.type, enabled=False):
            grey = (x.float() * self.gray).sum(dim=1, keepdim=True) * 255.0  # (B, 1, S, S)
            patches = F.unfold(grey, kernel_size=w, stride=LFS_STRIDE, padding=LFS_PADDING)  # (B, w*w, L)
            patches = patches.transpose(1, 2).reshape(b, -1, w, w)  # (B, L, w, w)
            q = torch.log10((self.dct @ patches @ self.dct.T).abs() + LOG_EPS)
            stats = q.reshape(b, -1, w * w) @ self.filters().reshape(LFS_BANDS, w * w).T  # (B, L, M)
        return stats.transpose(1, 2).reshape(b, LFS_BANDS, self.out_size, self.out_size)


class MixBlock(nn.Module):
    """Cross-attention fusion of the FAD and LFS feature maps (paper Sec. 3.3, Fig. 5).

    Both inputs (B, C, H, H) (square). Per channel, queries of both streams (1x1 convs) are
    concatenated along the width and keys along the height, giving an (H, H) attention map
    A = softmax(Q K^T) shared by the two directions; each stream then receives the other stream
    re-weighted by A (scaled by a learnable sigma(gamma), 0 at init, so the block starts as the
    identity) through a depth-wise 1x1 conv + BN, added residually. Formulation follows the public
    F3Net re-implementation (github.com/yyk-wew/F3Net, models.py MixBlock).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.q_fad = nn.Conv2d(channels, channels, 1)
        self.q_lfs = nn.Conv2d(channels, channels, 1)
        self.k_fad = nn.Conv2d(channels, channels, 1)
        self.k_lfs = nn.Conv2d(channels, channels, 1)
        self.gamma_fad = nn.Parameter(torch.zeros(1))
        self.gamma_lfs = nn.Parameter(torch.zeros(1))
        self.proj_fad = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=channels), nn.BatchNorm2d(channels))
        self.proj_lfs = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=channels), nn.BatchNorm2d(channels))

    def forward(self, x_fad: torch.Tensor, x_lfs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x_fad.shape != x_lfs.shape or x_fad.shape[-1] != x_fad.shape[-2]:
            raise ValueError(f"MixBlock needs equal square maps, got {tuple(x_fad.shape)} and {tuple(x_lfs.shape)}")
        query = torch.cat([self.q_fad(x_fad), self.q_lfs(x_lfs)], dim=-1)  # (B, C, H, 2H)
        key = torch.cat([self.k_fad(x_fad), self.k_lfs(x_lfs)], dim=-1).transpose(-1, -2)  # (B, C, 2H, H)
        attention = torch.softmax(query @ key, dim=-1)  # (B, C, H, H)
        y_fad = x_fad + self.proj_fad(x_lfs * attention * (2.0 * torch.sigmoid(self.gamma_lfs) - 1.0))
        y_lfs = x_lfs + self.proj_lfs(x_fad * attention * (2.0 * torch.sigmoid(self.gamma_fad) - 1.0))
        return y_fad, y_lfs


def _match_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bring the LFS map to the FAD map's size. The streams differ by one pixel after the stems
    (FAD: floor((S-1)/2) - 2, LFS: floor(S/2) - 4) and usually meet after the entry flow's three
    stride-2 blocks (e.g. 19x19 at 299, 4x4 at 64); for the rare sizes where they do not, the LFS
    map is resampled so the cross-attention sees aligned positions."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class F3Net(nn.Module):
    """(B, 3, H, W) in [0, 1] -> {"logits": (B, K)[, "mask": (B, 1, mask_size, mask_size)]}."""

    def __init__(self, cfg: F3NetConfig):
        super().__init__()
        self.mode = cfg.f3net_mode
        self.size = cfg.image_size
        # The authors feed [-1, 1] images (mean = std = 0.5) to FAD; LFS uses the [0, 1] image.
        self.input = PixelInput(cfg.image_size, INCEPTION_MEAN, INCEPTION_STD)
        use_fad = self.mode in ("fad", "both", "mix")
        use_lfs = self.mode in ("lfs", "both", "mix")
        self.fad = FAD(cfg.image_size) if use_fad else None
        net: dict[str, Any] = dict(reduced=cfg.reduced, width=cfg.width)
        self.fad_net = XceptionBackbone(in_chans=3 * len(FAD_BANDS), **net) if use_fad else None
        self.lfs = LFS(cfg.image_size) if use_lfs else None
        # LFS maps are already half resolution: the authors' code uses a stride-1 conv1 there.
        self.lfs_net = XceptionBackbone(in_chans=LFS_BANDS, stem_stride=1, **net) if use_lfs else None
        ref = self.fad_net if use_fad else self.lfs_net
        assert ref is not None  # every f3net_mode uses at least one stream
        self.mix_mid = MixBlock(ref.mid_channels) if self.mode == "mix" else None
        self.mix_exit = MixBlock(ref.exit_channels) if self.mode == "mix" else None
        self.decoder = MaskDecoder(2 * ref.exit_channels, cfg.mask_size) if cfg.seg_head else None
        streams = 2 if self.mode in ("both", "mix") else 1
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.fc = nn.Linear(streams * ref.num_features, cfg.num_classes)

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """ImageNet Xception weights go into each stream (first convs adapted, as the authors do)."""
        return {name: net for name, net in (("fad_net", self.fad_net), ("lfs_net", self.lfs_net)) if net is not None}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x01 = resize_square(x, self.size)
        out: dict[str, torch.Tensor] = {}
        if self.mode == "mix":
            # mode "mix" builds both streams and both mix blocks
            assert self.fad is not None and self.fad_net is not None and self.mix_mid is not None
            assert self.lfs is not None and self.lfs_net is not None and self.mix_exit is not None
            f = self.fad_net.to_mid(self.fad(self.input(x01)))
            s = _match_size(self.lfs_net.to_mid(self.lfs(x01)), f)
            f, s = self.mix_mid(f, s)
            f = self.fad_net.mid_to_exit(f)
            s = _match_size(self.lfs_net.mid_to_exit(s), f)
            f, s = self.mix_exit(f, s)
            if self.decoder is not None:
                out["mask"] = self.decoder(torch.cat([f, s], dim=1))
            feats = [self.fad_net.tail(f), self.lfs_net.tail(s)]
        else:
            feats = []
            if self.fad is not None:
                assert self.fad_net is not None  # built together with self.fad
                feats.append(self.fad_net(self.fad(self.input(x01))))
            if self.lfs is not None:
                assert self.lfs_net is not None  # built together with self.lfs
                feats.append(self.lfs_net(self.lfs(x01)))
        pooled = torch.cat([h.mean(dim=(2, 3)) for h in feats], dim=1)  # (B, 2048 * streams)
        out["logits"] = self.fc(self.dropout(pooled))
        return out


class F3NetConfig(ModelConfig):
    """``f3net``: the frequency streams ``f3net_mode`` (fad | lfs | both | mix; mix = MixBlock
    fusion, the paper's full model); ``reduced`` drops Xception blocks 4-7 of every stream;
    ``seg_head`` adds the multi-task mask decoder (mix only) with ``mask_size`` outputs; ``width``
    (demo only) scales every channel count. Computes its own frequency input from raw pixels."""

    name: Literal["f3net"]
    input: Literal["raw"] = "raw"
    f3net_mode: Literal["fad", "lfs", "both", "mix"] = "mix"
    reduced: bool = False
    seg_head: bool = False
    mask_size: int = Field(224, ge=8, le=1024)
    width: Width = 1.0

    @property
    def mask_output(self) -> bool:
        return self.seg_head

    @model_validator(mode="after")
    def _mask_head_needs_mix(self) -> F3NetConfig:
        if self.seg_head and self.f3net_mode != "mix":
            raise ValueError("seg_head (multi-task mask decoder) needs f3net_mode: mix")
        return self


@register_model(F3NetConfig, example={"width": 0.25, "reduced": True}, paper=PAPER)
def build_f3net(cfg: F3NetConfig) -> nn.Module:
    return F3Net(cfg)
