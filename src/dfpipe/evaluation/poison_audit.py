"""Poisoning audits that need no clean reference set: spectral signatures and activation clustering.

Both run on a trained model's penultimate features of its *training* items, one class (as
labelled in training) at a time, and return which items they flag:

- **Spectral signatures** (Tran, Li and Madry, NeurIPS 2018): centre the class's features, take
  the top right singular vector ``v`` of the centred matrix, score each item by its squared
  projection ``<r_i - mean, v>^2`` and flag the ``ceil(factor * eps * n)`` highest scores, with
  ``eps`` an upper bound on the poisoned share and ``factor`` 1.5 as in the paper. On clean data it
  still flags that many items: its expected false-positive share is ``factor * eps``.
- **Activation clustering** (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
  Activation Clustering", 2018): reduce the class's features to ``dims`` dimensions, split them
  into two clusters by k-means and flag the smaller cluster when its share of the class is at most
  ``max_share`` (the paper's relative-size analysis; 0.35 is the Adversarial Robustness Toolbox
  default of their implementation). The paper reduces with ICA; this uses PCA (the reduction ART
  also offers) through an SVD, and 2-means seeded by the two extreme items along the first
  component, so the result is a deterministic function of the features: no RNG.

:func:`precision_recall` scores the flags against the planted items. Pure numpy, no model here:
``dfpipe.evaluation.backdoor`` extracts the features.
"""

from __future__ import annotations

import math

import numpy as np

#: Tran et al. remove 1.5 x eps of each class.
SS_FACTOR = 1.5


def _centred(feats: np.ndarray) -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x - x.mean(0, keepdims=True)


def _top_directions(x: np.ndarray, k: int) -> np.ndarray:
    """``(D, k)`` top right singular vectors of ``x``, each signed so its largest |entry| is positive.

    From the eigenvectors of the smaller Gram matrix (``x^T x`` or ``x x^T``): a symmetric
    eigenproblem of side ``min(N, D)``, several times cheaper than the SVD of ``x`` itself."""
    n, d = x.shape
    k = min(k, n, d)
    if d <= n:
        _, vecs = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
        v = vecs[:, ::-1][:, :k]
    else:
        vals, vecs = np.linalg.eigh(x @ x.T)
        u, s = vecs[:, ::-1][:, :k], np.sqrt(np.clip(vals[::-1][:k], 1e-300, None))
        v = (x.T @ u) / s
    idx = np.abs(v).argmax(0)
    return v * np.sign(v[idx, np.arange(v.shape[1])])


def spectral_scores(feats: np.ndarray) -> np.ndarray:
    """``(N,)`` squared projection of each centred feature on the top singular vector."""
    x = _centred(feats)
    if len(x) < 2:
        return np.zeros(len(x))
    return (x @ _top_directions(x, 1)[:, 0]) ** 2


def _top_share(scores: np.ndarray, share: float) -> np.ndarray:
    """``(N,)`` bool: the ``ceil(share * N)`` highest scores (ties broken by position)."""
    n_flag = min(len(scores), int(math.ceil(share * len(scores) - 1e-9)))
    out = np.zeros(len(scores), dtype=bool)
    if n_flag > 0:
        out[np.lexsort((np.arange(len(scores)), -scores))[:n_flag]] = True
    return out


def spectral_signature_flags(
    feats: np.ndarray, labels: np.ndarray, eps: float, factor: float = SS_FACTOR
) -> tuple[np.ndarray, np.ndarray]:
    """``(flags (N,) bool, scores (N,))``: per class, the top ``factor * eps`` share by spectral score."""
    labels = np.asarray(labels)
    flags, scores = np.zeros(len(labels), dtype=bool), np.zeros(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        s = spectral_scores(np.asarray(feats)[idx])
        scores[idx] = s
        flags[idx] = _top_share(s, factor * eps)
    return flags, scores


def two_means(x: np.ndarray, iters: int = 100) -> np.ndarray:
    """``(N,)`` cluster index (0/1) of 2-means on ``x``, started from the two items with the lowest
    and highest first coordinate (deterministic; Lloyd iterations until no item moves)."""
    if len(x) < 2:
        return np.zeros(len(x), dtype=np.int64)
    centres = x[[int(x[:, 0].argmin()), int(x[:, 0].argmax())]].copy()
    assign = np.full(len(x), -1, dtype=np.int64)
    for _ in range(iters):
        d = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if np.array_equal(new, assign):
            break
        assign = new
        for k in (0, 1):
            if (assign == k).any():
                centres[k] = x[assign == k].mean(0)
    return assign


def activation_clustering_flags(
    feats: np.ndarray, labels: np.ndarray, dims: int, max_share: float
) -> tuple[np.ndarray, dict[int, float]]:
    """``(flags (N,) bool, {class: share of its smaller cluster})``: per class, PCA to ``dims``
    dimensions, 2-means, the smaller cluster flagged when its share is at most ``max_share``."""
    labels = np.asarray(labels)
    flags = np.zeros(len(labels), dtype=bool)
    shares: dict[int, float] = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        x = _centred(np.asarray(feats)[idx])
        if len(idx) < 2:
            shares[int(c)] = 0.0
            continue
        reduced = x @ _top_directions(x, min(dims, x.shape[1], len(idx)))
        assign = two_means(reduced)
        sizes = np.bincount(assign, minlength=2)
        small = int(sizes.argmin())
        share = float(sizes[small] / len(idx))
        shares[int(c)] = share
        if share <= max_share:
            flags[idx[assign == small]] = True
    return flags, shares


def precision_recall(flags: np.ndarray, truth: np.ndarray) -> dict[str, float | int | None]:
    """Precision and recall of ``flags`` against the planted ``truth`` (``None`` where undefined),
    with the counts and the flagged share."""
    flags, truth = np.asarray(flags, bool), np.asarray(truth, bool)
    tp = int((flags & truth).sum())
    return {
        "flagged": int(flags.sum()),
        "planted": int(truth.sum()),
        "true_positives": tp,
        "precision": tp / int(flags.sum()) if flags.any() else None,
        "recall": tp / int(truth.sum()) if truth.any() else None,
        "flagged_share": float(flags.mean()) if len(flags) else 0.0,
    }
