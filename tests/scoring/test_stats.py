"""Seed x resample bootstrap: intervals of one model, paired intervals of two, unpaired gaps."""

from __future__ import annotations

import numpy as np
import pytest

from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats as S


def _scores(n=300, k=3, seed=0, skill=1.5, seeds=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = []
    for s in range(seeds):
        logits = np.random.default_rng([seed, s]).normal(size=(n, k))
        logits[np.arange(n), y] += skill
        e = np.exp(logits)
        probs.append(e / e.sum(1, keepdims=True))
    return y, np.stack(probs)


def test_bootstrap_contains_point_and_is_seeded():
    y, p = _scores(n=400, seed=2)
    groups = [f"item/{i}" for i in range(len(y))]
    a = S.bootstrap_ci(y, p, groups, n_boot=200, seed=7)
    assert a == S.bootstrap_ci(y, p, groups, n_boot=200, seed=7)
    assert a != S.bootstrap_ci(y, p, groups, n_boot=200, seed=8)
    for name, fn in S.HEADLINE.items():
        point = np.mean([fn(y, q) for q in p])
        lo, hi = a[name]
        assert lo < point < hi, name
    # row order does not matter: groups are sorted before drawing
    perm = np.random.default_rng(0).permutation(len(y))
    assert S.bootstrap_ci(y[perm], p[:, perm], np.asarray(groups)[perm], 200, 7) == a


def test_cluster_bootstrap_draws_whole_videos():
    # two videos of 50 identical frames each: a video-level resample can only give acc 0, .5 or 1
    y = np.array([0] * 50 + [1] * 50)
    p = np.array([[[0.9, 0.1, 0.0]] * 100])  # video 2 misclassified; one seed
    groups = ["youtube:000"] * 50 + ["Face2Face:000_003"] * 50
    ci = S.bootstrap_ci(y, p, groups, n_boot=100, seed=0, metrics={"acc": S.HEADLINE["acc"]})
    assert set(np.round(ci["acc"], 6)) <= {0.0, 0.5, 1.0}


def test_seed_variation_widens_the_interval():
    # seeds that disagree make the interval wider than that of one seed on the same items
    y, p = _scores(n=300, seed=1, seeds=1)
    _, other = _scores(n=300, seed=1, skill=0.2, seeds=1)
    groups = np.arange(len(y)).astype(str)
    one = S.bootstrap_ci(y, np.concatenate([p, p]), groups, 300, 0, metrics={"acc": S.HEADLINE["acc"]})["acc"]
    two = S.bootstrap_ci(y, np.concatenate([p, other]), groups, 300, 0, metrics={"acc": S.HEADLINE["acc"]})["acc"]
    assert two[1] - two[0] > 1.2 * (one[1] - one[0])


def test_paired_bootstrap_uses_the_same_resamples_for_both_models():
    y, pa = _scores(n=200, seed=3)
    _, pb = _scores(n=200, seed=4, skill=0.5)
    groups = [f"v{i // 4}" for i in range(len(y))]  # videos of 4 frames
    record: list = []
    out = S.paired_bootstrap(y, pa, pb, groups, n_boot=50, seed=0, record=record)
    assert len(record) == 50
    # the recorded draws are exactly the shared group resamples (whole videos)
    for idx, expected in zip(record, S.draw_resamples(groups, 50, 0)):
        np.testing.assert_array_equal(idx, expected)
        assert len(idx) == len(y)
    # identical one-seed models: every resample's difference is exactly 0 (it would not be with
    # independent item resamples), so the interval collapses to [0, 0]
    same = S.paired_bootstrap(y, pa[:1], pa[:1], groups, n_boot=50, seed=0)
    assert all(v["low"] == 0.0 == v["high"] for k, v in same.items() if k != "eer")
    # a clearly better model: the difference and its interval are positive
    assert out["acc"]["diff"] > 0 and out["acc"]["low"] > 0
    assert out["acc"]["diff"] == pytest.approx(out["acc"]["a"] - out["acc"]["b"])


def test_paired_is_tighter_than_unpaired_for_correlated_models():
    # b = a with a little noise: pairing removes the shared item difficulty
    y, pa = _scores(n=300, seed=5, seeds=1)
    rng = np.random.default_rng(9)
    pb = np.clip(pa + rng.normal(0, 0.05, pa.shape), 1e-6, None)
    pb /= pb.sum(2, keepdims=True)
    groups = np.arange(len(y)).astype(str)
    paired = S.paired_bootstrap(y, pa, pb, groups, 300, 0)["acc"]
    a = S.bootstrap_ci(y, pa, groups, 300, 0)["acc"]
    assert paired["high"] - paired["low"] < 0.5 * (a[1] - a[0])


def test_seed_summary():
    assert S.seed_summary([0.5, 0.7]) == {"mean": pytest.approx(0.6), "sd": pytest.approx(np.std([0.5, 0.7], ddof=1))}
    assert np.isnan(S.seed_summary([0.5])["sd"])
    assert np.isnan(S.seed_summary([0.5, float("nan")])["mean"])


def test_one_pass_headline_equals_the_metric_functions():
    rng = np.random.default_rng(0)
    for trial in range(20):
        y = rng.integers(0, 3, 60)
        p = rng.dirichlet(np.ones(3), 60)
        if trial % 2:  # ties and coarse scores
            p = np.round(p, 1) + 1e-9
            p /= p.sum(1, keepdims=True)
        if trial == 3:
            y[:] = 1  # one class only: AUC/EER undefined
        fast = S.headline_values(y, p)
        slow = np.array([fn(y, p) for fn in S.HEADLINE.values()])
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
