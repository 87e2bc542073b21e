"""Classification metrics: the one place every stage computes scores (training selection, evaluation).

Training imports :func:`macro_f1` for model selection on the val split, so selection and reported
scores share one F1 path (:func:`f1_from_confusion`).

Conventions (all functions):

- ``labels``: ``(N,)`` int class indices in ``[0, K)``; ``probs``: ``(N, K)`` float class
  probabilities (rows sum to 1); predictions are ``probs.argmax(1)``.
- Label 0 is *real*; every other class is a kind of forgery. The binary real-vs-fake task merges
  all fake classes and scores an item with ``1 - p(real)`` (higher = more likely forged).
- A metric that is undefined on the data (a class absent, a single class only) is ``NaN`` and a
  sentence explaining why is appended to the ``notes`` list the caller passes in; it never raises.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dfpipe.core.manifest import LABELS, is_fake

NAN = float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over ``num_classes`` labels (absent classes count as 0, not skipped)."""
    return float(f1_from_confusion(confusion(y_true, y_pred, num_classes)).mean())


def weighted_f1(cm: np.ndarray) -> float:
    """Support-weighted mean of the per-class F1 of a confusion matrix (scikit-learn's
    ``average="weighted"``): shown beside macro-F1 because the notes do not say which they used."""
    cm = np.asarray(cm)
    support = cm.sum(1).astype(np.float64)
    return float((f1_from_confusion(cm) * support).sum() / support.sum()) if support.sum() else NAN


# --------------------------------------------------------------------------------------------
# Building blocks


def class_names(num_classes: int) -> list[str]:
    """``["real", "fake", "edited"]`` for the 3-class task; ``class<k>`` beyond the known labels."""
    return [LABELS.get(k, f"class{k}") for k in range(num_classes)]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix ``(K, K)`` int64: rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    _check_range(y_true, num_classes, "labels")
    _check_range(y_pred, num_classes, "predictions")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 ``(K,)`` from a confusion matrix; a class never true nor predicted gets 0
    (scikit-learn's ``zero_division=0``, so macro-F1 matches :func:`macro_f1`)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)
    return f1


def rankdata(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share the mean of their positions), float64: the same
    algorithm and the same bits as ``scipy.stats.rankdata(values)`` without importing scipy.stats
    (about 1 s of every training and evaluation stage's start-up)."""
    values = np.asarray(values).ravel()
    if values.dtype.kind == "f" and np.isnan(values).any():
        return np.full(values.shape, np.nan)  # scipy's default nan_policy="propagate"
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = first.cumsum()[np.argsort(order, kind="mergesort")]
    bounds = np.r_[np.nonzero(first)[0], len(first)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for binary ``y`` (1 = positive), Mann-Whitney form with tied ranks
    averaged (equal to ``sklearn.metrics.roc_auc_score``). NaN when one class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_ap(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (area under the step PR curve, scikit-learn's definition); NaN when
    there is no positive or no negative item."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return NAN
    precision, recall, _ = pr_curve(y, np.asarray(score))
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def _threshold_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fps, tps, thresholds)`` at each distinct score, highest first (float64 counts): the
    arithmetic of scikit-learn's ``confusion_matrix_at_thresholds``, so the curves below give its
    bits without importing it (1.2 s of every evaluation stage's start-up)."""
    order = np.argsort(score, kind="stable")[::-1]
    s, yy = score[order], y[order].astype(np.float64)
    # np.concatenate, not np.r_: the same array at a fraction of the cost (bootstrap inner loop)
    idx = np.concatenate((np.flatnonzero(np.diff(s)), [yy.size - 1]))
    tps = np.cumsum(yy, dtype=np.float64)[idx]
    fps = 1 + idx.astype(np.float64) - tps
    return fps, tps, s[idx]


def pr_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` as ``sklearn.metrics.precision_recall_curve(y, score)``
    returns them (recall decreasing, ending at (recall 0, precision 1)); both classes present."""
    fps, tps, thr = _threshold_counts(np.asarray(y).astype(bool), np.asarray(score))
    precision = tps / (tps + fps)  # tps + fps = items at or above the threshold >= 1
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` as ``sklearn.metrics.roc_curve(y, score)`` (collinear points
    dropped, a first threshold of +inf); both classes present."""
    fps, tps, thr = _threshold_counts(np.asarray(y).astype(bool), np.asarray(score))
    if fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thr.astype(np.float64)]


def val_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Decision threshold for a binary fake ``score`` chosen on validation data: predict fake when
    ``score > t``, with ``t`` the midpoint between adjacent distinct scores that maximises balanced
    accuracy (ties: the lowest such ``t``). 0.5 (the softmax argmax) when one class is absent.

    Chosen on val, never on the test data it is applied to: UniversalFakeDetect's released code
    picks the best threshold on each test set (an oracle), which overstates accuracy.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        return 0.5
    u = np.unique(score)
    cand = np.concatenate([[np.nextafter(u[0], -np.inf)], (u[:-1] + u[1:]) / 2.0, [u[-1]]])
    pos, neg = np.sort(score[y]), np.sort(score[~y])
    tpr = 1.0 - np.searchsorted(pos, cand, side="right") / pos.size  # fakes above t
    tnr = np.searchsorted(neg, cand, side="right") / neg.size  # reals at or below t
    return float(cand[int(np.argmax(tpr + tnr))])  # argmax: the first (lowest) maximiser


def eer(y: np.ndarray, score: np.ndarray) -> float:
    """Equal error rate: the rate where false-positive rate = false-negative rate on the ROC curve,
    linearly interpolated between the two ROC points that bracket the crossing. NaN when one class
    is absent. Perfect separation gives 0, a constant score 0.5."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return NAN
    return eer_from_roc(*roc_points(y, np.asarray(score, dtype=np.float64)))


def eer_from_roc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """EER of ROC points from :func:`roc_points` (see :func:`eer`)."""
    fnr = 1.0 - tpr
    diff = fnr - fpr  # starts at 1 (threshold +inf), ends at -1; decreasing
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(fpr[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1); the same
    points as ``sklearn.metrics.roc_curve(drop_intermediate=False)`` without its input checks
    (the bootstrap calls this thousands of times)."""
    fps, tps, _ = _threshold_counts(y, score)
    return np.concatenate(([0.0], fps / fps[-1])), np.concatenate(([0.0], tps / tps[-1]))


def real_vs_fake(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary view: ``(y, score)`` with ``y = label != 0`` and ``score = 1 - p(real)``."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    return is_fake(labels).astype(np.int64), 1.0 - probs[:, 0]


# --------------------------------------------------------------------------------------------
# Full metric set


def classification_metrics(labels: np.ndarray, probs: np.ndarray, notes: list[str] | None = None) -> dict:
    """All headline metrics of one scored set.

    Args:
        labels: ``(N,)`` int true classes; probs: ``(N, K)`` probabilities.
        notes: list that receives one sentence per undefined (NaN) metric.

    Returns a JSON-ready dict: ``n``, ``acc``, ``macro_f1``, ``f1`` / ``auc`` / ``ap`` (per class
    name; AUC and AP one-vs-rest), ``auc_real_vs_fake``, ``ap_real_vs_fake``, ``eer``,
    ``confusion`` (K x K list, rows true), ``support`` (per class count).
    """
    labels, probs = _check_scores(labels, probs)
    notes = notes if notes is not None else []
    n, k = probs.shape
    names = class_names(k)
    pred = probs.argmax(1)
    cm = confusion(labels, pred, k)
    f1 = f1_from_confusion(cm)
    out: dict = {
        "n": int(n),
        "acc": float(np.trace(cm) / n) if n else NAN,
        "macro_f1": float(f1.mean()),
        "weighted_f1": weighted_f1(cm),
        "f1": {names[c]: float(f1[c]) for c in range(k)},
        "support": {names[c]: int(cm[c].sum()) for c in range(k)},
        "confusion": cm.tolist(),
        "auc": {},
        "ap": {},
    }
    for c in range(k):
        y = labels == c
        if not y.any() or y.all():
            why = "absent" if not y.any() else "the only class present"
            notes.append(f"one-vs-rest AUC/AP of class '{names[c]}' undefined: {why}")
            if not y.any():
                notes.append(f"F1 of class '{names[c]}' is 0 by convention: class absent")
        out["auc"][names[c]] = binary_auc(y, probs[:, c])
        out["ap"][names[c]] = binary_ap(y, probs[:, c])
    y_bin, score = real_vs_fake(labels, probs)
    if y_bin.all() or not y_bin.any():
        notes.append("real-vs-fake AUC/AP/EER undefined: only " + ("fake" if y_bin.any() else "real") + " items")
    out["auc_real_vs_fake"] = binary_auc(y_bin, score)
    out["ap_real_vs_fake"] = binary_ap(y_bin, score)
    out["eer"] = eer(y_bin, score)
    return out


def mask_scores(pred: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> dict:
    """Segmentation quality of predicted manipulation masks.

    Args:
        pred: ``(M, H, W)`` float mask probabilities; target: ``(M, H, W)`` bool/0-1 true masks
            (same size: resize the prediction first).
    Returns ``{"n", "dice", "iou", "pbca"}``: per-image Dice and IoU of ``pred >= threshold``,
    averaged over images; an image where both masks are empty counts 1 (nothing to find, nothing
    found). ``pbca``: pixel-wise binary classification accuracy (Dang et al., CVPR 2020),
    the fraction of pixels where ``pred >= threshold`` equals the target, averaged over images.
    ``n == 0`` gives NaN scores.
    """
    pred = np.asarray(pred) >= threshold
    target = np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, target {target.shape}")
    if len(pred) == 0:
        return {"n": 0, "dice": NAN, "iou": NAN, "pbca": NAN}
    inter = (pred & target).sum((1, 2)).astype(np.float64)
    sizes = pred.sum((1, 2)) + target.sum((1, 2)).astype(np.float64)
    union = sizes - inter
    empty = sizes == 0
    dice = np.where(empty, 1.0, 2 * inter / np.where(empty, 1, sizes))
    iou = np.where(empty, 1.0, inter / np.where(empty, 1, union))
    pbca = (pred == target).mean((1, 2))
    return {"n": int(len(pred)), "dice": float(dice.mean()), "iou": float(iou.mean()), "pbca": float(pbca.mean())}


# --------------------------------------------------------------------------------------------
# Grouping: videos and sources


def video_key(method: str, video_id: str) -> str:
    """Key of one video: ``"<method>:<video_id>"``. The method is part of the key
    because FaceForensics++ reuses target_source names across methods (``000_003`` exists in
    Face2Face and in FaceSwap: two different videos)."""
    return f"{method}:{video_id}"


def item_groups(frame: pd.DataFrame) -> np.ndarray:
    """Bootstrap cluster key per row: the identity group (column ``group``: an original video,
    the fakes made from it and every other item sharing an identity resample together) when the
    frame has one; else the video key for video frames and ``"item/<id>"`` otherwise.
    ``frame`` needs columns ``id, method, video_id`` (and optionally ``group``)."""
    if "group" in frame.columns:
        return frame["group"].astype(str).to_numpy().astype(object)
    vid = frame["video_id"].astype(str).to_numpy()
    keys = [
        video_key(m, v) if v else f"item/{i}"
        for i, m, v in zip(frame["id"].astype(str), frame["method"].astype(str), vid)
    ]
    return np.asarray(keys, dtype=object)


def group_unit(frame: pd.DataFrame) -> str:
    """Name of the resampling unit :func:`item_groups` uses for ``frame``."""
    return "identity group" if "group" in frame.columns else "video (still images singly)"


def video_level(frame: pd.DataFrame, probs: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Video-level scores: the mean frame probability of each video.

    Args:
        frame: ``(N,)`` rows with ``method, video_id, label, source``; rows with ``video_id == ""``
            (still images) are left out.
        probs: ``(N, K)`` frame probabilities aligned with ``frame``.

    Returns ``(videos, video_probs)``: one row per ``(method, video_id)`` sorted by key, with
    columns ``key, source, method, video_id, label, n_frames``, and ``(V, K)`` mean probabilities.
    A video whose frames disagree on the label is an error (the manifest is corrupt).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if len(frame) != len(probs):
        raise ValueError(f"{len(frame)} rows but {len(probs)} probability rows")
    is_video = frame["video_id"].astype(str).to_numpy() != ""
    sub = frame.loc[is_video, ["source", "method", "video_id", "label"]].copy()
    sub["key"] = [video_key(m, v) for m, v in zip(sub["method"].astype(str), sub["video_id"].astype(str))]
    p = probs[is_video]
    k = probs.shape[1]
    if sub.empty:
        empty = pd.DataFrame(columns=["key", "source", "method", "video_id", "label", "n_frames"])
        return empty, np.zeros((0, k))
    bad = sub.groupby("key")["label"].nunique()
    bad = bad[bad > 1]
    if len(bad):
        raise ValueError(f"videos with frames of different labels: {sorted(bad.index)[:5]}")
    keys, inverse = np.unique(sub["key"].to_numpy().astype(str), return_inverse=True)
    sums = np.zeros((len(keys), k))
    np.add.at(sums, inverse, p)
    counts = np.bincount(inverse, minlength=len(keys))
    first = sub.groupby("key", sort=True).first().loc[keys]
    videos = pd.DataFrame(
        {
            "key": keys,
            "source": first["source"].to_numpy(),
            "method": first["method"].to_numpy(),
            "video_id": first["video_id"].to_numpy(),
            "label": first["label"].to_numpy().astype(np.int64),
            "n_frames": counts.astype(np.int64),
        }
    )
    return videos, sums / counts[:, None]


def per_group_metrics(frame: pd.DataFrame, labels: np.ndarray, probs: np.ndarray, column: str) -> dict[str, dict]:
    """Metrics per value of ``frame[column]`` (``source`` or ``method``), sorted by value.

    Each group reports ``n``, ``acc`` (share classified as its own class), per-class ``support``,
    and ``auc_vs_real`` / ``eer_vs_real``: real-vs-fake AUC/EER of this group's forged items
    against *all* real items of the set (one generator or manipulation method at a time, the
    usual per-method detection score). For a real group these are NaN with a note.
    """
    labels, probs = _check_scores(labels, probs)
    values = frame[column].astype(str).to_numpy()
    real = labels == 0
    out: dict[str, dict] = {}
    for value in sorted(set(values)):
        sel = values == value
        notes: list[str] = []
        y, p = labels[sel], probs[sel]
        entry = {
            "n": int(sel.sum()),
            "acc": float(np.mean(p.argmax(1) == y)),
            "support": {name: int((y == c).sum()) for c, name in enumerate(class_names(probs.shape[1]))},
        }
        fakes = sel & ~real
        if not fakes.any():
            notes.append(f"{column} '{value}' has no forged item: auc_vs_real/eer_vs_real undefined")
            entry["auc_vs_real"] = entry["eer_vs_real"] = NAN
        else:
            both = fakes | real
            yb, sb = real_vs_fake(labels[both], probs[both])
            if not real.any():
                notes.append("no real item in the set: auc_vs_real/eer_vs_real undefined")
            entry["auc_vs_real"] = binary_auc(yb, sb)
            entry["eer_vs_real"] = eer(yb, sb)
        entry["notes"] = notes
        out[value] = entry
    return out


def curve_points(y: np.ndarray, score: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC ``(fpr, tpr, threshold)`` and PR ``(recall, precision, threshold)`` tables for plots.
    Empty tables when one class is absent. The ROC's first threshold (+inf) is written as the
    largest finite score + 1 so the CSV holds only finite numbers."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return (
            pd.DataFrame(columns=["fpr", "tpr", "threshold"]),
            pd.DataFrame(columns=["recall", "precision", "threshold"]),
        )
    fpr, tpr, thr = roc_curve(y, score)
    thr = np.where(np.isfinite(thr), thr, np.max(score) + 1.0)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})
    prec, rec, pthr = pr_curve(y, score)
    # precision_recall_curve has one more (precision, recall) point than thresholds: the
    # (recall 0, precision 1) end point; give it the top threshold.
    pthr = np.append(pthr, np.max(score) + 1.0)
    pr = pd.DataFrame({"recall": rec, "precision": prec, "threshold": pthr})
    return roc, pr


# --------------------------------------------------------------------------------------------


def _check_range(values: np.ndarray, k: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= k):
        raise ValueError(f"{what} outside [0, {k}): min {values.min()}, max {values.max()}")


def _check_scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or labels.ndim != 1 or len(labels) != len(probs):
        raise ValueError(f"expected labels (N,) and probs (N, K); got {labels.shape} and {probs.shape}")
    if len(labels) == 0:
        raise ValueError("no items to score")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or inf")
    _check_range(labels, probs.shape[1], "labels")
    return labels, probs


def nan_to_none(obj):
    """JSON has no NaN: undefined metrics are written as ``null``. Recurses into dicts/lists."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and math.isnan(obj):
        return None
    return obj
