"""FaceForensics++ protocol metrics: real vs manipulated on video items only, frame and video level.

The 3-class headline mixes still images (FFHQ, GAN images) with video frames, so a model that
learns "video frame -> edited" scores a high edited F1 while it cannot tell an original video from
a manipulated one. The FF++ literature reports the binary task inside the video data set: the
originals against all manipulation methods, and against each method, at frame level and at video
level (the mean frame score of a video). This module computes exactly that, with:

- score = 1 - p(real) (both fake classes merged), positive = manipulated;
- AUC, AP, and accuracy at a threshold chosen on the *validation* split's video items
  (:func:`dfpipe.scoring.metrics.val_threshold`; never on the items it is applied to);
- percentile intervals from a cluster bootstrap whose unit is the split group (the union-find
  identity group the split was decided on): an original and the fakes made from it share
  identities, so they are resampled together. Seeds are resampled as in
  :func:`dfpipe.scoring.stats.bootstrap_ci`. With fewer than :data:`MIN_UNITS` groups, the
  interval is not computed and the cell says "n too small".

Every bootstrap replicate is a vector of group multiplicities, so all metrics are computed as
weighted statistics over one sort of the scores, ``(n_boot, N)`` at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dfpipe.scoring import metrics as M

#: Fewest independent units (split groups) for which an interval is reported.
MIN_UNITS = 10
#: The protocol's metrics.
PROTOCOL_METRICS = ("auc", "ap", "acc")


def fake_score(probs: np.ndarray) -> np.ndarray:
    """``1 - p(real)`` for ``(..., K)`` probabilities: the manipulated-vs-real score."""
    return 1.0 - np.asarray(probs, dtype=np.float64)[..., 0]


def _level_weights(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight ``(B, L)`` per level of tied ``score``, levels ascending."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    return np.add.reduceat((w * y)[:, order], starts, axis=1), np.add.reduceat((w * ~y)[:, order], starts, axis=1)


def weighted_auc(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count one half) of ``score`` for binary ``y`` under item weights ``w``
    ``(B, N)``; ``(B,)``, NaN where a class has zero weight. ``w = 1`` gives
    :func:`dfpipe.scoring.metrics.binary_auc`."""
    wp, wn = _level_weights(y, score, w)
    below = np.cumsum(wn, axis=1) - wn  # negatives strictly below
    tp, tn = wp.sum(1), wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (wp * (below + 0.5 * wn)).sum(1) / (tp * tn)
    return np.where((tp > 0) & (tn > 0), out, np.nan)


def weighted_ap(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step definition, tied scores one threshold) under item
    weights ``w`` ``(B, N)``; ``(B,)``, NaN where a class has zero weight."""
    wp, wn = (a[:, ::-1] for a in _level_weights(y, score, w))  # descending thresholds
    tp, fp = np.cumsum(wp, axis=1), np.cumsum(wn, axis=1)
    total_p, total_n = tp[:, -1], fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        out = (wp * precision).sum(1) / total_p
    return np.where((total_p > 0) & (total_n > 0), out, np.nan)


def weighted_acc(y: np.ndarray, score: np.ndarray, threshold: float, w: np.ndarray) -> np.ndarray:
    """Accuracy of "manipulated when ``score > threshold``" under item weights ``w`` ``(B, N)``."""
    correct = (np.asarray(score) > threshold) == np.asarray(y, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ correct.astype(np.float64)) / w.sum(1)


def group_weights(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, int]:
    """``(n_boot, N)`` item weights of a cluster bootstrap over ``groups`` (each replicate draws
    the groups with replacement; an item's weight is its group's multiplicity) and the number of
    groups."""
    keys, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    rng = np.random.default_rng([seed, 7])
    draws = rng.integers(0, len(keys), (n_boot, len(keys)))
    counts = np.zeros((n_boot, len(keys)))
    np.add.at(counts, (np.repeat(np.arange(n_boot), len(keys)), draws.ravel()), 1.0)
    return counts[:, inverse], len(keys)


def _metric_matrix(y, scores: np.ndarray, thresholds: Sequence[float], w: np.ndarray) -> np.ndarray:
    """``(S, B, 3)``: auc, ap, acc per seed (scores ``(S, N)``) under weights ``w`` ``(B, N)``."""
    return np.stack(
        [
            np.stack([weighted_auc(y, sc, w), weighted_ap(y, sc, w), weighted_acc(y, sc, t, w)], -1)
            for sc, t in zip(scores, thresholds)
        ]
    )


def _summarise(y, scores, thresholds, groups, n_boot: int, seed: int, level: float) -> dict:
    """Per metric: seed mean, sd, interval (or why none), and the units it resampled."""
    ones = np.ones((1, len(y)))
    point = _metric_matrix(y, scores, thresholds, ones)[:, 0, :]  # (S, 3)
    n_units = len(np.unique(np.asarray(groups).astype(str)))
    out: dict = {
        "n_items": int(len(y)),
        "n_units": n_units,
        "n_real": int((~np.asarray(y, bool)).sum()),
        "n_fake": int(np.asarray(y, bool).sum()),
    }
    low = high = np.full(len(PROTOCOL_METRICS), np.nan)
    if n_units >= MIN_UNITS:
        w, _ = group_weights(groups, n_boot, seed)
        boot = _metric_matrix(y, scores, thresholds, w)  # (S, B, 3)
        rng = np.random.default_rng([seed, 1])
        s = boot.shape[0]
        pick = rng.integers(0, s, (n_boot, s))  # seeds resampled too
        seed_mean = np.nanmean(boot[pick, np.arange(n_boot)[:, None], :], axis=1)  # (B, 3)
        alpha = (1.0 - level) / 2.0
        low, high = np.nanquantile(seed_mean, alpha, axis=0), np.nanquantile(seed_mean, 1 - alpha, axis=0)
    for j, name in enumerate(PROTOCOL_METRICS):
        vals = point[:, j]
        out[name] = {
            "mean": float(np.mean(vals)),
            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "low": float(low[j]),
            "high": float(high[j]),
            "interval": "ok" if n_units >= MIN_UNITS else "n too small",
        }
    return out


def protocol_metrics(
    items: pd.DataFrame,
    probs: np.ndarray,
    groups: np.ndarray,
    thresholds: Sequence[float | None],
    n_boot: int,
    seed: int,
    level: float,
) -> dict | None:
    """Real vs manipulated on the video items of one evaluation.

    Args:
        items: ``(N,)`` rows with ``method, video_id, label`` (the stacked test items).
        probs: ``(S, N, K)`` seed probabilities aligned with ``items``.
        groups: ``(N,)`` split group of each item (the resampling unit).
        thresholds: per seed, in the order of ``probs``: the val-chosen threshold on the fake score,
            or ``None`` (no video items in val: 0.5, the argmax rule of a binary softmax, is used
            and the output says so).

    Returns ``None`` when the split holds no video frames of both classes, else
    ``{"unit", "threshold_source", "frame": {"all": ..., "<method>": ...}, "video": {...}}``
    where each comparison is originals against all manipulated videos (``all``) or one method.
    """
    is_video = items["video_id"].astype(str).to_numpy() != ""
    sub = items.loc[is_video].reset_index(drop=True)
    if sub.empty:
        return None
    y_all = sub["label"].to_numpy(np.int64) != 0
    if y_all.all() or not y_all.any():
        return None
    p = np.asarray(probs)[:, is_video]
    g = np.asarray(groups)[is_video]
    if len(thresholds) != p.shape[0]:
        raise ValueError(f"{len(thresholds)} thresholds for {p.shape[0]} seeds")
    t = [0.5 if th is None else float(th) for th in thresholds]
    frame_scores = fake_score(p)  # (S, N)
    videos, _ = M.video_level(sub, p[0])
    keys = [M.video_key(m, v) for m, v in zip(sub["method"].astype(str), sub["video_id"].astype(str))]
    index = {k: i for i, k in enumerate(videos["key"])}
    inv = np.array([index[k] for k in keys])
    counts = np.bincount(inv, minlength=len(videos))
    video_scores = np.stack([np.bincount(inv, weights=sc, minlength=len(videos)) / counts for sc in frame_scores])
    video_groups = pd.Series(g).groupby(inv).first().to_numpy()
    real_methods = sorted(set(sub.loc[~y_all, "method"].astype(str)))
    fake_methods = sorted(set(sub.loc[y_all, "method"].astype(str)))
    out: dict = {
        "unit": "split group",
        "originals": real_methods,
        "methods": fake_methods,
        "threshold_source": "val" if all(th is not None for th in thresholds) else "0.5 (no video items in val)",
        "thresholds": t,
    }
    for level_name, labels_, scores_, groups_, methods_ in (
        ("frame", y_all, frame_scores, g, sub["method"].astype(str).to_numpy()),
        ("video", videos["label"].to_numpy() != 0, video_scores, video_groups, videos["method"].astype(str).to_numpy()),
    ):
        res = {"all": _summarise(labels_, scores_, t, groups_, n_boot, seed, level)}
        for m in fake_methods:
            keep = ~labels_ | (methods_ == m)
            res[m] = _summarise(labels_[keep], scores_[:, keep], t, groups_[keep], n_boot, seed, level)
        out[level_name] = res
    return out


def video_threshold(items: pd.DataFrame, probs: np.ndarray) -> float | None:
    """Val-chosen threshold on the fake score among the video items of a validation split
    (``items`` with ``video_id, label``; ``probs`` ``(N, K)``), or ``None`` without both classes."""
    is_video = np.asarray(items["video_id"]).astype(str) != ""
    y = np.asarray(items["label"])[is_video] != 0
    if y.all() or not y.any():
        return None
    return M.val_threshold(y, fake_score(np.asarray(probs)[is_video]))
