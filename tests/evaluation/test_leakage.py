"""Leak measure (a): a model that memorises training videos scores higher on test frames of
those videos; the measure shows the planted leak and no gap in a leak-free control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier

from dfpipe.scoring import metrics as M
from dfpipe.evaluation.leakage import leak_gap, read_flags


def _videos(n_videos=80, frames=6, dim=16, seed=0):
    """Frames of one video are near-copies of its centre; labels are random per video, so no rule
    generalises across videos: only memorising a video helps on its other frames."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_videos, dim))
    labels = rng.integers(0, 3, n_videos)
    rows = []
    for v in range(n_videos):
        for f in range(frames):
            rows.append((f"ffpp/m/{v:03d}#f{f}", "m", f"{v:03d}", int(labels[v]), f,
                         centres[v] + rng.normal(0, 0.05, dim)))
    return pd.DataFrame(rows, columns=["id", "method", "video_id", "label", "frame", "x"])


def _score(train: pd.DataFrame, ev: pd.DataFrame, seeds=(0, 1)) -> np.ndarray:
    """``(S, N, 3)`` probabilities of 1-NN models (one per seed: a random 12 of 16 features)."""
    out = []
    for s in seeds:
        dims = np.random.default_rng(s).choice(16, 12, replace=False)
        knn = KNeighborsClassifier(1).fit(np.stack(train["x"])[:, dims], train["label"])
        p = np.full((len(ev), 3), 0.05)
        p[np.arange(len(ev)), knn.predict(np.stack(ev["x"])[:, dims])] = 0.9
        out.append(p)
    return np.stack(out)


def _measure(planted: bool):
    df = _videos()
    vid = df["video_id"].astype(int)
    train = df[vid < 40]
    ev = df[vid >= 40]
    flagged = {f"{v:03d}" for v in range(40, 60)}   # videos the audit reports as in train
    if planted:  # the leak: frames 0-2 of the flagged test videos copied into train
        copied = ev[ev["video_id"].isin(flagged) & (ev["frame"] < 3)]
        train = pd.concat([train, copied])
        ev = ev.drop(copied.index)
    keys = np.array([M.video_key(m, v) for m, v in zip(ev["method"], ev["video_id"])])
    flags = pd.DataFrame({"id": ev["id"], "video_key": keys, "group_in_train": ev["video_id"].isin(flagged),
                          "video_in_train": ev["video_id"].isin(flagged)})
    return leak_gap(ev["id"].to_numpy(), ev["label"].to_numpy(), _score(train, ev), flags, 400, 0, 0.95)


def test_planted_leak_shows_a_gap():
    out = _measure(planted=True)
    assert out["videos_in"] == 20 and out["videos_out"] == 20
    gap = out["gap"]["acc"]
    assert gap["a"] == 1.0                      # memorised videos: every frame right
    assert gap["diff"] > 0.4 and gap["low"] > 0.2


def test_leak_free_control_shows_none():
    out = _measure(planted=False)
    gap = out["gap"]["acc"]
    assert gap["low"] < 0 < gap["high"]          # no gap the interval can tell from zero
    assert abs(gap["diff"]) < 0.25


def test_no_frame_of_a_training_video_is_a_note_and_flags_are_checked(tmp_path):
    ev = _videos(n_videos=4, frames=2)
    flags = pd.DataFrame({"id": ev["id"], "video_key": "m:x", "group_in_train": False, "video_in_train": False})
    out = leak_gap(ev["id"].to_numpy(), ev["label"].to_numpy(), np.full((1, len(ev), 3), 1 / 3), flags, 10, 0, 0.95)
    assert "gap" not in out and "no test frame of a training video" in out["note"]
    with pytest.raises(ValueError, match="no audit flags"):
        leak_gap(ev["id"].to_numpy(), ev["label"].to_numpy(), np.full((1, len(ev), 3), 1 / 3), flags.iloc[1:], 10, 0, 0.95)
    flags.drop(columns="video_in_train").to_parquet(tmp_path / "f.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        read_flags(tmp_path / "f.parquet")
    with pytest.raises(FileNotFoundError, match="audit@"):
        read_flags(tmp_path / "none.parquet")
