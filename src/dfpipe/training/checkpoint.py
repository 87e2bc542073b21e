"""Checkpoint loading (contract C1): ``models/<run>/seed<s>.pt`` -> ``(model, run config)``.

Placeholder written by helper "eval" against the C1 API until helper "train"'s module lands;
theirs replaces this file.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """``(nn.Module in eval mode, RunConfig)`` of a training checkpoint."""
    from dfpipe.training.train import load_model as _load

    return _load(path, device)
