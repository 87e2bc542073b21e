"""Model configuration and registry: a model's config -> ``nn.Module`` through :func:`build_model`.

Each model file registers ``build_<name>(cfg)`` with its own config class, a subclass of
:class:`ModelConfig` with ``name: Literal["<name>"]`` and the knobs only that model reads; the
registry is the only list of models. The training stage nests the union of those classes
(:func:`model_settings`, discriminated by ``name``) in its run config (``runs.<run>.model``), so an
unknown key is an error naming ``runs.<run>.model.<key>``; the evaluation stage rebuilds the same
module from the ``config`` stored in the checkpoint. Every registered model follows one forward
contract::

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
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field
from torch import nn

from dfpipe.core.config import Config, build

ModelFactory = Callable[[Any], nn.Module]  # build_<name>(cfg: <its config class>)

MODEL_REGISTRY: dict[str, ModelFactory] = {}


@dataclass(frozen=True)
class Capabilities:
    """What a registered model accepts, read from its config class at registration.

    ``config``: the model's config class; ``inputs``: the input kinds its ``input`` field allows
    (``raw``: the model's own input transform; ``dct``/``dft``: the spectral inputs; ``clip``/``lgrad``:
    cached features); ``reducible``: it has a ``reduced`` knob; ``seg_head``: it has the multi-task
    mask decoder; ``example``: config keys of a small instance (the keys it cannot build without,
    and demo-size knobs): the test that runs every registered model builds each with them.
    """

    config: type[ModelConfig]
    inputs: tuple[str, ...]
    reducible: bool
    seg_head: bool
    example: tuple[tuple[str, object], ...] = ()


MODEL_CAPABILITIES: dict[str, Capabilities] = {}


@functools.cache
def model_modules() -> dict[str, str]:
    """Model name -> the module of this package that registers it, read from the sources.

    The registry is the only list of models: a model file that decorates ``build_<name>`` is found
    here, with no hand-kept list of modules, so adding a detector is one file.
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
    """Import the module that registers ``name`` (every model module for a name no module has)."""
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


#: Where a model's input comes from: raw / dct / dft: images from the variant's shards; clip /
#: lgrad: the features@ cache of that encoder (dfpipe.features.encoders.FEATURE_INPUTS).
InputKind = Literal["raw", "dct", "dft", "clip", "lgrad"]


class ModelConfig(Config):
    """The keys every detector has; a registered model's config subclasses it with its own knobs.

    ``num_classes`` 3 (real / synthetic / edited) or 2 (real / fake); ``image_size``: the square
    size the model resizes its input to on the device.
    """

    name: str  # the registered model: the name of its build_<name> function (registered_names())
    input: InputKind = "raw"
    num_classes: int = Field(3, ge=2)
    # 32 px is the smallest input for which Xception's stride-32 exit flow still has a 1x1 map.
    image_size: int = Field(224, ge=32, le=1024)

    @property
    def mask_output(self) -> bool:
        """Whether the model also outputs a manipulation mask (the multi-task head)."""
        return False


class SpectrumInputConfig(ModelConfig):
    """A model that reads raw pixels or a log-spectrum (:mod:`.spectrum`): ``input`` ``dct`` /
    ``dft`` with ``spectrum_color`` (``per_channel``: 3 maps, ``gray``: 1) and ``spectrum_eps``; the
    spectrum's normalisation statistics are buffers of the model."""

    input: Literal["raw", "dct", "dft"] = "raw"
    spectrum_color: Literal["per_channel", "gray"] = "per_channel"
    spectrum_eps: float = Field(1e-12, gt=0)  # Frank et al.'s log_scale eps


#: ``width`` (demo only): channel multiplier of the ResNet-18 / Xception / F3Net backbones (1.0 =
#: the published networks; the demo uses 0.5 / 0.25 to fit its CPU budget, docs/results.md); a
#: width other than 1 cannot load ImageNet weights.
Width = Annotated[float, Field(gt=0, le=1)]


def register_model(
    config: type[ModelConfig], example: dict[str, object] | None = None
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator ``@register_model(MyConfig) def build_<name>(cfg: MyConfig) -> nn.Module``.

    The model name is the function name without ``build_`` (timm style); ``config`` must declare
    ``name: Literal["<name>"]``. ``example``: see :class:`Capabilities`.
    """

    def deco(factory: ModelFactory) -> ModelFactory:
        name = factory.__name__.removeprefix("build_")
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if get_args(config.model_fields["name"].annotation) != (name,):
            raise ValueError(f"{config.__name__}.name must be Literal[{name!r}] (the model's name)")
        fields = config.model_fields
        MODEL_REGISTRY[name] = factory
        MODEL_CAPABILITIES[name] = Capabilities(
            config,
            tuple(get_args(fields["input"].annotation)),
            "reduced" in fields,
            "seg_head" in fields,
            tuple(sorted((example or {}).items())),
        )
        return factory

    return deco


@functools.cache
def model_settings() -> Any:
    """The type of ``runs.<run>.model``: the union of every registered model's config class,
    discriminated by ``name`` (imports every model module: about 20 ms once torch is loaded)."""
    registered_names()
    configs = tuple(MODEL_CAPABILITIES[n].config for n in sorted(MODEL_CAPABILITIES))
    return Annotated[Union[configs], Field(discriminator="name")]  # noqa: UP007 (a runtime tuple of types)


def model_config(data: dict[str, Any], where: str = "model") -> ModelConfig:
    """The registered model's config built from ``data`` (a ``{name, ...}`` mapping, e.g. a
    checkpoint's ``config["model"]``); a :class:`~dfpipe.core.config.ConfigError` naming ``where``."""
    return build(model_settings(), data, where=where)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the detector described by ``cfg`` with random weights.

    Spectrum-input models start with identity normalisation buffers (mean 0, std 1); training
    fills them from the spectra stage's statistics, a checkpoint's state dict restores them.
    """
    ensure_registered(cfg.name)
    return MODEL_REGISTRY[cfg.name](cfg)
