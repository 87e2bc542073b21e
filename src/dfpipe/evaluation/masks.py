"""Manipulation-mask quality over a split's stored mask shards, beside the trivial baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.scoring import metrics as M


def edited_with_mask(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows scored for localisation: edited items (label 2) that have a true mask. Real and
    generated items are left out: their targets (all 0 / all 1) restate the class label."""
    return manifest[(manifest["label"] == 2) & manifest["has_mask"].astype(bool)]


def load_targets(manifest: pd.DataFrame, split_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """``(rows, (M, S, S) bool masks)`` of :func:`edited_with_mask` read from the split's shards."""
    from dfpipe.core.shards import ShardReader

    sel = edited_with_mask(manifest)
    if sel.empty:
        return sel, np.zeros((0, 1, 1), bool)
    target = ShardReader(split_dir).gather(sel["mask_shard"].tolist(), sel["offset"].tolist()) > 127
    return sel, target


def resize_to(mask_probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(M, h, w)`` probabilities resized (bilinear) to ``size``."""
    import torch
    import torch.nn.functional as F

    pred = torch.from_numpy(np.asarray(mask_probs, np.float32))
    return F.interpolate(pred[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def mask_evaluation(
    manifest: pd.DataFrame, split_dir: Path, ids: np.ndarray, mask_probs: np.ndarray, threshold: float = 0.5
) -> dict:
    """Dice / IoU / PBCA of predicted masks on the edited test items with a true mask, and the same
    scores of the trivial all-zeros and all-ones masks on those items.

    ``mask_probs``: ``(N, h, w)`` sigmoid masks in the order of ``ids``; each is resized to its
    item's stored mask size. Returns ``{"model": {n, dice, iou, pbca}, "all_zeros": ..., "all_ones": ...}``.
    """
    sel, target = load_targets(manifest, split_dir)
    row_of = pd.Series(np.arange(len(ids)), index=np.asarray(ids).astype(str))
    missing = sorted(set(sel["id"]) - set(row_of.index))
    if missing:
        raise ValueError(f"{split_dir}: no predicted mask for {len(missing)} items (first {missing[:3]})")
    if sel.empty:
        empty = M.mask_scores(np.zeros((0, 1, 1)), np.zeros((0, 1, 1), bool), threshold)
        return {"model": empty, "all_zeros": empty, "all_ones": empty}
    pred = resize_to(np.asarray(mask_probs)[row_of.loc[sel["id"]].to_numpy()], target.shape[1:])
    return {
        "model": M.mask_scores(pred, target, threshold),
        "all_zeros": M.mask_scores(np.zeros(target.shape), target, threshold),
        "all_ones": M.mask_scores(np.ones(target.shape), target, threshold),
    }
