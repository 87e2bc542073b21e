"""Shared timing helpers of the benchmark scripts: repeated wall times, min / median, ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def times(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of ``repeat`` rounds, each calling every function once in turn: on a shared
    machine a slow spell then hits the baseline and the measured code alike, so their ratio holds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def rates(secs: list[float], work: float) -> tuple[float, float]:
    """``(best, median)`` rate of ``work`` units per second from wall times."""
    return work / min(secs), work / statistics.median(secs)


def line(label: str, secs: list[float], work: float, unit: str, base: list[float] | None = None,
         base_work: float | None = None) -> str:
    """``label: best / median <unit>`` and, with a baseline measured in the same run, the ratio of
    medians (rate over baseline rate: above 1 is faster than the baseline)."""
    best, med = rates(secs, work)
    text = f"{label}: {best:10.1f} / {med:10.1f} {unit} (min / median of {len(secs)})"
    if base is not None:
        _, bmed = rates(base, base_work if base_work is not None else work)
        text += f"  ratio {med / bmed:.2f}x baseline"
    return text
