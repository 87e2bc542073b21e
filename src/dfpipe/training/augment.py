"""Train-time augmentation presets (``runs.<run>.augment``), applied to uint8 batches before the device.

``blur_jpeg``: CNNDetection's "Blur+JPEG (0.5)" (:mod:`dfpipe.features.augment`, where it lives so
that the feature caches' augmented views use the same code), drawn from a generator seeded from the
run seed and epoch. Never applied to val/test.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dfpipe.features.augment import blur_jpeg

AUGMENT_PRESETS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None] = {
    "none": None,
    "blur_jpeg": blur_jpeg,
}
