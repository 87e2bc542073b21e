"""Test-only helpers shared by the test modules (imported by them and by conftest.py; never by src/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfpipe.core.config import deep_merge, load_yaml

REPO = Path(__file__).resolve().parents[1]
#: params.yaml's ``run_defaults`` block: the project's shared run values (no defaults in code).
RUN_DEFAULTS: dict[str, Any] = load_yaml(REPO / "params.yaml")["run_defaults"]


def run_dict(**over: Any) -> dict[str, Any]:
    """A ``runs.<name>`` mapping as the loader sees it: ``over`` deep-merged over ``run_defaults``."""
    return deep_merge(RUN_DEFAULTS, over)


def loss_config(**over: Any):
    """A :class:`LossConfig` with ``run_defaults.loss`` values except ``over``."""
    from dfpipe.training.losses import LossConfig

    return LossConfig(**{**RUN_DEFAULTS["loss"], **over})
