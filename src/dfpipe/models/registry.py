"""Model configuration and registry: a model's config -> ``nn.Module`` through :func:`build_model`.

Each model file registers ``build_<name>(cfg)`` with its own config class, a subclass of
:class:`ModelConfig` with ``name: Literal["<name>"]`` and the knobs only that model reads; the
registry is the only list of models. The training stage nests the union of those classes
(:func:`model_settings`, discriminated by ``name``) in its run config (``runs.<run>.model``), so an
unknown key is an error naming ``runs.<run>.model.<key>``; the evaluation stage rebuilds the same
module from the ``config`` stored in the checkpoint. Every registered model follows one forward
contract::

    forward(x: (B, 3, H, W) float in [0, 1]) -> {"logits": (B, num_classes),  # (B, 1): head sigmoid
                                                 "mask": (B, 1, mask_size, mask_size)  # seg_head only
                                                 "relation": ((B, P_k, P_k), ...)  # lrl only
                                                }

``relation`` (LRL's patch similarities, :mod:`.lrl`): one map per patch grid, ``P_k = k^2`` patches,
entries in [0, 1]; only the training loss (``w_relation``) reads it. Training and evaluation read
``logits`` (and ``mask`` where present) and ignore any other key.

A binary detector whose paper trains one logit under BCE takes ``head: sigmoid``
(:class:`~.class_head.BinaryHeadConfig`); :func:`~.class_head.class_probs` turns either head's
logits into ``(B, num_classes)`` class probabilities.

Any square H = W is accepted: the model resizes to ``image_size`` on the device and applies its own
input transform, so checkpoints are self-contained.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import Field, model_validator
from torch import nn

from dfpipe.core.config import Config, build

from . import geometry

#: The paper-comparable settings, in the order tables and docs show them.
SETTING_KEYS = (
    "init",
    "network",
    "image_size",
    "train_input",
    "test_input",
    "encoder",
    "encoder_size",
    "activation",
    "gradients",
    "augment",
    "optimizer",
    "lr",
    "batch_size",
    "epochs",
    "schedule",
    "head",
)


@dataclass(frozen=True)
class PaperRecord:
    """A paper's training and input settings (:data:`SETTING_KEYS` -> value) and where each is
    stated (``sources``: key -> section / code file; ``citation`` for all)."""

    citation: str
    settings: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.settings) - set(SETTING_KEYS))
        if unknown:
            raise ValueError(f"paper record: unknown settings {unknown}; known: {list(SETTING_KEYS)}")


ModelFactory = Callable[[Any], nn.Module]  # build_<name>(cfg: <its config class>)

MODEL_REGISTRY: dict[str, ModelFactory] = {}


@dataclass(frozen=True)
class Capabilities:
    """A registered model's config class and ``example``: config keys of a small instance (the keys
    it cannot build without, and demo-size knobs), which the test that runs every registered model
    builds each with. Everything else a model accepts is its config class's fields. ``paper``: what
    the detector's paper ran (:class:`PaperRecord`, checked by :mod:`dfpipe.models.papers`), which results tables and
    the full-scale profile are checked against."""

    config: type[ModelConfig]
    example: tuple[tuple[str, object], ...] = ()
    paper: PaperRecord | None = None  # the published settings; None: no paper
    #: the paper a model follows whose training settings no record states (none could be checked):
    #: tables say so instead of calling the model the group's own
    cites: str = ""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input kinds the model's ``input`` field allows (``raw``: its own input transform;
        ``dct``/``dft``: the spectral inputs; ``clip``/``lgrad``: cached features)."""
        return tuple(get_args(self.config.model_fields["input"].annotation))


MODEL_CAPABILITIES: dict[str, Capabilities] = {}


@functools.cache
def _register_all() -> None:
    """Import every module of this package once: each model file registers its models on import,
    so the registry is the only list of models and adding a detector is one file. (The union of
    config classes in every run config needs them all anyway: about 20 ms once torch is loaded.)"""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")


def model_capabilities(name: str) -> Capabilities:
    """Model ``name``'s config class and example; a ``KeyError`` naming the registered models when
    there is no such model."""
    _register_all()
    if name not in MODEL_CAPABILITIES:
        raise KeyError(f"unknown model name {name!r}; registered: {registered_names()}")
    return MODEL_CAPABILITIES[name]


def paper_record(name: str) -> PaperRecord | None:
    """Model ``name``'s paper record (checked by :mod:`.papers`); None for a model without a paper (the
    group's own ResNet-18)."""
    return model_capabilities(name).paper


def registered_names() -> list[str]:
    """Every model name, importing all model modules (for listings and tests)."""
    _register_all()
    return sorted(MODEL_REGISTRY)


#: Where a model's input comes from: raw / dct / dft: images from the variant's shards; clip /
#: lgrad: the features@ cache of that encoder (dfpipe.features.encoders.FEATURE_INPUTS).
InputKind = Literal["raw", "dct", "dft", "clip", "lgrad"]


class ModelConfig(Config):
    """The keys every detector has; a registered model's config subclasses it with its own knobs.

    ``num_classes`` 3 (real / synthetic / edited) or 2 (real / fake); ``image_size``: the square
    size the model resizes its input to on the device. Input geometry (:mod:`.geometry`, raw pixel
    inputs only): ``resize_to`` (0: the stored crop as is) then ``train_input`` ``resize`` |
    ``random_crop`` (of ``image_size``) and ``test_input`` ``resize`` | ``center_crop`` | ``full``
    (the whole ``resize_to`` image, for a model whose network takes any size: ``full_input_ok``).
    The defaults (resize the whole crop) are left out of the dumped config, so checkpoints written
    before these keys existed keep their bytes.
    """

    #: Whether the network accepts inputs of any side (test_input: full), e.g. NPR's fully
    #: convolutional classifier; models with size-bound layers (F3Net's FAD) do not.
    full_input_ok: ClassVar[bool] = False

    name: str  # the registered model: the name of its build_<name> function (registered_names())
    input: InputKind = "raw"
    num_classes: int = Field(3, ge=2)
    # 32 px is the smallest input for which Xception's stride-32 exit flow still has a 1x1 map.
    image_size: int = Field(224, ge=32, le=1024)
    train_input: Literal["resize", "random_crop"] = Field("resize", exclude_if=lambda v: v == "resize")
    test_input: Literal["resize", "center_crop", "full"] = Field("resize", exclude_if=lambda v: v == "resize")
    resize_to: int = Field(0, ge=0, le=2048, exclude_if=lambda v: v == 0)

    @property
    def mask_output(self) -> bool:
        """Whether the model also outputs a manipulation mask (the multi-task head)."""
        return False

    @property
    def relation_output(self) -> bool:
        """Whether the model also outputs patch-similarity maps (``relation``, :mod:`.lrl`)."""
        return False

    @model_validator(mode="after")
    def _geometry(self) -> ModelConfig:
        if geometry.is_default(self):
            return self
        if self.input != "raw":
            raise ValueError(f"input geometry (train_input/test_input/resize_to) needs raw input, not {self.input!r}")
        if self.mask_output or self.relation_output:
            raise ValueError("input geometry other than resize would misalign the mask targets (seg_head, lrl)")
        if self.test_input == "full" and not self.full_input_ok:
            raise ValueError(f"test_input: full needs a network that takes any input size; {self.name} does not")
        if self.resize_to and self.resize_to < self.image_size and "resize" not in (self.train_input, self.test_input):
            raise ValueError(f"resize_to ({self.resize_to}) is smaller than the {self.image_size} px crop")
        return self


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
    config: type[ModelConfig],
    example: dict[str, object] | None = None,
    paper: PaperRecord | None = None,
    cites: str = "",
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator ``@register_model(MyConfig) def build_<name>(cfg: MyConfig) -> nn.Module``.

    The model name is the function name without ``build_`` (timm style); ``config`` must declare
    ``name: Literal["<name>"]``. ``example``, ``paper``, ``cites``: see :class:`Capabilities`.
    """

    def deco(factory: ModelFactory) -> ModelFactory:
        name = factory.__name__.removeprefix("build_")
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if get_args(config.model_fields["name"].annotation) != (name,):
            raise ValueError(f"{config.__name__}.name must be Literal[{name!r}] (the model's name)")
        MODEL_REGISTRY[name] = factory
        MODEL_CAPABILITIES[name] = Capabilities(config, tuple(sorted((example or {}).items())), paper, cites)
        return factory

    return deco


@functools.cache
def model_settings() -> Any:
    """The type of ``runs.<run>.model``: the union of every registered model's config class,
    discriminated by ``name`` (imports every model module: about 20 ms once torch is loaded)."""
    _register_all()
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
    _register_all()
    return geometry.attach(MODEL_REGISTRY[cfg.name](cfg), cfg)
