"""FF++ protocol metrics: weighted statistics equal the plain ones, the "video frame -> edited"
shortcut scores chance inside FF++, intervals resample split groups and refuse too few."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dfpipe.scoring import metrics as M
from dfpipe.evaluation import protocol as P
from dfpipe.scoring import stats


def test_weighted_metrics_with_unit_weights_equal_the_plain_ones():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.4
    score = np.round(rng.random(200), 1)  # many ties
    ones = np.ones((1, 200))
    assert P.weighted_auc(y, score, ones)[0] == pytest.approx(M.binary_auc(y, score), abs=1e-12)
    assert P.weighted_ap(y, score, ones)[0] == pytest.approx(M.binary_ap(y, score), abs=1e-12)
    assert P.weighted_acc(y, score, 0.5, ones)[0] == pytest.approx(np.mean((score > 0.5) == y))
    # integer weights = repeating items
    w = rng.integers(0, 3, 200).astype(float)
    rep = np.repeat(np.arange(200), w.astype(int))
    assert P.weighted_auc(y, score, w[None])[0] == pytest.approx(M.binary_auc(y[rep], score[rep]), abs=1e-12)
    assert P.weighted_ap(y, score, w[None])[0] == pytest.approx(M.binary_ap(y[rep], score[rep]), abs=1e-12)
    assert np.isnan(P.weighted_auc(np.ones(5, bool), np.arange(5.0), np.ones((1, 5))))[0]


def _items(n_videos: int, frames: int = 3, n_images: int = 30) -> pd.DataFrame:
    rows = [(f"img{i}", "ffhq" if i % 2 else "stylegan", i % 2 == 0, "") for i in range(n_images)]
    rows = [(i, m, int(fake), v) for i, m, fake, v in rows]
    for v in range(n_videos):
        for method, label, vid in (("youtube", 0, f"{v:03d}"), ("Face2Face", 2, f"{v:03d}_{v + 1:03d}")):
            rows += [(f"{method}/{vid}#f{f}", method, label, vid) for f in range(frames)]
    df = pd.DataFrame(rows, columns=["id", "method", "label", "video_id"])
    return df.assign(source=np.where(df["video_id"] != "", "ffpp", df["method"]))


def test_video_frame_shortcut_scores_chance_inside_ffpp():
    """A model that calls every video frame "edited" and every still image right has a high
    3-class score, but its FF++ AUC is 0.5: the protocol metric exposes what the headline hides."""
    items = _items(12)
    labels = items["label"].to_numpy()
    is_video = items["video_id"].to_numpy() != ""
    probs = np.zeros((2, len(items), 3))
    probs[:, ~is_video, labels[~is_video]] = 1.0
    probs[:, is_video, 2] = 1.0
    macro = M.classification_metrics(labels, probs[0], [])["macro_f1"]
    out = P.protocol_metrics(items, probs, items["video_id"].str[:3].to_numpy(), [0.5, 0.5], 200, 0, 0.95)
    assert macro > 0.7
    assert out["frame"]["all"]["auc"]["mean"] == 0.5 and out["video"]["all"]["auc"]["mean"] == 0.5
    assert out["frame"]["Face2Face"]["acc"]["mean"] == 0.5
    assert out["frame"]["all"]["n_items"] == 12 * 2 * 3 and out["video"]["all"]["n_items"] == 24


def test_interval_resamples_groups_and_refuses_too_few():
    """On a planted clustered set (every group's frames share one score), the split-group interval
    is wider than an interval that resamples items singly; below MIN_UNITS groups there is none."""
    rng = np.random.default_rng(1)
    n_groups, per = 12, 10
    groups = np.repeat([f"g{g}" for g in range(n_groups)], per)
    y = np.tile(np.arange(per) % 2 == 0, n_groups)
    # a group effect: each group shifts all its scores together
    score = (y * 0.3 + np.repeat(rng.normal(0, 0.5, n_groups), per) + rng.normal(0, 0.05, y.size))[None]
    grouped = P._summarise(y, score, [0.0], groups, 400, 0, 0.95)
    single = P._summarise(y, score, [0.0], np.arange(y.size).astype(str), 400, 0, 0.95)
    width = lambda r: r["auc"]["high"] - r["auc"]["low"]
    assert grouped["n_units"] == n_groups and single["n_units"] == y.size
    assert width(grouped) > 1.5 * width(single)
    few = P._summarise(y[:90], score[:, :90], [0.0], groups[:90], 400, 0, 0.95)
    assert few["n_units"] == 9 and few["auc"]["interval"] == "n too small" and np.isnan(few["auc"]["low"])
    # the weights are a cluster bootstrap: each replicate draws n_groups groups, whole
    w, n = P.group_weights(groups, 50, 0)
    assert n == n_groups and np.allclose(w.sum(1), n_groups * per)
    assert all(len(set(row[groups == g])) == 1 for row in w for g in np.unique(groups))
    assert stats.group_members(groups)[0].size == per


def test_no_video_items_or_one_class_gives_none():
    items = _items(0)
    probs = np.full((1, len(items), 3), 1 / 3)
    assert P.protocol_metrics(items, probs, items["id"].to_numpy(), [None], 10, 0, 0.95) is None
    only_fakes = _items(3)
    only_fakes = only_fakes[only_fakes["label"] != 0].reset_index(drop=True)
    probs = np.full((1, len(only_fakes), 3), 1 / 3)
    assert P.protocol_metrics(only_fakes, probs, only_fakes["id"].to_numpy(), [None], 10, 0, 0.95) is None
    assert P.video_threshold(only_fakes, probs[0]) is None


def test_headline_intervals_resample_identity_groups():
    """The headline interval resamples identity groups (union-find over group_keys), not images:
    on a planted set where each FFHQ identity's images share one score, it is wider than the
    interval that treats the images as independent, and details say which unit, how many."""
    from dfpipe.evaluation import evaluate as E

    rng = np.random.default_rng(3)
    n_ids, per = 12, 8
    rows = []
    for i in range(n_ids):
        for j in range(per):
            rows.append((f"ffhq/id{i:02d}_{j}.png", "ffhq", 0, "ffhq", "", [f"ffhq:id{i:02d}"]))
            rows.append((f"gan/id{i:02d}_{j}.png", "gan", 1, "stylegan", "", [f"gan:{i:02d}_{j}", f"ffhq:id{i:02d}"]))
    man = pd.DataFrame(rows, columns=["id", "source", "label", "method", "video_id", "group_keys"])
    shift = np.repeat(rng.normal(0, 1.5, n_ids), 2 * per)          # one shared effect per identity
    logit_fake = np.where(man["label"] == 1, 0.5, -0.5) + shift
    p_fake = 1 / (1 + np.exp(-logit_fake))
    probs = np.stack([1 - p_fake, p_fake, np.zeros_like(p_fake)], 1)
    frame = E.align_predictions(man, man["id"].to_numpy(), man["label"].to_numpy(), probs, "test")
    assert frame["group"].nunique() == n_ids
    _, grouped = E.evaluate_seeds({0: frame}, 400, 0, 0.95)
    _, single = E.evaluate_seeds({0: frame.drop(columns="group")}, 400, 0, 0.95)
    width = lambda d: d["ci"]["auc_real_fake"][1] - d["ci"]["auc_real_fake"][0]
    assert grouped["resampling"] == {"unit": "identity group", "n_units": n_ids}
    assert single["resampling"]["n_units"] == len(man)
    assert width(grouped) > 1.5 * width(single)
