"""The Frank et al. (2020) baseline: a linear classifier on the cached, normalised log-DCT spectra.

Frank, Eisenhofer, Schönherr, Fischer, Kolossa, Holz, "Leveraging Frequency Analysis for Deep Fake
Image Recognition", ICML 2020 (arXiv 2003.08685), Sec. 4.2: a linear model on the log-scaled,
standardised DCT coefficients already separates GAN images from real ones. Here: L2-regularised
logistic regression (scikit-learn's objective: multinomial for three classes, binomial for two; it
gives the class probabilities the evaluation needs) on the flattened ``(C, S, S)`` spectra of the
spectra stage's cache, normalised with its train-split statistics (``stats.npz``); trained on
``train``, the inverse regularisation ``C`` chosen from a grid by ``val`` macro-F1 (ties: the smaller
C, i.e. the stronger regularisation), scored on ``test``. One deterministic fit (seed 0 in the
predictions).

Same bytes on every machine. scikit-learn's lbfgs result depends on the BLAS kernel and thread
count (a dot product's summation order changes its last bits, lbfgs amplifies them: another CPU gave
val macro-F1 0.778 for 0.730). So the fit is solved here with arithmetic whose every bit is fixed:

- matrix products and sums are exact: each item's features become integers (16 significant bits
  per item, finer than the float16 cache's 11) times a power of two, and the other factor is split
  into integer slices small enough that every partial sum stays below 2**52 (Ozaki et al.'s
  error-free splitting of a matrix product); integers that fit in a float64 add exactly in any
  order, so no BLAS kernel, thread count or SIMD width can change a bit;
- exp and log are polynomials in IEEE ``+ - * /`` (numpy's own exp/log differ between its AVX2 and
  AVX-512 code paths);
- the optimiser is L-BFGS with a backtracking line search on that objective.

Nothing is rounded after the fact: the outputs are bit-stable, not rounded to what is stable.
tests/features/test_spectra.py fits under different thread counts, OpenBLAS kernels and numpy SIMD levels
and compares the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from dfpipe.core.config import Config, PlainName
from dfpipe.core.manifest import VARIANT_SCHEMA, read_table
from dfpipe.features.moments import load_stats, normalize, read_stats_meta
from dfpipe.features.spectra import STATS_FILE, SpectraCache
from dfpipe.scoring.metrics import macro_f1, real_vs_fake, val_threshold


class FrankConfig(Config):
    """One ``frank.<name>`` entry: the baseline on ``variant``'s cached spectra.

    ``c_grid``: candidate inverse L2 strengths (selected on val); ``class_weight``: ``balanced``
    weighs each class by ``n / (k n_class)`` (the demo's edited class is ~4 % of train), ``none``
    fits the raw frequencies; ``max_iter``: L-BFGS iterations (fewer when the largest gradient
    component falls to ``GTOL``). ``patience``: val-based early stopping, the rule the trained
    detectors follow (``runs.<run>.patience``) with one L-BFGS iteration in place of an epoch (its
    gradient is one pass over the training images): a fit ends after that many iterations without
    a better val macro-F1 and keeps its best iterate; null fits to ``max_iter`` / ``GTOL``.
    """

    variant: PlainName
    kind: Literal["dct", "dft"]
    c_grid: tuple[Annotated[float, Field(gt=0)], ...] = Field(min_length=1)
    class_weight: Literal["balanced", "none"]
    max_iter: int = Field(ge=1)
    patience: int | None = Field(ge=1)


def load_split(
    spectra_dir: Path, variants_dir: Path, cfg: FrankConfig, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, labels, X)`` of one split: ``X`` float32 ``(N, C*S*S)`` normalised spectra in manifest order."""
    manifest = read_table(variants_dir / cfg.variant / split / "manifest.parquet", VARIANT_SCHEMA)
    cache = SpectraCache(spectra_dir / cfg.variant / split)
    cache.check_aligned(manifest)
    if cache.index["kind"] != cfg.kind:
        raise ValueError(
            f"{cache.root}: cache holds {cache.index['kind']!r} spectra, frank wants {cfg.kind!r} (spectra.kind)"
        )
    stats = spectra_dir / cfg.variant / STATS_FILE
    if read_stats_meta(stats)["kind"] != cfg.kind:
        raise ValueError(f"{stats}: statistics are not for {cfg.kind!r}")
    mean, std = load_stats(stats)
    x = normalize(cache.gather(np.arange(len(cache))), mean, std).reshape(len(cache), -1)
    return manifest["id"].astype(str).to_numpy(), manifest["label"].to_numpy(np.int64), x


#: Stop when no gradient component of the (mean-loss) objective exceeds this.
GTOL = 1e-6
#: Significant bits of each item's fixed-point features: the cache is float16 (11 bits), so the
#: rounding is below the cache's own.
_X_BITS = 16
#: Bound of every partial sum of an exact product: integers below 2**53 add exactly in float64.
_EXACT_BITS = 52
#: Bits of the real factor a product keeps per column (relative to the column's largest entry):
#: 44 for the fit's products (its steps are far coarser), 54 (all of a float64) for sums.
_PRODUCT_BITS, _SUM_BITS = 44, 54
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm: k * _LN2_HI is exact
_EXP_TAYLOR = [1.0 / math.factorial(j) for j in range(14)]  # |r| <= ln2/2: 14 terms < 2**-53
_ATANH_SERIES = [1.0 / (2 * j + 1) for j in range(12)]  # |f| <= 0.172: 12 terms < 2**-53


def _exact_matmul(q: np.ndarray, b: np.ndarray, q_bits: int = _X_BITS, keep: int = _PRODUCT_BITS) -> np.ndarray:
    """``q @ b`` with the same bits on every machine, ``q`` integer-valued with ``|q| <= 2**q_bits``.

    Each column of ``b`` is split into integer slices of ``bits`` bits (scaled by a power of two;
    ``keep`` bits in all), so that every partial sum of ``q @ slice`` is an integer below
    ``2**_EXACT_BITS``: BLAS computes these products exactly in any order, kernel and thread
    count. The slices' products are combined in a fixed order.
    """
    k, m = b.shape
    bits = _EXACT_BITS - q_bits - (k - 1).bit_length()
    if bits < 8:
        raise ValueError(f"{k} terms per product: too many for exact float64 sums")
    count = -(-keep // bits)
    _, top = np.frexp(np.abs(b).max(axis=0))  # |b[:, c]| < 2**top[c]
    rest, pieces = np.ldexp(b, -top[None, :]), []
    for _ in range(count):
        rest = np.ldexp(rest, bits)
        piece = np.rint(rest)
        pieces.append(piece)
        rest = rest - piece
    stack = np.concatenate(pieces, axis=1)
    # a transposed view (the gradient's q.T) is faster as (stack.T @ q.T).T; exact either way
    prod = (stack.T @ q.T).T if q.flags.f_contiguous and not q.flags.c_contiguous else q @ stack
    acc = prod[:, (count - 1) * m :]
    for s in range(count - 2, -1, -1):
        acc = prod[:, s * m : (s + 1) * m] + np.ldexp(acc, -bits)
    return np.ldexp(acc, (top - bits)[None, :])


def _sum(a: np.ndarray) -> float:
    """Sum of ``a`` to a float64's precision, the same bits whatever the order, SIMD width or BLAS."""
    a = np.ravel(np.asarray(a, np.float64))
    return float(_exact_matmul(np.ones((1, a.size)), a[:, None], q_bits=0, keep=_SUM_BITS)[0, 0])


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return _sum(a * b)


def _exp(x: np.ndarray) -> np.ndarray:
    """``exp(x)`` (within 2 ulp) for ``x <= 0`` from IEEE ``+ - * /``, ``rint`` and ``ldexp`` only,
    so every machine gets the same bits (numpy's exp has per-CPU SIMD implementations)."""
    x = np.maximum(x, -746.0)  # exp(-746) is 0 in float64
    k = np.rint(x * (1.0 / _LN2_HI))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _EXP_TAYLOR[-1])
    for c in reversed(_EXP_TAYLOR[:-1]):
        p = p * r + c
    return np.ldexp(p, k.astype(np.int64))


def _log(s: np.ndarray) -> np.ndarray:
    """``log(s)`` (within 2 ulp) for ``s > 0`` from IEEE operations only (see :func:`_exp`)."""
    m, e = np.frexp(s)  # s = m 2**e, m in [0.5, 1)
    low = m < math.sqrt(0.5)
    m = np.where(low, 2.0 * m, m)  # m in [0.707, 1.414)
    e = np.where(low, e - 1, e).astype(np.float64)
    f = (m - 1.0) / (m + 1.0)  # log m = 2 atanh f
    f2 = f * f
    series = np.full_like(f, _ATANH_SERIES[-1])
    for c in reversed(_ATANH_SERIES[:-1]):
        series = series * f2 + c
    return e * _LN2_HI + (e * _LN2_LO + 2.0 * f * series)


def _fixed_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q, shift)``: ``x[i] = q[i] * 2**-shift[i]`` to ``_X_BITS`` significant bits per row, ``q``
    integer-valued float64 with ``|q| <= 2**_X_BITS``."""
    x = np.asarray(x, np.float64)
    _, top = np.frexp(np.abs(x).max(axis=1))  # |x[i]| < 2**top[i]
    shift = (_X_BITS - top).astype(np.int64)
    return np.rint(np.ldexp(x, shift[:, None])), shift


class _Problem:
    """scikit-learn's L2 logistic-regression objective (``mean_i w_i loss_i + ||W||^2 / (2 C sum_i w_i)``
    with ``w_i`` the class weights, the intercept unpenalised): multinomial over ``k`` classes,
    binomial (one logit against a zero one, scikit-learn's choice) for two."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: np.ndarray, weight: np.ndarray):
        self.q, self.shift = _fixed_rows(x)
        self.index = np.searchsorted(classes, y)
        self.onehot = (self.index[:, None] == np.arange(len(classes))[None, :]).astype(np.float64)
        self.weight_sum = _sum(weight)
        self.weight = weight / self.weight_sum  # scikit-learn divides by the sum of sample weights
        self.free = 1 if len(classes) == 2 else len(classes)  # logit columns with parameters
        self.features = x.shape[1]
        self.l2 = 0.0  # set per C: 1 / (C * weight_sum)

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cut = self.features * self.free
        return theta[:cut].reshape(self.features, self.free), theta[cut:]

    def logits(self, theta: np.ndarray, q: np.ndarray, shift: np.ndarray) -> np.ndarray:
        coef, intercept = self.split(theta)
        z = np.ldexp(_exact_matmul(q, coef), -shift[:, None]) + intercept[None, :]
        return np.concatenate([np.zeros((len(z), 1)), z], axis=1) if self.free == 1 else z

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and gradient at ``theta`` (coefficients then intercepts)."""
        z = self.logits(theta, self.q, self.shift)
        z = z - z.max(axis=1, keepdims=True)
        e = _exp(z)
        total = e[:, 0].copy()
        for c in range(1, e.shape[1]):  # a fixed order
            total += e[:, c]
        log_p = z - _log(total)[:, None]
        coef, _ = self.split(theta)
        picked = log_p[np.arange(len(log_p)), self.index]
        loss = -_dot(self.weight, picked) + 0.5 * self.l2 * _dot(coef, coef)
        resid = (e / total[:, None] - self.onehot) * self.weight[:, None]
        if self.free == 1:
            resid = resid[:, 1:]
        grad_coef = _exact_matmul(self.q.T, np.ldexp(resid, -self.shift[:, None])) + self.l2 * coef
        grad_intercept = [_sum(resid[:, c]) for c in range(self.free)]
        return loss, np.concatenate([grad_coef.ravel(), grad_intercept])

    def proba(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        q, shift = _fixed_rows(x)
        z = self.logits(theta, q, shift)
        e = _exp(z - z.max(axis=1, keepdims=True))
        total = e[:, 0].copy()
        for c in range(1, e.shape[1]):
            total += e[:, c]
        return e / total[:, None]


def _lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    theta: np.ndarray,
    max_iter: int,
    memory: int = 10,
    stop: Callable[[np.ndarray, int], bool] | None = None,
) -> tuple[np.ndarray, int]:
    """Minimise ``fun`` (value, gradient) from ``theta``: L-BFGS two-loop recursion, Armijo
    backtracking from step 1. Stops at ``max_iter``, at gradient max-norm ``<= GTOL``, when no
    step decreases the objective, or when ``stop(theta, iterations)`` (called after every
    iteration) says so. Returns ``(theta, iterations)``."""
    f, g = fun(theta)
    hist: list[tuple[np.ndarray, np.ndarray, float]] = []
    steps = 0
    while steps < max_iter and float(np.abs(g).max()) > GTOL:
        d, alphas = g.copy(), []
        for s, y, rho in reversed(hist):
            a = rho * _dot(s, d)
            d = d - a * y
            alphas.append(a)
        if hist:
            s, y, _ = hist[-1]
            d = d * (_dot(s, y) / _dot(y, y))
        for (s, y, rho), a in zip(hist, reversed(alphas)):
            d = d + s * (a - rho * _dot(y, d))
        d = -d
        slope = _dot(g, d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            hist, d = [], -g
            slope = -_dot(g, g)
        step = 1.0 if hist else min(1.0, 1.0 / math.sqrt(-slope))
        for _ in range(60):
            new = theta + step * d
            f_new, g_new = fun(new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break  # no decrease at working precision: converged
        s, y = new - theta, g_new - g
        sy = _dot(s, y)
        if sy > 0:
            hist = (hist + [(s, y, 1.0 / sy)])[-memory:]
        done = f - f_new <= 64 * np.finfo(np.float64).eps * max(abs(f), abs(f_new), 1.0)
        theta, f, g, steps = new, f_new, g_new, steps + 1
        if done or (stop is not None and stop(theta, steps)):
            break
    return theta, steps


@dataclass
class _BestIterate:
    """The best val iterate of one L-BFGS fit so far (``step`` 0: the starting point)."""

    score: float
    step: int
    theta: np.ndarray

    def tracker(self, val_score: Callable[[np.ndarray], float], patience: int) -> Callable[[np.ndarray, int], bool]:
        """``_lbfgs``'s ``stop``: record a better iterate (strictly: ties keep the earlier one);
        stop ``patience`` iterations after the best."""

        def stop(theta: np.ndarray, step: int) -> bool:
            score = val_score(theta)
            if score > self.score:
                self.score, self.step, self.theta = score, step, theta
            return step - self.step >= patience

        return stop


def fit_and_score(cfg: FrankConfig, spectra_dir: Path, variants_dir: Path, num_classes: int = 3) -> dict:
    """Fit on train, select ``C`` on val, score test.

    Returns ``{"ids", "labels", "probs" (N, num_classes) float32 for the test split,
    "val_threshold" (the real-vs-fake threshold of the selected fit on val), "selection":
    {"C", "val_macro_f1": {C: score}}}``.
    """
    _, y_tr, x_tr = load_split(spectra_dir, variants_dir, cfg, "train")
    _, y_va, x_va = load_split(spectra_dir, variants_dir, cfg, "val")
    ids, y_ev, x_ev = load_split(spectra_dir, variants_dir, cfg, "test")
    classes, counts = np.unique(y_tr, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"{cfg.variant}: the train split has a single class")
    # balanced: n / (k n_class), scikit-learn's compute_class_weight
    per_class = len(y_tr) / (len(classes) * counts) if cfg.class_weight == "balanced" else np.ones(len(classes))
    problem = _Problem(x_tr, y_tr, classes, per_class[np.searchsorted(classes, y_tr)])
    del x_tr

    def proba(theta: np.ndarray, x: np.ndarray, dtype) -> np.ndarray:
        out = np.zeros((len(x), num_classes), dtype)
        out[:, classes] = problem.proba(theta, x)  # a class absent from train keeps probability 0
        return out

    def val_score(theta: np.ndarray) -> float:
        return macro_f1(y_va, proba(theta, x_va, np.float64).argmax(axis=1), num_classes)

    evaluations = 0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1  # one pass over the training images
        return problem(theta)

    best: tuple[float, np.ndarray] | None
    best, scores, stopped_at = None, {}, {}
    theta = np.zeros(problem.features * problem.free + problem.free)
    for c in sorted(cfg.c_grid):  # each fit starts from the previous C's solution (same optimum, fewer steps)
        problem.l2 = 1.0 / (c * problem.weight_sum)
        top = _BestIterate(val_score(theta), 0, theta)
        stop = top.tracker(val_score, cfg.patience) if cfg.patience is not None else None
        theta, steps = _lbfgs(objective, theta, cfg.max_iter, stop=stop)
        if cfg.patience is not None:
            theta = top.theta  # the best val iterate; the next C starts from it
        scores[c] = val_score(theta)
        stopped_at[str(c)] = {"iterations": steps, "best_iteration": top.step if cfg.patience else steps}
        if best is None or scores[c] > scores[best[0]]:  # strict: ties keep the smaller C
            best = (c, theta)
    assert best is not None  # c_grid holds at least one value (min_length=1)
    c, theta = best
    return {
        "ids": ids,
        "labels": y_ev,
        "probs": proba(theta, x_ev, np.float32),
        "val_threshold": val_threshold(*real_vs_fake(y_va, proba(theta, x_va, np.float64))),
        "selection": {"C": c, "val_macro_f1": {str(k): v for k, v in scores.items()}, "stopping": stopped_at},
        "budget": {"passes": evaluations, "images_seen": evaluations * len(y_tr)},
    }
