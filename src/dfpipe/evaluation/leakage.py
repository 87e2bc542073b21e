"""Leak measure (a): one model's scores on test frames whose video is in its train split vs
frames whose video is not, from the audit's per-test-item flags (written by ``audit@<variant>`` to
``metrics/audit/<variant>/test_items.parquet``: ``id, video_key, group_in_train, video_in_train``).

If a model memorised the frames of training videos, test frames of those same videos score higher
than frames of unseen videos; a leak-free split has no frame in the first group. The comparison is
restricted to video frames (still images have no video to leak) and reports the gap with a
bootstrap interval that resamples videos within each part (:func:`dfpipe.scoring.stats.unpaired_gap`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.scoring import stats

FLAG_COLUMNS = ("id", "video_key", "group_in_train", "video_in_train")

#: Per-item scores compared across the two parts (classes may be unbalanced between the parts,
#: so accuracy and the mean probability of the true class are used, not macro-F1).
LEAK_METRICS = {
    "acc": lambda y, p: float(np.mean(p.argmax(1) == y)),
    "p_true": lambda y, p: float(np.mean(p[np.arange(len(y)), y])),
}


def read_flags(path: Path) -> pd.DataFrame:
    """The audit's test-item flags; ``FileNotFoundError`` naming the file and its stage."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: test-item flags not found (written by `audit@<variant>`)")
    flags = pd.read_parquet(path)
    missing = [c for c in FLAG_COLUMNS if c not in flags.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (expected {list(FLAG_COLUMNS)})")
    return flags


def leak_gap(
    ids: np.ndarray, labels: np.ndarray, probs: np.ndarray, flags: pd.DataFrame, n_boot: int, seed: int, level: float
) -> dict:
    """Measure (a) for one model: ``probs`` ``(S, N, K)`` aligned with ``ids``/``labels``.

    Returns ``{"frames_in", "videos_in", "frames_out", "videos_out", "gap": {metric: {a, b,
    diff, low, high, undefined}}}`` with a = frames whose video is in the train split, or
    ``{"note": ...}`` when one part is empty (e.g. a leak-free variant).
    """
    ids = np.asarray(ids).astype(str)
    f = flags.set_index(flags["id"].astype(str))
    unknown = sorted(set(ids) - set(f.index))
    if unknown:
        raise ValueError(f"{len(unknown)} scored items have no audit flags (first {unknown[:3]})")
    f = f.loc[ids]
    video = f["video_key"].astype(str).to_numpy() != ""
    in_train = f["video_in_train"].to_numpy(bool) & video
    keys = f["video_key"].astype(str).to_numpy()
    out: dict = {
        "frames_in": int(in_train.sum()),
        "videos_in": len(set(keys[in_train])),
        "frames_out": int((video & ~in_train).sum()),
        "videos_out": len(set(keys[video & ~in_train])),
    }
    if not out["frames_in"] or not out["frames_out"]:
        out["note"] = "undefined: no test frame " + (
            "of a training video" if not out["frames_in"] else "of an unseen video"
        )
        return out
    sel = np.flatnonzero(video)
    out["gap"] = stats.unpaired_gap(
        np.asarray(labels)[sel], np.asarray(probs)[:, sel], keys[sel], in_train[sel], n_boot, seed, level, LEAK_METRICS
    )
    return out
