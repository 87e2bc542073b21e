"""Model configuration and registry: ``ModelConfig`` -> ``nn.Module`` through :func:`build_model`.

The training stage nests :class:`ModelConfig` in its run config (``params.yaml`` ``runs.<run>.model``)
and calls :func:`build_model`; the evaluation stage rebuilds the same module from the ``config``
stored in the checkpoint. Every registered model follows one forward contract::

    forward(x: (B, 3, H, W) float in [0, 1]) -> {"logits": (B, num_classes),
                                                 "mask": (B, 1, mask_size, mask_size)  # seg_head only
                                                }

Any square H = W is accepted: the model resizes to ``image_size`` on the device and applies its own
input transform, so checkpoints are self-contained.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Optional, Union

import numpy as np
from pydantic import Field, model_validator
from torch import nn

from dfpipe.core.config import Config, RepoPath

if TYPE_CHECKING:
    from dfpipe.features.spectra import SpectrumTransform

# (mean, std) arrays (C, H, W); or a path to the spectra stage's stats.npz; or a SpectrumTransform.
SpectrumStats = Union[tuple[np.ndarray, np.ndarray], Path, "SpectrumTransform"]
ModelFactory = Callable[["ModelConfig", Optional[SpectrumStats]], nn.Module]

MODEL_REGISTRY: dict[str, ModelFactory] = {}

#: Registry name -> the module of this package that registers it. Imported on first use, so that a
#: ResNet-18 stage does not pay the ~2 s of importing timm (Xception / F3Net) in every process.
MODEL_MODULES = {"resnet18": "resnet", "xception": "xception", "f3net": "f3net", "npr": "npr"}


def ensure_registered(name: str) -> None:
    """Import the module that registers ``name`` (no-op for names already registered)."""
    if name not in MODEL_REGISTRY and name in MODEL_MODULES:
        importlib.import_module(f"{__package__}.{MODEL_MODULES[name]}")


def registered_names() -> list[str]:
    """Every model name, importing all model modules (for listings and tests)."""
    for name in MODEL_MODULES:
        ensure_registered(name)
    return sorted(MODEL_REGISTRY)

# Input kinds each architecture accepts: the spectral inputs are the notes' ResNet-18 / Xception
# "DCT of raw images" experiments; F3Net and NPR compute their own frequency / residual input.
_SPECTRAL_OK = ("resnet18", "xception")
_REDUCIBLE = ("xception", "f3net")


class ModelConfig(Config):
    """Which detector to build (see the package docstring for each name)."""

    name: Literal["resnet18", "xception", "f3net", "npr"]
    input: Literal["raw", "dct", "dft"] = "raw"
    num_classes: int = Field(3, ge=2)  # 3: real/fake/edited, 2: binary
    # 32 px is the smallest input for which Xception's stride-32 exit flow still has a 1x1 map.
    image_size: int = Field(224, ge=32, le=1024)
    f3net_mode: Literal["fad", "lfs", "both", "mix"] = "mix"
    reduced: bool = False
    seg_head: bool = False
    mask_size: int = Field(224, ge=8, le=1024)
    weights: Optional[RepoPath] = None

    @model_validator(mode="after")
    def _capabilities(self) -> "ModelConfig":
        ensure_registered(self.name)
        if self.name not in MODEL_REGISTRY:
            raise ValueError(f"unknown model name {self.name!r}; registered: {registered_names()}")
        if self.name == "npr" and self.image_size % 2:
            raise ValueError(f"npr needs an even image_size (2x nearest down/up-sampling), got {self.image_size}")
        if self.input != "raw" and self.name not in _SPECTRAL_OK:
            raise ValueError(f"input {self.input!r} is only for {list(_SPECTRAL_OK)}; {self.name} builds its own input")
        if self.reduced and self.name not in _REDUCIBLE:
            raise ValueError(f"reduced (drop Xception blocks 4-7) applies to {list(_REDUCIBLE)}, not {self.name}")
        if self.seg_head and not (self.name == "f3net" and self.f3net_mode == "mix"):
            raise ValueError("seg_head (multi-task mask decoder) needs name: f3net with f3net_mode: mix")
        if self.weights is not None and self.weights.suffix not in (".pt", ".pth"):
            raise ValueError(f"weights must be a .pt/.pth state_dict file, got {self.weights}")
        return self


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: ``@register_model("resnet18") def build(cfg, spectrum_stats) -> nn.Module``."""

    def deco(factory: ModelFactory) -> ModelFactory:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        MODEL_REGISTRY[name] = factory
        return factory

    return deco


def build_model(cfg: ModelConfig, spectrum_stats: SpectrumStats | None = None) -> nn.Module:
    """Build the detector described by ``cfg`` (random init, or ``cfg.weights`` loaded on top).

    ``spectrum_stats`` is required exactly when ``cfg.input`` is "dct" or "dft": the agreed
    (mean, std) float arrays of shape (C, image_size, image_size) from
    ``data/spectra/<variant>/stats.npz`` (C = 1: grey, 3: per-channel; SpectrumTransform's default
    eps), or -- preferred, because it also carries the cache's colour mode and eps -- the path of
    that ``stats.npz`` or a ``SpectrumTransform.from_stats(path)``. The statistics become buffers
    of the model, so checkpoints carry them. Passing them for a raw-input model
    is an error rather than being ignored, so a misconfigured run cannot look like a spectral one.
    """
    if cfg.input == "raw" and spectrum_stats is not None:
        raise ValueError(f"{cfg.name}: spectrum_stats given but input is 'raw'")
    if cfg.input != "raw" and spectrum_stats is None:
        raise ValueError(f"{cfg.name}: input {cfg.input!r} needs spectrum_stats (data/spectra/<variant>/stats.npz)")
    ensure_registered(cfg.name)
    model = MODEL_REGISTRY[cfg.name](cfg, spectrum_stats)
    if cfg.weights is not None:
        from .common import load_weights

        load_weights(model, cfg.weights)
    return model
