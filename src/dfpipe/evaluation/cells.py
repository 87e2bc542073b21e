"""Table cells as text: a [0, 1] metric in percent, its bootstrap interval, and the
``"mean ± sd [low, high]"`` cell every results table uses (one format for all of them)."""

from __future__ import annotations

from typing import Any

from dfpipe.evaluation.protocol import MIN_UNITS


def pct(value: Any) -> str:
    """A [0, 1] metric as a percentage with 2 decimals; ``null`` (undefined) as "n/a"."""
    return "n/a" if value is None else f"{100.0 * float(value):.2f}"


def interval(low: Any, high: Any, n_units: int | None = None) -> str:
    """``"[60.10, 67.30]"`` (%), or ``"[n too small: k groups]"`` when the bootstrap had fewer
    than :data:`~dfpipe.evaluation.protocol.MIN_UNITS` independent units to resample."""
    if n_units is not None and n_units < MIN_UNITS:
        return f"[n too small: {n_units} group{'' if n_units == 1 else 's'}]"
    return f"[{pct(low)}, {pct(high)}]"


def value_cell(mean: Any, sd: Any = None, ci: str | None = None) -> str:
    """``"63.95 ± 1.20 [60.10, 67.30]"``: a value (a seed mean), ``± sd`` unless ``sd`` is None
    (one seed), then the interval text ``ci`` (:func:`interval`) unless it is None."""
    text = pct(mean) + ("" if sd is None else f" ± {pct(sd)}")
    return text if ci is None else f"{text} {ci}"
