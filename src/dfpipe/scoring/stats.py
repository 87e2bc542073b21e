"""Uncertainty over seeds and test-set resamples: seed summaries, cluster-bootstrap intervals of
one model and paired bootstrap intervals of the difference between two models.

Conventions: ``labels`` ``(N,)`` int; ``probs`` ``(S, N, K)``: one ``(N, K)`` probability array
per training seed, items in the same order for every seed; ``groups`` ``(N,)`` cluster key per
item (the video key for video frames, the item id otherwise: frames of one video are not
independent draws, so a resample draws whole videos).

One bootstrap resample draws groups with replacement (the same draw for every model in a paired
comparison) and, per model, seeds with replacement; the resample's value is the mean over the
drawn seeds of the metric on the drawn items. The interval thus covers test-set sampling and
seed-to-seed variation (a hierarchical bootstrap; with one seed it reduces to the usual cluster
bootstrap of that seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dfpipe.scoring import metrics as M

NAN = float("nan")

Metric = Callable[[np.ndarray, np.ndarray], float]

#: Scalar metrics resampled: name -> fn(labels (n,), probs (n, K)) -> float (NaN when undefined).
#: These are the headline numbers of ``metrics/eval/<name>.json``.
HEADLINE: dict[str, Metric] = {
    "macro_f1": lambda y, p: float(M.f1_from_confusion(M.confusion(y, p.argmax(1), p.shape[1])).mean()),
    "weighted_f1": lambda y, p: M.weighted_f1(M.confusion(y, p.argmax(1), p.shape[1])),
    "acc": lambda y, p: float(np.mean(p.argmax(1) == y)),
    "auc_real_fake": lambda y, p: M.binary_auc(*M.real_vs_fake(y, p)),
    "eer": lambda y, p: M.eer(*M.real_vs_fake(y, p)),
}


def headline_values(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The :data:`HEADLINE` metrics in one pass ``(5,)``: one confusion matrix for the F1s and
    accuracy, one ROC for AUC and EER (trapezoidal AUC over every distinct threshold equals the
    Mann-Whitney AUC with ties counted half). The bootstrap calls this for every seed and resample;
    ``tests/scoring/test_stats.py`` checks it equals the per-metric functions."""
    return _headline(y, p.argmax(1), p.shape[1], *M.real_vs_fake(y, p))


def _headline(y: np.ndarray, pred: np.ndarray, k: int, yb: np.ndarray, score: np.ndarray) -> np.ndarray:
    """:func:`headline_values` from the predicted classes ``pred`` of ``k`` classes and the binary
    view ``(yb, score)`` of :func:`dfpipe.scoring.metrics.real_vs_fake`."""
    cm = M.confusion(y, pred, k)
    f1 = M.f1_from_confusion(cm)
    support = cm.sum(1)
    out = [float(f1.mean()), float((f1 * support).sum() / support.sum()), float(np.trace(cm) / len(y)), NAN, NAN]
    if yb.any() and not yb.all():
        fpr, tpr = M.roc_points(yb.astype(bool), score)
        out[3] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
        out[4] = M.eer_from_roc(fpr, tpr)
    return np.asarray(out)


def group_members(groups: Sequence[str] | np.ndarray) -> list[np.ndarray]:
    """Item indices of each group, groups in sorted key order (so draws never depend on row order)."""
    groups = np.asarray(groups).astype(str)
    keys, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    return [order[starts[g] : starts[g + 1]] for g in range(len(keys))]


def draw_resamples(groups: Sequence[str] | np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """``n_boot`` item-index arrays, each a draw of whole groups with replacement."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    members = group_members(groups)
    flat = np.concatenate(members)  # the members of each group, group after group
    sizes = np.array([len(m) for m in members])
    starts = np.cumsum(sizes) - sizes
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        draw = rng.integers(0, len(members), len(members))
        n = sizes[draw]
        # the drawn groups' members concatenated, as one gather (not one array per drawn group)
        out.append(flat[np.repeat(starts[draw] - (np.cumsum(n) - n), n) + np.arange(n.sum())])
    return out


def _check(labels: np.ndarray, probs: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[1] != len(labels):
        raise ValueError(f"expected probs (S, N, K) with N = {len(labels)}, got {probs.shape}")
    if len(np.asarray(groups)) != len(labels):
        raise ValueError(f"{len(np.asarray(groups))} group keys for {len(labels)} items")
    return labels, probs


def seed_summary(values: Sequence[float]) -> dict:
    """``{"mean", "sd"}`` over seeds (sd with ddof 1; NaN with one seed or any undefined value)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        return {"mean": NAN, "sd": NAN}
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else NAN}


def _seed_scorer(
    labels: np.ndarray, probs: np.ndarray, metrics: Mapping[str, Metric]
) -> Callable[[np.ndarray], np.ndarray]:
    """``idx -> (S, M)``: the metric values of every seed on the items ``idx`` (one resample).

    For :data:`HEADLINE` (one pass per seed) each seed's predicted class and real-vs-fake score
    are computed once, not per resample: an element-wise result gathered at ``idx`` has the same
    bits as the result computed on the gathered rows, so the values do not change.
    """
    if metrics is not HEADLINE:

        def each(idx: np.ndarray) -> np.ndarray:
            y = labels[idx]
            return np.array([[fn(y, p[idx]) for fn in metrics.values()] for p in probs])

        return each
    k = probs.shape[2]
    preds = probs.argmax(2)
    views = [M.real_vs_fake(labels, p) for p in probs]  # the binary labels are the same for every seed
    binary, scores = views[0][0], [score for _, score in views]

    def per_seed(idx: np.ndarray) -> np.ndarray:
        y, yb = labels[idx], binary[idx]
        return np.array([_headline(y, pred[idx], k, yb, score[idx]) for pred, score in zip(preds, scores)])

    return per_seed


def _interval(samples: np.ndarray, level: float) -> tuple[float, float, int]:
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return NAN, NAN, int(samples.size)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(ok, alpha)), float(np.quantile(ok, 1.0 - alpha)), int(samples.size - ok.size)


def _differences(
    full_a: np.ndarray, full_b: np.ndarray, diffs: np.ndarray, level: float, metrics: Mapping[str, Metric]
) -> dict[str, dict]:
    """``{metric: {"a", "b", "diff", "low", "high", "undefined"}}`` from the point values of the
    two sides ``(M,)`` and the resampled differences ``(n_boot, M)``."""
    out = {}
    for j, name in enumerate(metrics):
        lo, hi, dropped = _interval(diffs[:, j], level)
        out[name] = {
            "a": float(full_a[j]),
            "b": float(full_b[j]),
            "diff": float(full_a[j] - full_b[j]),
            "low": lo,
            "high": hi,
            "undefined": dropped,
        }
    return out


def bootstrap_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    metrics: Mapping[str, Metric] = HEADLINE,
    notes: list[str] | None = None,
) -> dict[str, list[float]]:
    """Percentile interval ``{metric: [low, high]}`` of the seed-mean metric (module docstring).

    Resamples where a metric is undefined (e.g. no real item drawn) are dropped, with a note.
    """
    labels, probs = _check(labels, probs, groups)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    notes = notes if notes is not None else []
    rng = np.random.default_rng([seed, 1])  # seed draws: a stream apart from the group draws
    s = probs.shape[0]
    per_seed = _seed_scorer(labels, probs, metrics)
    boot = np.array([per_seed(idx)[rng.integers(0, s, s)].mean(0) for idx in draw_resamples(groups, n_boot, seed)])
    out = {}
    for j, name in enumerate(metrics):
        lo, hi, dropped = _interval(boot[:, j], level)
        if dropped:
            notes.append(f"bootstrap {name}: {dropped} of {n_boot} resamples undefined, dropped")
        out[name] = [lo, hi]
    return out


def paired_bootstrap(
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    groups,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    metrics: Mapping[str, Metric] = HEADLINE,
    record: list | None = None,
) -> dict[str, dict]:
    """Difference ``a - b`` of two models scored on the identical items, with a paired interval.

    Args:
        probs_a, probs_b: ``(Sa, N, K)`` and ``(Sb, N, K)``, items aligned with ``labels``.
        record: if given, receives each resample's item indices (the same array is used for both
            models: that is what makes the interval paired).
    Returns ``{metric: {"a", "b", "diff", "low", "high", "undefined"}}``: seed means on all items,
    their difference, the percentile interval of the difference and the number of dropped
    (undefined) resamples.
    """
    labels, probs_a = _check(labels, probs_a, groups)
    _, probs_b = _check(labels, probs_b, groups)
    rng = np.random.default_rng([seed, 1])
    sa, sb = probs_a.shape[0], probs_b.shape[0]
    per_seed_a, per_seed_b = _seed_scorer(labels, probs_a, metrics), _seed_scorer(labels, probs_b, metrics)
    diffs = []
    for idx in draw_resamples(groups, n_boot, seed):
        if record is not None:
            record.append(idx)
        va = per_seed_a(idx)[rng.integers(0, sa, sa)].mean(0)
        vb = per_seed_b(idx)[rng.integers(0, sb, sb)].mean(0)
        diffs.append(va - vb)
    everything = np.arange(len(labels))
    return _differences(
        per_seed_a(everything).mean(0),
        per_seed_b(everything).mean(0),
        np.asarray(diffs),
        level,
        metrics,
    )


def unpaired_gap(
    labels: np.ndarray,
    probs: np.ndarray,
    groups,
    in_a: np.ndarray,
    n_boot: int,
    seed: int,
    level: float,
    metrics: Mapping[str, Metric],
) -> dict[str, dict]:
    """Metric on items ``in_a`` minus metric on the other items, one model (``(S, N, K)``).

    Each resample draws groups within each part separately (the parts share no group when
    ``groups`` are videos and ``in_a`` is a per-video flag) and seeds once for both parts.
    Returns ``{metric: {"a", "b", "diff", "low", "high", "undefined"}}``.
    """
    labels, probs = _check(labels, probs, groups)
    in_a = np.asarray(in_a, bool)
    groups = np.asarray(groups).astype(str)
    ia, ib = np.flatnonzero(in_a), np.flatnonzero(~in_a)
    if not len(ia) or not len(ib):
        raise ValueError(f"both parts need items: {len(ia)} and {len(ib)}")
    if set(groups[ia]) & set(groups[ib]):
        raise ValueError("a group has items on both sides of the split")
    rng = np.random.default_rng([seed, 1])
    s = probs.shape[0]
    draws = zip(draw_resamples(groups[ia], n_boot, seed), draw_resamples(groups[ib], n_boot, seed + 1))
    per_seed = _seed_scorer(labels, probs, metrics)
    diffs = []
    for da, db in draws:
        pick = rng.integers(0, s, s)
        diffs.append(per_seed(ia[da])[pick].mean(0) - per_seed(ib[db])[pick].mean(0))
    return _differences(
        per_seed(ia).mean(0),
        per_seed(ib).mean(0),
        np.asarray(diffs),
        level,
        metrics,
    )
