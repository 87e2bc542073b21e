"""Matplotlib set-up and the one deterministic PNG save helper every figure-writing module uses.

It sits in core (not evaluation) because features/spectra.py writes figures too and imports run
one way, from the stages down to the core.
"""

from __future__ import annotations

from pathlib import Path

from dfpipe.core.io import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG atomically and close it.

    ``metadata={"Software": None}``: matplotlib otherwise stamps its version into the file, and
    the same figure must give the same bytes on any machine.
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    pyplot().close(fig)
