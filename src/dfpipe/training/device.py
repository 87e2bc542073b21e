"""Device selection (contract C1): ``select_device("auto" | "cpu" | "cuda")``.

Placeholder written by helper "eval" against the C1 API until helper "train"'s module lands;
theirs replaces this file.
"""

from __future__ import annotations

import torch


def select_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but no CUDA device is available")
    return torch.device(name)
