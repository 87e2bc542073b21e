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


@dataclass(frozen=True)
class Capabilities:
    """What a registered model accepts, declared by its module at registration.

    ``inputs``: input kinds (``raw``: the model's own input transform; ``dct``/``dft``: the notes'
    spectral inputs); ``reducible``: honours ``reduced`` (drop Xception blocks 4-7); ``seg_head``:
    has the multi-task mask decoder (``seg_head: true``); ``check``:
    further model-specific checks of a :class:`ModelConfig` (raise ``ValueError``).
    """

    inputs: tuple[str, ...] = ("raw",)
    reducible: bool = False
    seg_head: bool = False
    check: Optional[Callable[["ModelConfig"], None]] = None


MODEL_CAPABILITIES: dict[str, Capabilities] = {}

#: The modules of this package that register models, in import order. Imported on first use (a
#: ResNet-18 stage then skips the ~2 s of importing timm for Xception / F3Net); the names come from
#: the decorated functions, so each model name is written once.
MODEL_MODULES = ("resnet", "npr", "cnndetection", "probe", "lgrad", "xception", "f3net")


def ensure_registered(name: str) -> None:
    """Import model modules until ``name`` is registered (all of them if it never is)."""
    for module in MODEL_MODULES:
        if name in MODEL_REGISTRY:
            return
        importlib.import_module(f"{__package__}.{module}")


def registered_names() -> list[str]:
    """Every model name, importing all model modules (for listings and tests)."""
    ensure_registered("")
    return sorted(MODEL_REGISTRY)


class ModelConfig(Config):
    """Which detector to build (see the package docstring for each name)."""

    name: str  # a registered model: the name of its build_<name> function (registered_names())
    # raw / dct / dft: images from the variant's shards; clip / lgrad: the features@ cache of that
    # encoder (dfpipe.features.encoders.FEATURE_INPUTS) read in place of images.
    input: Literal["raw", "dct", "dft", "clip", "lgrad"] = "raw"
    num_classes: int = Field(3, ge=2)  # 3: real/fake/edited, 2: binary
    # 32 px is the smallest input for which Xception's stride-32 exit flow still has a 1x1 map.
    image_size: int = Field(224, ge=32, le=1024)
    f3net_mode: Literal["fad", "lfs", "both", "mix"] = "mix"
    reduced: bool = False
    seg_head: bool = False
    mask_size: int = Field(224, ge=8, le=1024)
    weights: Optional[RepoPath] = None
    feature_dim: int = Field(0, ge=0)  # input size of a probe on cached features (clip_probe); 0 otherwise

    @model_validator(mode="after")
    def _capabilities(self) -> "ModelConfig":
        ensure_registered(self.name)
        if self.name not in MODEL_REGISTRY:
            raise ValueError(f"unknown model name {self.name!r}; registered: {registered_names()}")
        caps = MODEL_CAPABILITIES[self.name]
        if self.input not in caps.inputs:
            spectral = sorted(n for n, c in MODEL_CAPABILITIES.items() if self.input in c.inputs)
            raise ValueError(f"input {self.input!r} is only for {spectral}; {self.name} builds its own input")
        if self.reduced and not caps.reducible:
            reducible = sorted(n for n, c in MODEL_CAPABILITIES.items() if c.reducible)
            raise ValueError(f"reduced (drop Xception blocks 4-7) applies to {reducible}, not {self.name}")
        if self.seg_head and not caps.seg_head:
            decoders = sorted(n for n, c in MODEL_CAPABILITIES.items() if c.seg_head)
            raise ValueError(f"seg_head (multi-task mask decoder) needs a model with one ({decoders}), not {self.name}")
        if caps.check is not None:
            caps.check(self)
        if self.weights is not None and self.weights.suffix not in (".pt", ".pth"):
            raise ValueError(f"weights must be a .pt/.pth state_dict file, got {self.weights}")
        return self


def register_model(inputs: tuple[str, ...] = ("raw",), reducible: bool = False, seg_head: bool = False,
                   check: Optional[Callable[[ModelConfig], None]] = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator ``@register_model(inputs=...) def build_<name>(cfg, spectrum_stats) -> nn.Module``.

    The model name is the function name without ``build_`` (timm style); the arguments are the
    model's :class:`Capabilities`.
    """

    def deco(factory: ModelFactory) -> ModelFactory:
        name = factory.__name__.removeprefix("build_")
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        MODEL_REGISTRY[name] = factory
        MODEL_CAPABILITIES[name] = Capabilities(tuple(inputs), reducible, seg_head, check)
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
    if cfg.input not in ("dct", "dft") and spectrum_stats is not None:
        raise ValueError(f"{cfg.name}: spectrum_stats given but input is {cfg.input!r}")
    if cfg.input in ("dct", "dft") and spectrum_stats is None:
        raise ValueError(f"{cfg.name}: input {cfg.input!r} needs spectrum_stats (data/spectra/<variant>/stats.npz)")
    ensure_registered(cfg.name)
    model = MODEL_REGISTRY[cfg.name](cfg, spectrum_stats)
    if cfg.weights is not None:
        from .common import load_weights

        load_weights(model, cfg.weights)
    return model
