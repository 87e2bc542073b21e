"""The Frank et al. (2020) baseline: a linear classifier on the cached, normalised log-DCT spectra.

Frank, Eisenhofer, Schönherr, Fischer, Kolossa, Holz, "Leveraging Frequency Analysis for Deep Fake
Image Recognition", ICML 2020 (arXiv 2003.08685), Sec. 4.2: a linear model on the log-scaled,
standardised DCT coefficients already separates GAN images from real ones. Here: multinomial
logistic regression (scikit-learn, lbfgs; gives the class probabilities the evaluation needs) on
the flattened ``(C, S, S)`` spectra of the spectra stage's cache, normalised with its train-split
statistics (``stats.npz``); trained on ``train``, the inverse regularisation ``C`` chosen from a grid
by ``val`` macro-F1 (ties: the smaller C, i.e. the stronger regularisation), scored on ``eval``.
lbfgs is deterministic, so there is one fit (seed 0 in the predictions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from dfpipe.core.config import Config, PlainName
from dfpipe.core.manifest import VARIANT_SCHEMA, read_table
from dfpipe.evaluation.metrics import macro_f1, real_vs_fake, val_threshold
from dfpipe.features.moments import load_stats, normalize, read_stats_meta
from dfpipe.features.spectra import STATS_FILE, SpectraCache


class FrankConfig(Config):
    """One ``frank.<name>`` entry: the baseline on ``variant``'s cached spectra.

    ``c_grid``: candidate inverse L2 strengths (selected on val); ``class_weight``: ``balanced``
    weighs each class by ``n / (k n_class)`` (the demo's edited class is ~4 % of train), ``none``
    fits the raw frequencies; ``max_iter``: lbfgs iterations.
    """

    variant: PlainName
    kind: Literal["dct", "dft"]
    c_grid: tuple[Annotated[float, Field(gt=0)], ...] = Field(min_length=1)
    class_weight: Literal["balanced", "none"]
    max_iter: int = Field(ge=1)


def load_split(spectra_dir: Path, variants_dir: Path, cfg: FrankConfig, split: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, labels, X)`` of one split: ``X`` float32 ``(N, C*S*S)`` normalised spectra in manifest order."""
    manifest = read_table(variants_dir / cfg.variant / split / "manifest.parquet", VARIANT_SCHEMA)
    cache = SpectraCache(spectra_dir / cfg.variant / split)
    cache.check_aligned(manifest)
    if cache.index["kind"] != cfg.kind:
        raise ValueError(f"{cache.root}: cache holds {cache.index['kind']!r} spectra, frank wants {cfg.kind!r} "
                         "(spectra.kind)")
    stats = spectra_dir / cfg.variant / STATS_FILE
    if read_stats_meta(stats)["kind"] != cfg.kind:
        raise ValueError(f"{stats}: statistics are not for {cfg.kind!r}")
    mean, std = load_stats(stats)
    x = normalize(cache.gather(np.arange(len(cache))), mean, std).reshape(len(cache), -1)
    return manifest["id"].astype(str).to_numpy(), manifest["label"].to_numpy(np.int64), x


def fit_and_score(cfg: FrankConfig, spectra_dir: Path, variants_dir: Path, num_classes: int = 3) -> dict:
    """Fit on train, select ``C`` on val, score eval.

    Returns ``{"ids", "labels", "probs" (N, num_classes) float32 for the eval split,
    "val_threshold" (the real-vs-fake threshold of the selected fit on val), "selection":
    {"C", "val_macro_f1": {C: score}}}``.
    """
    from sklearn.linear_model import LogisticRegression

    _, y_tr, x_tr = load_split(spectra_dir, variants_dir, cfg, "train")
    _, y_va, x_va = load_split(spectra_dir, variants_dir, cfg, "val")
    ids, y_ev, x_ev = load_split(spectra_dir, variants_dir, cfg, "eval")
    if len(np.unique(y_tr)) < 2:
        raise ValueError(f"{cfg.variant}: the train split has a single class")
    best, scores = None, {}
    for c in sorted(cfg.c_grid):
        clf = LogisticRegression(C=c, max_iter=cfg.max_iter,
                                 class_weight="balanced" if cfg.class_weight == "balanced" else None)
        clf.fit(x_tr, y_tr)
        scores[c] = macro_f1(y_va, clf.predict(x_va), num_classes)
        if best is None or scores[c] > scores[best[0]]:  # strict: ties keep the smaller C
            best = (c, clf)
    c, clf = best

    def proba(x: np.ndarray, dtype) -> np.ndarray:
        out = np.zeros((len(x), num_classes), dtype)
        out[:, clf.classes_] = clf.predict_proba(x)  # a class absent from train keeps probability 0
        return out

    return {"ids": ids, "labels": y_ev, "probs": proba(x_ev, np.float32),
            "val_threshold": val_threshold(*real_vs_fake(y_va, proba(x_va, np.float64))),
            "selection": {"C": c, "val_macro_f1": {str(k): v for k, v in scores.items()}}}
