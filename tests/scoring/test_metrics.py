"""dfpipe.scoring.metrics against scikit-learn on fixed arrays, plus the cases sklearn does not cover."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from dfpipe.scoring import metrics as M


def _scores(n: int = 300, k: int = 3, seed: int = 0, skill: float = 1.5):
    """Labels (n,) and softmax probabilities (n, k) that are informative but imperfect."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_f1_confusion_match_sklearn():
    y, p = _scores()
    pred = p.argmax(1)
    out = M.classification_metrics(y, p)
    assert out["confusion"] == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert out["macro_f1"] == pytest.approx(M.macro_f1(y, pred, 3), abs=1e-12)
    per_class = f1_score(y, pred, average=None, labels=[0, 1, 2])
    assert [out["f1"][n] for n in ("real", "fake", "edited")] == pytest.approx(per_class, abs=1e-12)
    assert out["acc"] == pytest.approx(np.mean(pred == y))


def test_auc_ap_match_sklearn_with_ties():
    y, p = _scores(seed=1)
    p = np.round(p, 1)  # many ties: the rank formula must average them like sklearn
    p = p / p.sum(1, keepdims=True)
    out = M.classification_metrics(y, p)
    for c, name in enumerate(("real", "fake", "edited")):
        assert out["auc"][name] == pytest.approx(roc_auc_score(y == c, p[:, c]), abs=1e-12)
        assert out["ap"][name] == pytest.approx(average_precision_score(y == c, p[:, c]), abs=1e-12)
    yb, score = y != 0, 1 - p[:, 0]
    assert out["auc_real_vs_fake"] == pytest.approx(roc_auc_score(yb, score), abs=1e-12)
    assert out["ap_real_vs_fake"] == pytest.approx(average_precision_score(yb, score), abs=1e-12)


def test_eer_known_cases():
    # threshold 0.5: one of two negatives above (FPR 0.5), one of two positives below (FNR 0.5)
    assert M.eer([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == pytest.approx(0.5)
    assert M.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert M.eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0
    # 4 negatives, 4 positives; one negative above all positives -> EER 0.25
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.95, 0.5, 0.6, 0.7, 0.8]
    assert M.eer(y, s) == pytest.approx(0.25)


def test_degenerate_sets_give_nan_with_notes():
    y = np.zeros(5, dtype=int)  # only real items
    p = np.tile([0.7, 0.2, 0.1], (5, 1))
    notes: list[str] = []
    out = M.classification_metrics(y, p, notes)
    assert out["acc"] == 1.0
    assert math.isnan(out["auc_real_vs_fake"]) and math.isnan(out["eer"])
    assert math.isnan(out["auc"]["fake"]) and math.isnan(out["ap"]["real"])
    assert any("real-vs-fake" in n for n in notes)
    assert any("'fake'" in n and "absent" in n for n in notes)
    json_ready = M.nan_to_none(out)
    assert json_ready["eer"] is None and json_ready["acc"] == 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels outside"):
        M.classification_metrics(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="NaN"):
        M.classification_metrics(np.array([0, 1]), np.array([[np.nan, 0.5, 0.5], [0.2, 0.4, 0.4]]))
    with pytest.raises(ValueError, match="no items"):
        M.classification_metrics(np.zeros(0, int), np.zeros((0, 3)))


def test_video_level_keeps_methods_apart():
    frame = pd.DataFrame(
        {
            "id": [f"x{i}" for i in range(6)],
            "source": ["ffpp"] * 6,
            "method": ["Face2Face", "Face2Face", "FaceSwap", "FaceSwap", "youtube", "ffhq"],
            "video_id": ["000_003", "000_003", "000_003", "000_003", "000", ""],
            "label": [2, 2, 2, 2, 0, 0],
        }
    )
    probs = np.array(
        [[0.0, 0.0, 1.0], [0.2, 0.0, 0.8], [0.6, 0.0, 0.4], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1, 0, 0]]
    )
    videos, vp = M.video_level(frame, probs)
    assert videos["key"].tolist() == ["Face2Face:000_003", "FaceSwap:000_003", "youtube:000"]
    assert videos["n_frames"].tolist() == [2, 2, 1]
    np.testing.assert_allclose(vp, [[0.1, 0.0, 0.9], [0.8, 0.0, 0.2], [0.5, 0.5, 0.0]])
    groups = M.item_groups(frame)
    assert groups[0] == groups[1] != groups[2] == groups[3]
    assert groups[5] == "item/x5"


def test_video_level_rejects_mixed_labels():
    frame = pd.DataFrame({"id": ["a", "b"], "source": ["s", "s"], "method": ["m", "m"],
                          "video_id": ["001", "001"], "label": [0, 2]})
    with pytest.raises(ValueError, match="different labels"):
        M.video_level(frame, np.full((2, 3), 1 / 3))


def test_per_source_scores_each_generator_against_all_real():
    frame = pd.DataFrame({"source": ["ffhq"] * 4 + ["stylegan"] * 2 + ["wgan"] * 2})
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    score_fake = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.35, 0.05])
    p = np.stack([1 - score_fake, score_fake, np.zeros(8)], 1)
    out = M.per_group_metrics(frame, y, p, "source")
    assert list(out) == ["ffhq", "stylegan", "wgan"]
    assert out["stylegan"]["auc_vs_real"] == 1.0
    assert out["wgan"]["auc_vs_real"] == pytest.approx(roc_auc_score([0] * 4 + [1] * 2, [0.1, 0.2, 0.3, 0.4, 0.35, 0.05]))
    assert math.isnan(out["ffhq"]["auc_vs_real"]) and out["ffhq"]["notes"]
    assert out["ffhq"]["acc"] == 1.0 and out["wgan"]["acc"] == 0.0


def test_curve_points_finite():
    y, p = _scores(seed=3)
    roc, pr = M.curve_points(y != 0, 1 - p[:, 0])
    assert np.isfinite(roc.to_numpy()).all() and np.isfinite(pr.to_numpy()).all()
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1
    empty_roc, _ = M.curve_points(np.ones(3), np.ones(3))
    assert empty_roc.empty


def test_mask_scores_known_values():
    target = np.zeros((2, 4, 4), bool)
    target[0, :2] = True                      # 8 pixels
    pred = np.zeros((2, 4, 4))
    pred[0, :1] = 0.9                         # 4 pixels, all inside: dice 2*4/12, iou 4/8
    out = M.mask_scores(pred, target)         # image 2: both empty -> 1
    assert out["n"] == 2
    assert out["dice"] == pytest.approx((8 / 12 + 1) / 2)
    assert out["iou"] == pytest.approx((0.5 + 1) / 2)
    # PBCA: image 1 right on row 0 (4 true positives) and rows 2-3 (8 true negatives) = 12 / 16,
    # wrong on row 1 (4 missed); image 2 right everywhere = 16 / 16
    assert out["pbca"] == pytest.approx((12 / 16 + 1) / 2)
    # control: above the predicted 0.9 nothing is predicted, image 1 keeps only its 8 negatives
    assert M.mask_scores(pred, target, threshold=0.95)["pbca"] == pytest.approx((8 / 16 + 1) / 2)
    assert np.isnan(M.mask_scores(pred[:0], target[:0])["pbca"])
    with pytest.raises(ValueError, match="shapes differ"):
        M.mask_scores(pred[:, :2], target)


def test_eer_matches_sklearn_roc_on_random_scores():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # ties included
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.argmax(fnr - fpr <= 0))
    lo, hi = sorted((fpr[i - 1], fpr[i]))
    assert lo <= M.eer(y, s) <= hi  # the interpolated crossing lies on sklearn's bracketing segment
    f2, t2 = M.roc_points(y.astype(bool), s.astype(float))
    np.testing.assert_allclose(f2, fpr)
    np.testing.assert_allclose(t2, tpr)


def test_one_f1_path_matches_sklearn_macro_and_weighted():
    from sklearn.metrics import f1_score

    y, p = _scores(n=300, seed=4)
    pred = p.argmax(1)
    pred[:5] = 2  # some confusion
    assert M.macro_f1(y, pred, 3) == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0))
    cm = M.confusion(y, pred, 3)
    assert M.weighted_f1(cm) == pytest.approx(f1_score(y, pred, average="weighted", zero_division=0))
    # absent class counts 0 in macro-F1 (selection uses the same path)
    assert M.macro_f1(np.array([0, 0, 1]), np.array([0, 0, 1]), 3) == pytest.approx(2 / 3)


def test_val_threshold_maximises_balanced_accuracy_on_val():
    """The threshold comes from the scores it is given (val), lies between classes when they
    separate, and is the lowest maximiser of balanced accuracy otherwise."""
    from dfpipe.scoring.metrics import val_threshold

    y = np.array([0, 0, 0, 1, 1])
    score = np.array([0.01, 0.02, 0.03, 0.05, 0.9])  # separable, far below 0.5
    t = val_threshold(y, score)
    assert 0.03 < t < 0.05 and np.all((score > t) == y.astype(bool))
    # brute force over a fine grid: no threshold beats the chosen one's balanced accuracy
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.clip(0.3 * y + rng.normal(0.4, 0.2, 300), 0, 1)

    def bal(t):
        pred = score > t
        return (pred[y == 1].mean() + (~pred[y == 0]).mean()) / 2

    t = val_threshold(y, score)
    assert bal(t) >= max(bal(g) for g in np.linspace(-0.01, 1.01, 2001)) - 1e-12
    assert val_threshold(np.ones(4), np.linspace(0, 1, 4)) == 0.5  # one class: the argmax


def test_rankdata_matches_scipy_bit_for_bit():
    """The numpy rankdata (kept off scipy.stats for start-up time) gives scipy's exact bits: ties,
    integers, a NaN (propagated), one item."""
    from scipy.stats import rankdata as scipy_rankdata

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        for a in (rng.random(n), rng.integers(0, 4, n).astype(float), np.round(rng.random(n), 1),
                  np.r_[rng.random(n), np.nan], rng.integers(0, 3, n)):
            assert M.rankdata(a).tobytes() == scipy_rankdata(a).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_curves_and_ap_are_bit_identical_to_sklearn(dtype):
    """The evaluation's own ROC / PR curves and AP (no scikit-learn import at start-up) give
    sklearn's bits, ties and both score dtypes included; a changed point would fail array_equal."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    rng = np.random.default_rng(7)
    for levels in (3, 40, 10**6):
        for n in (2, 5, 57, 300):
            y = rng.integers(0, 2, n).astype(bool)
            y[:2] = [True, False]
            score = (rng.integers(0, levels, n) / 7).astype(dtype)
            assert M.binary_ap(y, score) == average_precision_score(y, score)
            for ours, theirs in ((M.roc_curve(y, score), roc_curve(y, score)),
                                 (M.pr_curve(y, score), precision_recall_curve(y, score))):
                for a, b in zip(ours, theirs):
                    assert a.dtype == b.dtype and np.array_equal(a, b)


def test_evaluation_start_up_does_not_import_sklearn():
    code = "import sys, dfpipe.evaluation.evaluate, dfpipe.scoring.metrics; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
