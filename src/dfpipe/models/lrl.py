"""LRL: Chen et al., "Local Relation Learning for Face Forgery Detection", AAAI 2021 (arXiv:2105.02577).

* Two streams (paper Sec. "RGB-Frequency Attention Module"): an RGB stream on the normalised image
  and a frequency stream on its high-pass residual: grey image, full-image 2-D DCT, the low band
  (anti-diagonal ``i + j < S / 3``) set to zero, inverse DCT -> one channel. The paper's backbone is
  an ImageNet EfficientNet-B4; here each stream is an :class:`XceptionBackbone` (``width`` knob as
  F3Net's, so the demo runs narrow nets).
* RFAM (RGB-Frequency Attention Module) at three levels (end of Xception's block2, stride 8;
  block7, stride 16; the exit flow's conv4, stride 32): the two maps are concatenated, a 1x1 conv +
  BN + ReLU and a 3x3 conv give two sigmoid maps, each stream is multiplied by its own map and runs
  on; the level's fused feature is the sum of the two re-weighted maps.
* MPSM (Multi-scale Patch Similarity Module): the three fused levels are resampled to one size and
  concatenated (the "multi-scale" feature), split into k x k patches (each patch's features
  flattened), and every pair of patches gets ``s_ij = (1 + cos(f_i, f_j)) / 2`` in [0, 1]: a
  (B, k^2, k^2) similarity map. The classifier reads the map's off-diagonal entries (a two-layer MLP),
  so every prediction goes through the local relations.
* Supervision (:func:`relation_targets`, :func:`relation_loss`; the loss term
  ``w_relation`` of :mod:`dfpipe.training.losses`): each patch's forged-pixel ratio ``p_i`` from the
  manipulation mask, target ``s_ij = 1 - (p_i - p_j)^2``, mean squared error to the predicted map.
  A real face (mask all 0) and a fully generated one (all 1) get the all-ones target.
* ``seg_head``: the paper's auxiliary mask decoder (BCE, ``w_bce``) on the fused multi-scale
  feature, :class:`~.heads.MaskDecoder`.

Where the paper is unclear or could not be checked here (its method section was not available to
this implementation; the constants below follow the abstract's module names and the public
re-implementation in DeepfakeBench, github.com/SCLBD/DeepfakeBench, training/detectors/lrl_detector.py
and training/dataset/lrl_dataset.py):

* k = 4 (16 patches) and the (1 + cos) / 2 normalisation are DeepfakeBench's.
* The target: ``1 - (p_i - p_j)^2`` (as this project's brief states the paper's formula);
  DeepfakeBench writes ``1 - |p_i - p_j|`` (a 2-norm of the scalar difference). Both are 1 for
  equal ratios and 0 for a fully real against a fully forged patch.
* The high-pass cut-off ``i + j < S / 3`` on a grey image is DeepfakeBench's ``multi_pass_filter``
  (r = 0.33); the paper's exact band is not confirmed.
* The MSE is averaged over the whole (P, P) map, diagonal included (zero error there), as
  DeepfakeBench's ``nn.MSELoss`` on the full map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .common import INCEPTION_MEAN, INCEPTION_STD, PixelInput, resize_square, scaled
from .heads import MaskDecoder
from .registry import ModelConfig, Width, register_model
from .spectrum import GRAY_WEIGHTS, dct_matrix
from .xception import XceptionBackbone

#: Patches per side of the similarity grid: DeepfakeBench's LRL splits the fused map into 4 x 4
#: patches (``unfold(kernel_size=2)`` on 8 x 8 at 256 px; ground truth ``get_similaritys(n=4, m=4)``).
RELATION_GRID = 4
#: High-pass cut-off of the frequency stream: DCT coefficients with (i + j) < S * 0.33 are removed
#: (DeepfakeBench ``LRLDataset.image2dct``: ``multi_pass_filter(r1=0.33, r2=0.33)``, high mask).
HIGHPASS_CUTOFF = 0.33
#: Classifier on the flattened similarity pattern: hidden width 128, dropout 0.2 (DeepfakeBench
#: ``overall_classifier``: Linear(240, 128), ReLU, Dropout(0.2), Linear(128, 2)).
CLS_HIDDEN = 128
CLS_DROPOUT = 0.2
#: Xception's block2 output width (stride 8): the low level of the multi-scale feature.
LOW_CHANNELS = 256


def highpass_mask(size: int, cutoff: float = HIGHPASS_CUTOFF) -> torch.Tensor:
    """(size, size) float32: 0 on the low band ``i + j < cutoff * size`` of the DCT grid, else 1."""
    i = torch.arange(size)
    return ((i[:, None] + i[None, :]) >= cutoff * size).float()


class HighPass(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 1, S, S): grey (BT.601), 2-D DCT, low band zeroed, inverse DCT,
    then ``(x - 0.5) / 0.5`` as DeepfakeBench normalises it. In float32 with autocast off (the DCT
    round trip is ill-conditioned in bf16)."""

    dct: torch.Tensor  # registered buffers
    keep: torch.Tensor
    gray: torch.Tensor

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("dct", dct_matrix(size).clone(), persistent=False)
        self.register_buffer("keep", highpass_mask(size), persistent=False)
        self.register_buffer("gray", torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            grey = (x.float() * self.gray).sum(dim=1, keepdim=True)
            d = self.dct
            out = d.T @ ((d @ grey @ d.T) * self.keep) @ d
        return (out - 0.5) / 0.5


class RFAM(nn.Module):
    """RGB-Frequency Attention Module: (x_rgb, x_freq) (B, C, h, w) each -> both re-weighted by
    their own spatial attention map, ``sigmoid(conv3x3(relu(bn(conv1x1([x_rgb, x_freq])))))``
    with 2 output channels (DeepfakeBench ``RFAM``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x_rgb: torch.Tensor, x_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.attention(torch.cat([x_rgb, x_freq], dim=1))
        return x_rgb * a[:, :1], x_freq * a[:, 1:]


def patch_similarity(feats: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, R, R) with R a multiple of ``grid`` -> (B, P, P), P = grid^2: ``(1 + cos) / 2`` of
    every pair of the grid x grid patches (each patch's C x (R/grid)^2 values as one vector),
    patches in row-major order."""
    size = feats.shape[-1]
    if feats.shape[-2] != size or size % grid:
        raise ValueError(
            f"patch_similarity needs a square map with side a multiple of {grid}, got {tuple(feats.shape)}"
        )
    step = size // grid
    # float32 with autocast off: bf16 would round the similarities (the regression targets) to ~3 digits
    with torch.autocast(device_type=feats.device.type, enabled=False):
        patches = F.unfold(feats.float(), kernel_size=step, stride=step).transpose(1, 2)  # (B, P, C*step^2)
        unit = F.normalize(patches, dim=-1, eps=1e-8)
        return (1.0 + unit @ unit.transpose(1, 2)) / 2.0


def patch_ratios(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, S, S) {0, 1} mask -> (B, grid^2) forged-pixel ratio of each of the grid x grid patches
    (row-major; ``adaptive_avg_pool2d`` bins when S is not a multiple of ``grid``)."""
    return F.adaptive_avg_pool2d(mask[:, None].float(), grid).flatten(1)


def relation_targets(mask: torch.Tensor, grid: int = RELATION_GRID) -> torch.Tensor:
    """(B, S, S) {0, 1} mask -> (B, P, P) target similarities ``1 - (p_i - p_j)^2`` of the
    per-patch forged-pixel ratios p (:func:`patch_ratios`); see the module notes on the formula."""
    p = patch_ratios(mask, grid)
    return 1.0 - (p[:, :, None] - p[:, None, :]) ** 2


def relation_loss(sim: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-item MSE (B,) between a predicted (B, P, P) similarity map and the mask's targets on the
    same grid (P = grid^2), averaged over all P x P entries."""
    grid = round(sim.shape[-1] ** 0.5)
    if grid * grid != sim.shape[-1]:
        raise ValueError(f"a relation map needs P = k^2 patches, got {tuple(sim.shape)}")
    return (sim.float() - relation_targets(mask, grid)).pow(2).mean(dim=(1, 2))


class LRLConfig(ModelConfig):
    """``lrl``: two Xception streams (``width``: demo-only channel multiplier; ``reduced`` drops
    middle-flow blocks 4-7), RFAM fusion, MPSM similarity maps on each grid of ``relation_grids``
    (patches per side; the paper's 4); ``seg_head`` adds the paper's mask decoder (``mask_size``)."""

    name: Literal["lrl"]
    input: Literal["raw"] = "raw"
    width: Width = 1.0
    reduced: bool = False
    relation_grids: tuple[int, ...] = Field((RELATION_GRID,), min_length=1)
    seg_head: bool = False
    mask_size: int = Field(224, ge=8, le=1024)

    @property
    def mask_output(self) -> bool:
        return self.seg_head

    @property
    def relation_output(self) -> bool:
        return True


class LRL(nn.Module):
    """(B, 3, H, W) in [0, 1] -> {"logits": (B, K), "relation": tuple of (B, k^2, k^2) per grid k
    [, "mask": (B, 1, mask_size, mask_size)]}."""

    def __init__(self, cfg: LRLConfig):
        super().__init__()
        if any(k < 2 for k in cfg.relation_grids):
            raise ValueError(f"relation_grids must be >= 2 patches per side, got {cfg.relation_grids}")
        self.size = cfg.image_size
        self.grids = tuple(cfg.relation_grids)
        self.input = PixelInput(cfg.image_size, INCEPTION_MEAN, INCEPTION_STD)
        self.highpass = HighPass(cfg.image_size)
        self.rgb_net = XceptionBackbone(in_chans=3, reduced=cfg.reduced, width=cfg.width)
        self.freq_net = XceptionBackbone(in_chans=1, reduced=cfg.reduced, width=cfg.width)
        net = self.rgb_net
        self.levels = (net.blocks_to_mid[:2], net.blocks_to_mid[2:])  # block1-2 (stride 8), block3-7 (stride 16)
        channels = (scaled(LOW_CHANNELS, cfg.width), net.mid_channels, net.num_features)
        self.rfam = nn.ModuleList(RFAM(c) for c in channels)
        fused = sum(channels)
        pairs = sum(k * k * (k * k - 1) for k in self.grids)
        self.classifier = nn.Sequential(
            nn.Linear(pairs, CLS_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(CLS_DROPOUT),
            nn.Linear(CLS_HIDDEN, cfg.num_classes),
        )
        self.decoder = MaskDecoder(fused, cfg.mask_size) if cfg.seg_head else None

    def pretrained_targets(self) -> dict[str, nn.Module]:
        """ImageNet Xception weights go into both streams (the frequency stream's 1-channel conv1
        does not match and keeps its random init)."""
        return {"rgb_net": self.rgb_net, "freq_net": self.freq_net}

    @staticmethod
    def _run(net: XceptionBackbone, x: torch.Tensor, blocks: Sequence[str], stem: bool = False) -> torch.Tensor:
        if stem:
            x = net.act1(net.bn1(net.conv1(x)))
            x = net.act2(net.bn2(net.conv2(x)))
        for name in blocks:
            x = getattr(net, name)(x)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three fused levels (B, C_l, h_l, w_l), strides 8, 16, 32."""
        x01 = resize_square(x, self.size)
        r, f = self.input(x01), self.highpass(x01)
        fused = []
        for level, rfam in enumerate(self.rfam):
            if level < 2:
                blocks = self.levels[level]
                r = self._run(self.rgb_net, r, blocks, stem=level == 0)
                f = self._run(self.freq_net, f, blocks, stem=level == 0)
            else:
                r = self.rgb_net.tail(self.rgb_net.mid_to_exit(r))
                f = self.freq_net.tail(self.freq_net.mid_to_exit(f))
            r, f = rfam(r, f)
            fused.append(r + f)
        return fused

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | tuple[torch.Tensor, ...]]:
        levels = self.features(x)
        high = levels[-1].shape[-1]
        out: dict[str, torch.Tensor | tuple[torch.Tensor, ...]] = {}
        sims = []
        for k in self.grids:
            # One multi-scale map per grid at the stride-32 resolution (DeepfakeBench resamples
            # the stride-8/16 levels down to it), rounded up to a multiple of k; smaller maps
            # (a 2 x 2 exit flow at 64 px) are repeated up by adaptive pooling.
            side = k * -(-high // k)
            multi = torch.cat([F.adaptive_avg_pool2d(v, side) for v in levels], dim=1)
            sims.append(patch_similarity(multi, k))
            if self.decoder is not None and k == self.grids[0]:
                out["mask"] = self.decoder(multi)
        off_diag = [s[:, ~torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)] for s in sims]
        out["logits"] = self.classifier(torch.cat(off_diag, dim=1))
        out["relation"] = tuple(sims)
        return out


@register_model(LRLConfig, example={"width": 0.25, "reduced": True}, cites="Chen et al., AAAI 2021")
def build_lrl(cfg: LRLConfig) -> nn.Module:
    return LRL(cfg)
