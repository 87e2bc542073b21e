"""Derived random seeds: one independent seed per ``(seed, epoch, stream)``."""

from __future__ import annotations

import numpy as np


def mix_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """Independent 63-bit seed for ``(seed, epoch, stream)``; SeedSequence avoids seed+epoch overlaps.

    Streams in use: 0 loader order (training.data), 1 flips (training.engine), 2 the global torch RNG
    (training.train).
    """
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)
