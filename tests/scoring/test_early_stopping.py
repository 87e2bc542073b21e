"""Val-based early stopping, the one stopping rule of the unseen-generator detectors: trained runs
stop after ``patience`` epochs without a better val score, the Frank et al. fit after ``patience``
L-BFGS iterations, and both keep their best val iterate."""

from __future__ import annotations

import numpy as np
import pytest

from dfpipe.core.config import build
from dfpipe.scoring import frank
from dfpipe.training.config import stopping_label
from dfpipe.training.train import stop_early


def test_stop_early_counts_epochs_since_the_best():
    assert not stop_early(5, 4, None)  # no patience: never
    assert not stop_early(1, -1, 1)  # no best epoch yet
    assert not stop_early(3, 2, 2) and stop_early(4, 2, 2)
    assert stop_early(2, 1, 1) and not stop_early(2, 2, 1)
    assert stopping_label(None) == "fixed epochs" and stopping_label(2) == "val early stop, patience 2"


def _data(seed: int, n: int, flip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, 30)).astype(np.float32)
    x[:, :3] += (2 * y[:, None] - 1) * 0.6
    noisy = np.where(rng.random(n) < flip, 1 - y, y)  # val/test label noise: val stops improving early
    return np.array([f"i{seed}_{k}" for k in range(n)]), noisy.astype(np.int64), x


@pytest.fixture
def splits(monkeypatch):
    data = {"train": _data(0, 300, 0.0), "val": _data(1, 60, 0.2), "test": _data(2, 60, 0.0)}
    monkeypatch.setattr(frank, "load_split", lambda spectra_dir, variants_dir, cfg, split: data[split])
    return data


def _fit(patience):
    cfg = build(frank.FrankConfig, {"variant": "v1", "kind": "dct", "c_grid": [0.01, 1.0], "class_weight": "none",
                                    "max_iter": 200, "patience": patience}, where="frank.x")
    return frank.fit_and_score(cfg, None, None, num_classes=2)


def test_frank_stops_after_patience_iterations_and_keeps_the_best_iterate(splits):
    full, early = _fit(None), _fit(1)
    for c, stop in early["selection"]["stopping"].items():
        # stopped one iteration after its best val iterate (or converged first)
        assert stop["iterations"] - stop["best_iteration"] <= 1, c
        assert stop["iterations"] < full["selection"]["stopping"][c]["iterations"], c
    assert early["budget"]["passes"] < full["budget"]["passes"]
    assert early["budget"]["images_seen"] == early["budget"]["passes"] * 300
    # the reported val score is the best iterate's, never below the last iterate's of a fixed budget
    best_c = str(early["selection"]["C"])
    assert early["selection"]["val_macro_f1"][best_c] >= max(full["selection"]["val_macro_f1"].values()) - 0.05


def test_lbfgs_stop_callback_ends_the_fit():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (100, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    problem = frank._Problem(x, y, np.array([0, 1]), np.ones(100))
    problem.l2 = 1e-3
    seen = []
    _, steps = frank._lbfgs(problem, np.zeros(problem.features * problem.free + problem.free), 100,
                            stop=lambda th, k: seen.append(k) or k >= 3)
    assert steps == 3 and seen == [1, 2, 3]
