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
from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

ModelFactory = Callable[["ModelConfig"], nn.Module]

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


@dataclass(frozen=True)
class ModelConfig:
    """Which detector to build (see the package docstring for each name).

    ``input``: ``raw`` pixels, or the log-spectrum ``dct`` / ``dft`` (:mod:`.spectrum`) with
    ``spectrum_color`` (``per_channel``: 3 maps, ``gray``: 1) and ``spectrum_eps``; its
    normalisation statistics are buffers of the model. ``width`` (demo only): channel multiplier of
    the ResNet-18 / Xception / F3Net backbones (1.0 = the published networks; the demo uses 0.25 to
    fit its CPU budget, documented in docs/results.md); ``width`` != 1 cannot load ImageNet weights.
    """

    name: Literal["resnet18", "xception", "f3net", "npr"]
    input: Literal["raw", "dct", "dft"] = "raw"
    spectrum_color: Literal["per_channel", "gray"] = "per_channel"
    spectrum_eps: float = 1e-12  # Frank et al.'s log_scale eps
    num_classes: int = 3
    image_size: int = 224
    f3net_mode: Literal["fad", "lfs", "both", "mix"] = "mix"
    reduced: bool = False
    seg_head: bool = False
    mask_size: int = 224
    width: float = 1.0

    def validate(self) -> None:
        ensure_registered(self.name)
        if self.name not in MODEL_REGISTRY:
            raise ValueError(f"unknown model name {self.name!r}; registered: {registered_names()}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (3: real/fake/edited, 2: binary), got {self.num_classes}")
        # 32 px is the smallest input for which Xception's stride-32 exit flow still has a 1x1 map.
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [32, 1024], got {self.image_size}")
        if self.name == "npr" and self.image_size % 2:
            raise ValueError(f"npr needs an even image_size (2x nearest down/up-sampling), got {self.image_size}")
        if self.input != "raw" and self.name not in _SPECTRAL_OK:
            raise ValueError(f"input {self.input!r} is only for {list(_SPECTRAL_OK)}; {self.name} builds its own input")
        if self.reduced and self.name not in _REDUCIBLE:
            raise ValueError(f"reduced (drop Xception blocks 4-7) applies to {list(_REDUCIBLE)}, not {self.name}")
        if self.seg_head and not (self.name == "f3net" and self.f3net_mode == "mix"):
            raise ValueError("seg_head (multi-task mask decoder) needs name: f3net with f3net_mode: mix")
        if not 8 <= self.mask_size <= 1024:
            raise ValueError(f"mask_size must be in [8, 1024], got {self.mask_size}")
        if not self.spectrum_eps > 0:
            raise ValueError(f"spectrum_eps must be > 0, got {self.spectrum_eps}")
        if not 0.0 < self.width <= 1.0:
            raise ValueError(f"width must be in (0, 1], got {self.width}")
        if self.width != 1.0 and self.name == "npr":
            raise ValueError("width applies to resnet18, xception and f3net, not npr")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: ``@register_model("resnet18") def build(cfg) -> nn.Module``."""

    def deco(factory: ModelFactory) -> ModelFactory:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        MODEL_REGISTRY[name] = factory
        return factory

    return deco


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the detector described by ``cfg`` with random weights.

    Spectrum-input models start with identity normalisation buffers (mean 0, std 1); training
    fills them from the spectra stage's statistics, a checkpoint's state dict restores them.
    """
    cfg.validate()
    ensure_registered(cfg.name)
    return MODEL_REGISTRY[cfg.name](cfg)
