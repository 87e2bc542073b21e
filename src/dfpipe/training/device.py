"""Device and mixed-precision choice shared by training and evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from dfpipe.training.engine import Amp


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> a device; ``auto`` is CUDA (GPU ``local_rank``) when present.

    ``cuda`` without CUDA is an error rather than a silent CPU run.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device is 'cuda' but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_amp(amp: Literal["auto", "off", "bf16", "fp16"], device: torch.device) -> Amp:
    """``auto`` -> ``bf16`` on CUDA, ``off`` elsewhere; other values unchanged."""
    return ("bf16" if device.type == "cuda" else "off") if amp == "auto" else amp
