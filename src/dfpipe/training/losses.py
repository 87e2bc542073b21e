"""The training loss: cross-entropy + optional segmentation BCE + Dice (the notes' exp 5) + attention-map L1.

``loss = w_cls * CE(logits, label) + w_bce * BCE(mask logits, mask) + w_dice * Dice(mask logits, mask)
+ w_map * L1(sigmoid(mask logits), mask) + w_relation * MSE(relation maps, relation_targets(mask))``

The ``map`` term is FFD's supervised attention-map loss (Dang et al., CVPR 2020, Sec. 3.2:
``||M_att - M_gt||_1``; the authors' train.py takes ``nn.L1Loss``, the mean absolute difference over
the map's pixels): per item the mean over pixels of ``|sigmoid(logits) - target|``. ``w_map: 0``
is the paper's unsupervised attention (the map learns from the class loss alone).

The ``relation`` term is LRL's similarity loss (Chen et al., AAAI 2021; :mod:`dfpipe.models.lrl`):
per item the mean over the model's patch-similarity maps of the MSE to the mask-derived targets,
weighted like the mask terms; it needs masks from the loader but no mask head.

The class term of a single-logit (``head: sigmoid``, :mod:`dfpipe.models.class_head`) model is the
binary papers' BCE-with-logits on ``label != 0`` (real 0 / fake 1), with ``label_smoothing`` and
``class_weights`` meaning what they mean for two-class CE: it equals CE on the logits ``[0, z]``.

A zero weight is the ablation ("assign zero weight to each auxiliary loss", seed 000) and skips
the term entirely (it is neither computed nor logged).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from dfpipe.core.config import Config
from dfpipe.models.class_head import is_single_logit
from dfpipe.models.lrl import relation_loss


class LossConfig(Config):
    """Loss weights (``runs.<run>.loss``; every key required: the shared values are in ``run_defaults.loss``).

    ``class_weights``: per-class CE weights, one per class, or ``None`` (unweighted).
    ``dice_eps``: smoothing of the soft Dice (Milletari et al., V-Net, 2016), 1.0 = "add-one".
    ``mask_on``: which items the mask terms see. ``edited``: only edited items (label 2), because
    a real image's all-zeros and a generated image's all-ones mask restate the class label (issue
    12: an untrained decoder then out-scores a trained one); ``all``: every item with a mask target
    (the notes' original setup).
    """

    w_cls: float = Field(ge=0)
    w_bce: float = Field(ge=0)
    w_dice: float = Field(ge=0)
    # FFD's attention-map L1 (module docstring). Left out of the dumped config at 0, as w_relation,
    # so checkpoints written before the key keep their bytes and still load.
    w_map: float = Field(0.0, ge=0, exclude_if=lambda v: v == 0.0)
    # LRL's patch-similarity MSE (Chen et al., AAAI 2021; :func:`relation_loss`). Left out of the
    # dumped config at 0 so checkpoints written before the key keep their bytes and still load.
    w_relation: float = Field(0.0, ge=0, exclude_if=lambda v: v == 0.0)
    class_weights: tuple[Annotated[float, Field(gt=0)], ...] | None
    label_smoothing: float = Field(ge=0, lt=1)
    dice_eps: float = Field(gt=0)
    mask_on: Literal["edited", "all"]

    @model_validator(mode="after")
    def _some_weight(self) -> LossConfig:
        if self.w_cls == self.w_bce == self.w_dice == self.w_map == self.w_relation == 0:
            raise ValueError("all loss weights are zero")
        return self

    @property
    def uses_masks(self) -> bool:
        """Whether the loader must provide ``mask`` / ``mask_weight`` (a mask-head term or the
        relation term, whose targets come from the masks)."""
        return self.uses_mask_head or self.w_relation > 0

    @property
    def uses_mask_head(self) -> bool:
        """Whether a term reads the model's ``mask`` output."""
        return self.w_bce > 0 or self.w_dice > 0 or self.w_map > 0


#: The edited class (``dfpipe.core.manifest.LABELS``): the only one whose mask is not its label.
EDITED = 2


class DetectionLoss(nn.Module):
    """``forward(outputs, batch) -> (total, parts)``.

    ``outputs``: the model's dict, ``logits (B,K)`` and, when a mask term is on, ``mask (B,1,h,w)``
    logits. ``batch``: ``label (B,)`` int64 and, when a mask term is on, ``mask (B,S,S)`` in {0,1}
    and ``mask_weight (B,)`` (0 excludes an item: an edited frame without a mask). The target mask
    is resized to ``(h, w)`` (nearest). Mask terms are per-item means weighted by ``mask_weight``.
    ``parts`` holds the detached value of each active term (``cls``, ``bce``, ``dice``, ``map``,
    ``relation``; the last reads ``relation``, a tuple of (B, P, P) maps, not ``mask``).
    """

    class_weight: torch.Tensor | None  # registered buffer

    def __init__(self, cfg: LossConfig, num_classes: int):
        super().__init__()
        if cfg.class_weights is not None and len(cfg.class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(cfg.class_weights)} entries for {num_classes} classes")
        self.cfg = cfg
        self.num_classes = num_classes
        weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        parts: dict[str, torch.Tensor] = {}
        total = outputs["logits"].new_zeros((), dtype=torch.float32)
        if cfg.w_cls > 0 and is_single_logit(outputs["logits"]):
            parts["cls"] = self.binary_cls(outputs["logits"][:, 0].float(), batch["label"])
            total = total + cfg.w_cls * parts["cls"]
        elif cfg.w_cls > 0:
            parts["cls"] = F.cross_entropy(
                outputs["logits"].float(), batch["label"], weight=self.class_weight, label_smoothing=cfg.label_smoothing
            )
            total = total + cfg.w_cls * parts["cls"]
        if cfg.uses_mask_head:
            if "mask" not in outputs:
                raise ValueError("w_bce/w_dice/w_map > 0 but the model has no mask output (set model.seg_head)")
            if "mask" not in batch:
                raise ValueError("w_bce/w_dice/w_map > 0 but the batch has no target masks")
            logits = outputs["mask"].float()[:, 0]  # (B,h,w)
            target = F.interpolate(batch["mask"][:, None].float(), size=logits.shape[-2:], mode="nearest")[
                :, 0
            ]  # (B,h,w)
            weight, norm = self.mask_weight(batch)
            if cfg.w_bce > 0:
                per_item = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2))
                parts["bce"] = (per_item * weight).sum() / norm
                total = total + cfg.w_bce * parts["bce"]
            if cfg.w_dice > 0:
                prob = torch.sigmoid(logits)
                inter = (prob * target).sum((1, 2))
                denom = prob.sum((1, 2)) + target.sum((1, 2))
                per_item = 1 - (2 * inter + cfg.dice_eps) / (denom + cfg.dice_eps)
                parts["dice"] = (per_item * weight).sum() / norm
                total = total + cfg.w_dice * parts["dice"]
            if cfg.w_map > 0:
                per_item = (torch.sigmoid(logits) - target).abs().mean((1, 2))
                parts["map"] = (per_item * weight).sum() / norm
                total = total + cfg.w_map * parts["map"]
        if cfg.w_relation > 0:
            parts["relation"] = self.relation(outputs, batch)
            total = total + cfg.w_relation * parts["relation"]
        return total, {k: v.detach() for k, v in parts.items()}

    def relation(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """LRL's similarity term: per item the mean over the model's similarity maps (``outputs
        ["relation"]``, one (B, P, P) map per patch grid) of the MSE to :func:`relation_targets`,
        weighted like the mask terms (``mask_weight``, ``mask_on``)."""
        if "relation" not in outputs:
            raise ValueError("w_relation > 0 but the model has no relation output (model lrl)")
        if "mask" not in batch:
            raise ValueError("w_relation > 0 but the batch has no target masks")
        weight, norm = self.mask_weight(batch)
        per_item = torch.stack([relation_loss(sim, batch["mask"]) for sim in outputs["relation"]]).mean(0)
        return (per_item * weight).sum() / norm

    def mask_weight(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item weight ``(B,)`` of every mask-supervised term and its normaliser: the loader's
        ``mask_weight``, times "is edited" under ``mask_on: edited``; the sum clamped at 1 so that a
        batch without a weighted item gives 0, not NaN."""
        weight = batch["mask_weight"].float()
        if self.cfg.mask_on == "edited":
            weight = weight * (batch["label"] == EDITED).float()
        return weight, weight.sum().clamp_min(1.0)

    def binary_cls(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """BCE-with-logits of the fake logit ``z (B,)`` on ``label != 0``. Label smoothing moves the
        target to ``eps / 2`` / ``1 - eps / 2`` (two-class CE's smoothed fake probability); class
        weights weight each item by its class's weight and normalise by their sum (CE's weighted
        mean; with smoothing too, each item's smoothing term takes its own class's weight)."""
        if self.num_classes != 2:
            raise ValueError(f"a single-logit (sigmoid) head needs num_classes 2, not {self.num_classes}")
        fake = label != 0
        eps = self.cfg.label_smoothing
        target = fake.float() * (1 - eps) + eps / 2
        per_item = F.binary_cross_entropy_with_logits(z, target, reduction="none")
        if self.class_weight is None:
            return per_item.mean()
        weight = self.class_weight[fake.long()]
        return (per_item * weight).sum() / weight.sum()


def build_loss(cfg: LossConfig, num_classes: int) -> DetectionLoss:
    """The one loss builder used by training (and by nothing else: evaluation scores predictions)."""
    return DetectionLoss(cfg, num_classes)
