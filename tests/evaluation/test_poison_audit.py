"""Spectral signatures and activation clustering on planted features: the poison is found, clean data is not."""

from __future__ import annotations

import math

import numpy as np

from dfpipe.evaluation.poison_audit import (
    activation_clustering_flags,
    precision_recall,
    spectral_signature_flags,
    two_means,
)

RATE = 0.1


def planted(shift: float, n_clean: int = 300, n_poison: int = 30, dim: int = 32, seed: int = 0):
    """Two classes of isotropic Gaussian features; class 0 holds ``n_poison`` items moved ``shift``
    along one fixed direction (what a trigger does to penultimate features in Tran et al.'s analysis)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    x0 = rng.normal(size=(n_clean + n_poison, dim))
    x0[n_clean:] += shift * direction
    x1 = rng.normal(size=(n_clean, dim)) + 3.0
    feats = np.vstack([x0, x1])
    labels = np.r_[np.zeros(n_clean + n_poison, int), np.ones(n_clean, int)]
    truth = np.r_[np.zeros(n_clean, bool), np.ones(n_poison, bool), np.zeros(n_clean, bool)]
    return feats, labels, truth


def test_separable_poison_is_flagged_with_high_recall():
    feats, labels, truth = planted(shift=8.0)
    ss, _ = spectral_signature_flags(feats, labels, RATE)
    ss_pr = precision_recall(ss[labels == 0], truth[labels == 0])
    assert ss_pr["recall"] >= 0.95
    assert ss_pr["flagged"] == math.ceil(1.5 * RATE * 330)  # Tran et al.: 1.5 x eps of the class
    ac, shares = activation_clustering_flags(feats, labels, dims=10, max_share=0.35)
    ac_pr = precision_recall(ac[labels == 0], truth[labels == 0])
    assert ac_pr["recall"] >= 0.95 and ac_pr["precision"] >= 0.9
    assert abs(shares[0] - 30 / 330) < 0.02 and not ac[labels == 1].any()


def test_clean_features_flag_at_most_the_expected_false_positive_share():
    feats, labels, truth = planted(shift=0.0, n_poison=0)
    ss, _ = spectral_signature_flags(feats, labels, RATE)
    for c in (0, 1):  # spectral signatures always remove 1.5 x eps: that is its false-positive share
        assert ss[labels == c].mean() <= 1.5 * RATE + 1.0 / (labels == c).sum()
    ac, shares = activation_clustering_flags(feats, labels, dims=10, max_share=0.35)
    assert not ac.any() and min(shares.values()) > 0.35  # one Gaussian splits near the middle
    assert precision_recall(ac, truth)["precision"] is None and precision_recall(ss, truth)["recall"] is None


def test_control_inseparable_poison_is_not_found():
    feats, labels, truth = planted(shift=0.0)  # "poison" that moved nothing: no defence can see it
    ss, _ = spectral_signature_flags(feats, labels, RATE)
    assert precision_recall(ss[labels == 0], truth[labels == 0])["recall"] < 0.5
    ac, _ = activation_clustering_flags(feats, labels, dims=10, max_share=0.35)
    assert precision_recall(ac, truth)["recall"] in (None, 0.0) or precision_recall(ac, truth)["recall"] < 0.5


def test_audits_are_deterministic_and_order_free():
    feats, labels, truth = planted(shift=8.0)
    perm = np.random.default_rng(3).permutation(len(labels))
    ss, scores = spectral_signature_flags(feats, labels, RATE)
    ss_p, scores_p = spectral_signature_flags(feats[perm], labels[perm], RATE)
    assert np.array_equal(ss[perm], ss_p) and np.allclose(scores[perm], scores_p)
    ac, _ = activation_clustering_flags(feats, labels, 10, 0.35)
    ac_p, _ = activation_clustering_flags(feats[perm], labels[perm], 10, 0.35)
    assert np.array_equal(ac[perm], ac_p)
    assert two_means(np.array([[0.0], [0.1], [5.0], [5.2]])).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])


def test_top_directions_equal_the_svd_for_tall_and_wide_features():
    from dfpipe.evaluation.poison_audit import _top_directions

    rng = np.random.default_rng(0)
    for shape in [(300, 32), (20, 64)]:  # the Gram-matrix shortcut takes each branch once
        x = rng.normal(size=shape)
        x -= x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        want = vt[:3].T * np.sign(vt[:3].T[np.abs(vt[:3].T).argmax(0), np.arange(3)])
        assert np.allclose(_top_directions(x, 3), want, atol=1e-10)
