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

import ast
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from dfpipe.core.config import Config

ModelFactory = Callable[["ModelConfig"], nn.Module]

MODEL_REGISTRY: dict[str, ModelFactory] = {}


@dataclass(frozen=True)
class Capabilities:
    """What a registered model accepts, declared by its module at registration.

    ``inputs``: input kinds (``raw``: the model's own input transform; ``dct``/``dft``: the notes'
    spectral inputs); ``reducible``: honours ``reduced`` (drop Xception blocks 4-7); ``seg_head``:
    has the multi-task mask decoder (``seg_head: true``); ``check``:
    further model-specific checks of a :class:`ModelConfig` (raise ``ValueError``); ``example``:
    :class:`ModelConfig` keys of a small instance (the keys it cannot build without, and demo-size
    knobs): the test that runs every registered model builds each with them.
    """

    inputs: tuple[str, ...] = ("raw",)
    reducible: bool = False
    seg_head: bool = False
    check: Callable[[ModelConfig], None] | None = None
    example: tuple[tuple[str, object], ...] = ()


MODEL_CAPABILITIES: dict[str, Capabilities] = {}


@functools.cache
def model_modules() -> dict[str, str]:
    """Model name -> the module of this package that registers it, read from the sources.

    The registry is the only list of models: a model file that decorates ``build_<name>`` is found
    here without being imported, so a stage imports only its own model's module (start-up), and
    adding a detector is one file.
    """
    out: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for name in _registered_in(path.read_text(encoding="utf-8")):
            if name in out:
                raise ValueError(f"model {name!r} is registered in {out[name]}.py and {path.name}")
            out[name] = path.stem
    return out


def _registered_in(source: str) -> list[str]:
    """Names of the module-level ``build_<name>`` functions decorated with ``@register_model(...)``."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("build_"):
            calls = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
            if any(isinstance(c, ast.Name) and c.id == "register_model" for c in calls):
                names.append(node.name.removeprefix("build_"))
    return names


def ensure_registered(name: str) -> None:
    """Import the module that registers ``name`` (every model module when no module does)."""
    if name in MODEL_REGISTRY:
        return
    modules = model_modules()
    for module in [modules[name]] if name in modules else sorted(set(modules.values())):
        importlib.import_module(f"{__package__}.{module}")


def model_capabilities(name: str) -> Capabilities:
    """What model ``name`` accepts (inputs, ``reduced``, ``seg_head``); a ``KeyError`` naming the
    registered models when there is no such model."""
    ensure_registered(name)
    if name not in MODEL_CAPABILITIES:
        raise KeyError(f"unknown model name {name!r}; registered: {registered_names()}")
    return MODEL_CAPABILITIES[name]


def registered_names() -> list[str]:
    """Every model name, importing all model modules (for listings and tests)."""
    ensure_registered("")
    return sorted(MODEL_REGISTRY)


class ModelConfig(Config):
    """Which detector to build (see the package docstring for each name).

    ``input``: ``raw`` pixels, or the log-spectrum ``dct`` / ``dft`` (:mod:`.spectrum`) with
    ``spectrum_color`` (``per_channel``: 3 maps, ``gray``: 1) and ``spectrum_eps``; its
    normalisation statistics are buffers of the model. ``width`` (demo only): channel multiplier of
    the ResNet-18 / Xception / F3Net backbones (1.0 = the published networks; the demo uses 0.5 /
    0.25 to fit its CPU budget, docs/results.md); width != 1 cannot load ImageNet weights.
    """

    name: str  # a registered model: the name of its build_<name> function (registered_names())
    # raw / dct / dft: images from the variant's shards; clip / lgrad: the features@ cache of that
    # encoder (dfpipe.features.encoders.FEATURE_INPUTS) read in place of images.
    input: Literal["raw", "dct", "dft", "clip", "lgrad"] = "raw"
    spectrum_color: Literal["per_channel", "gray"] = "per_channel"
    spectrum_eps: float = Field(1e-12, gt=0)  # Frank et al.'s log_scale eps
    num_classes: int = Field(3, ge=2)  # 3: real/fake/edited, 2: binary
    # 32 px is the smallest input for which Xception's stride-32 exit flow still has a 1x1 map.
    image_size: int = Field(224, ge=32, le=1024)
    f3net_mode: Literal["fad", "lfs", "both", "mix"] = "mix"
    reduced: bool = False
    seg_head: bool = False
    mask_size: int = Field(224, ge=8, le=1024)
    width: float = Field(1.0, gt=0, le=1)
    feature_dim: int = Field(0, ge=0)  # input size of a probe on cached features (clip_probe); 0 otherwise

    @model_validator(mode="after")
    def _capabilities(self) -> ModelConfig:
        ensure_registered(self.name)
        if self.name not in MODEL_REGISTRY:
            raise ValueError(f"unknown model name {self.name!r}; registered: {registered_names()}")
        caps = MODEL_CAPABILITIES[self.name]
        if self.input not in caps.inputs:
            spectral = sorted(n for n, c in MODEL_CAPABILITIES.items() if self.input in c.inputs)
            raise ValueError(f"input {self.input!r} is only for {spectral}; {self.name} builds its own input")
        if self.reduced and not caps.reducible:
            reducible = sorted(n for n, c in MODEL_CAPABILITIES.items() if c.reducible)
            raise ValueError(
                f"reduced (the demo's smaller backbone: Xception without blocks 4-7, LGrad on ResNet-18) "
                f"applies to {reducible}, not {self.name}"
            )
        if self.seg_head and not caps.seg_head:
            decoders = sorted(n for n, c in MODEL_CAPABILITIES.items() if c.seg_head)
            raise ValueError(f"seg_head (multi-task mask decoder) needs a model with one ({decoders}), not {self.name}")
        if caps.check is not None:
            caps.check(self)
        return self


def register_model(
    inputs: tuple[str, ...] = ("raw",),
    reducible: bool = False,
    seg_head: bool = False,
    check: Callable[[ModelConfig], None] | None = None,
    example: dict[str, object] | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator ``@register_model(inputs=...) def build_<name>(cfg) -> nn.Module``.

    The model name is the function name without ``build_`` (timm style); the arguments are the
    model's :class:`Capabilities`.
    """

    def deco(factory: ModelFactory) -> ModelFactory:
        name = factory.__name__.removeprefix("build_")
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        MODEL_REGISTRY[name] = factory
        MODEL_CAPABILITIES[name] = Capabilities(
            tuple(inputs), reducible, seg_head, check, tuple(sorted((example or {}).items()))
        )
        return factory

    return deco


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the detector described by ``cfg`` with random weights.

    Spectrum-input models start with identity normalisation buffers (mean 0, std 1); training
    fills them from the spectra stage's statistics, a checkpoint's state dict restores them.
    """
    ensure_registered(cfg.name)
    return MODEL_REGISTRY[cfg.name](cfg)
