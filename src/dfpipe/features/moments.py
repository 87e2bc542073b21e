"""Train-split statistics of spectra: streaming per-coefficient moments, the stats files, normalisation.

``stats_<kind>.npz`` holds ``mean``/``std`` float32 ``(C, H, W)``, the sample ``count`` and the
transform settings; it is written uncompressed with a fixed key order, so it is byte-deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dfpipe.core.io import atomic_path

#: Floor on the per-coefficient standard deviation, so a coefficient that is constant over the
#: training split (e.g. exactly-zero DFT bins of a flat demo background) normalises to 0, not inf.
STD_FLOOR = 1e-6


def add_items(items: Iterable[np.ndarray], total: np.ndarray, first: bool) -> np.ndarray:
    """``total += items[0]; total += items[1]; ...`` in that order (``total = items[0]`` first when
    ``first``), in place; returns ``total``. The order fixes the float64 bytes of a mean."""
    it = iter(items)
    if first:
        total[...] = next(it)
    for item in it:
        total += item
    return total


class RunningMoments:
    """Per-element mean and (population) variance of a stream of batches, in float64.

    Merges each batch's exact mean and centred sum of squares with Chan et al.'s parallel update
    (Chan, Golub & LeVeque 1979), which, unlike sum / sum-of-squares, does not cancel
    catastrophically when the mean is large against the spread (log-spectra: DC ~ 9, spread ~ 0.1).
    The result depends on the batch boundaries only at rounding level; callers feed fixed batches.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    @staticmethod
    def batch_moments(
        batch: np.ndarray, total: np.ndarray | None = None
    ) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """``(n, mean, centred sum of squares)`` of one batch (the part of :meth:`update` that
        can run in parallel; :meth:`merge` the results in batch order). ``total``: the batch's
        item sum ``batch[0] + batch[1] + ...`` added in that order, when the caller has it (made
        while the items were in the CPU cache; it saves a pass over the batch)."""
        batch = np.asarray(batch, dtype=np.float64)
        n = batch.shape[0]
        if n == 0:
            return 0, None, None
        if batch.ndim < 2 or batch[0].size < 16 or not batch.flags.c_contiguous:
            mean_b = batch.mean(axis=0)
            return n, mean_b, ((batch - mean_b) ** 2).sum(axis=0)
        # Item by item: the same additions in the same order as ``batch.mean(axis=0)`` and
        # ``((batch - mean) ** 2).sum(axis=0)`` (numpy reduces a leading axis of a contiguous array
        # sequentially; tests/features/test_spectra.py checks the bytes), without the batch-sized
        # temporaries that page-fault in (about 2x faster on 224 px spectra).
        if total is None:
            total = add_items(batch, np.empty_like(batch[0]), first=True)
        mean_b = total / n
        m2 = np.zeros_like(mean_b)
        diff = np.empty_like(mean_b)
        for item in batch:
            np.subtract(item, mean_b, out=diff)
            diff *= diff
            m2 += diff
        return n, mean_b, m2

    def update(self, batch: np.ndarray) -> None:
        """Add ``batch`` of shape ``(n, *shape)``."""
        self.merge(*self.batch_moments(batch))

    def merge(self, n_b: int, mean_b: np.ndarray | None, m2_b: np.ndarray | None) -> None:
        """Add one batch's :meth:`batch_moments` (Chan et al.'s pairwise update)."""
        if n_b == 0:
            return
        # batch_moments returns arrays whenever n_b > 0
        assert mean_b is not None and m2_b is not None
        if self.mean is None:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        assert self.m2 is not None  # set together with self.mean
        if mean_b.shape != self.mean.shape:
            raise ValueError(f"batch item shape {mean_b.shape} differs from {self.mean.shape}")
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / n)
        self.count = n

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` float64, population standard deviation (ddof = 0)."""
        if self.mean is None:
            raise ValueError("no data: statistics of an empty stream")
        assert self.m2 is not None  # set together with self.mean
        return self.mean, np.sqrt(self.m2 / self.count)


def save_stats(
    path: str | Path, mean: np.ndarray, std: np.ndarray, count: int, kind: str, color: str, eps: float, variant: str
) -> None:
    """Write ``stats.npz`` (uncompressed, fixed key order: byte-deterministic)."""
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                mean=np.asarray(mean, dtype=np.float32),
                std=np.asarray(std, dtype=np.float32),
                count=np.int64(count),
                kind=np.str_(kind),
                color=np.str_(color),
                eps=np.float64(eps),
                split=np.str_("train"),
                variant=np.str_(variant),
            )


def _open_stats(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: spectrum statistics not found (run the spectra stage)")
    return np.load(path, allow_pickle=False)


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 arrays ``(C, H, W)`` from ``stats.npz`` (train split only)."""
    with _open_stats(path) as z:
        mean, std = z["mean"], z["std"]
    if mean.shape != std.shape or mean.ndim != 3 or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError(f"{path}: malformed statistics (shapes {mean.shape}, {std.shape} or non-finite)")
    return mean.copy(), std.copy()


def read_stats_meta(path: str | Path) -> dict:
    """Transform settings and sample count saved beside the statistics."""
    with _open_stats(path) as z:
        return {
            "kind": str(z["kind"]),
            "color": str(z["color"]),
            "eps": float(z["eps"]),
            "count": int(z["count"]),
            "variant": str(z["variant"]),
            "split": str(z["split"]),
        }


def normalize(spectra: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(spectra - mean) / max(std, STD_FLOOR)`` in float32 (as ``SpectrumTransform`` normalises)."""
    return (np.asarray(spectra, np.float32) - np.asarray(mean, np.float32)) / np.maximum(
        np.asarray(std, np.float32), STD_FLOOR
    )
