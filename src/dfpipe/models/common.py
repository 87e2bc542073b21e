"""Pieces shared by every detector: input transforms, resizing, width scaling, local weight loading."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ModelConfig, SpectrumInputConfig
from .spectrum import Color, Kind, SpectrumTransform

log = logging.getLogger(__name__)

# torchvision ImageNet statistics (ResNet family, and NPR whose authors normalise the same way).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inception/Keras convention used by Xception's ImageNet weights and by the F3Net code ([-1, 1] input).
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size); bilinear, antialiased when shrinking; no-op when equal."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected a square (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)


class PixelInput(nn.Module):
    """(B, 3, H, W) in [0, 1] -> resized to ``size`` and normalised channel-wise: (x - mean) / std."""

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor

    def __init__(self, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.size = size
        # Constants of the architecture, not learned: non-persistent so state_dicts stay portable.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"expected RGB input (B, 3, H, W), got shape {tuple(x.shape)}")
        return self.normalise(resize_square(x, self.size))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std at the input's own size (no resize)."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class SpectrumInput(nn.Module):
    """(B, 3, H, W) in [0, 1] -> resized to ``size`` -> normalised log-spectrum (B, C, size, size).

    ``self.spectrum`` is a :class:`~dfpipe.models.spectrum.SpectrumTransform` whose statistics are
    state-dict buffers (see :mod:`dfpipe.models.spectrum`).
    """

    def __init__(self, size: int, kind: Kind, color: Color, eps: float):
        super().__init__()
        self.size = size
        self.spectrum = SpectrumTransform(kind, color, eps, size)
        self.channels = self.spectrum.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectrum(resize_square(x, self.size))


def make_input(cfg: ModelConfig, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[nn.Module, int]:
    """Input transform for a model config and the channel count it produces: resized, normalised
    pixels for ``input: raw``, the log-spectrum for a :class:`SpectrumInputConfig`'s dct / dft."""
    if cfg.input == "raw":
        return PixelInput(cfg.image_size, mean, std), 3
    if not isinstance(cfg, SpectrumInputConfig):
        raise ValueError(f"{cfg.name} has no input transform for input {cfg.input!r}")
    transform = SpectrumInput(cfg.image_size, cfg.input, cfg.spectrum_color, cfg.spectrum_eps)
    return transform, transform.channels


def spectrum_transform(model: nn.Module) -> SpectrumTransform | None:
    """The model's spectrum input transform (to fill its statistics), or None for other inputs."""
    found = [m for m in model.modules() if isinstance(m, SpectrumTransform)]
    return found[0] if len(found) == 1 else None


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to a multiple of 8 (at least 8): the demo's narrower nets."""
    return channels if width == 1.0 else max(8, int(round(channels * width / 8)) * 8)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ------------------------------------------------------------------------------------------------
# Local pretrained weights


@dataclass
class LoadReport:
    """What :func:`load_weights` did: per target module, keys loaded / missing / skipped."""

    path: Path
    loaded: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    @property
    def total_loaded(self) -> int:
        return sum(self.loaded.values())


def _adapt(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """Fit ``src`` to ``dst``'s shape where the ImageNet -> detector mapping is standard, else None.

    * 2-D pointwise weights of the original Keras-ported Xception file -> 4-D (C_out, C_in, 1, 1).
    * an RGB first conv (C_out, 3, k, k) -> (C_out, 3n, k, k): the RGB kernel repeated n times and
      divided by n, as the F3Net authors initialise the 12-channel FAD / 6-channel LFS convs.
    """
    if src.shape == dst.shape:
        return src
    if src.ndim == 2 and dst.ndim == 4 and dst.shape[2:] == (1, 1) and src.shape == dst.shape[:2]:
        return src[:, :, None, None]
    if (
        src.ndim == 4
        and dst.ndim == 4
        and src.shape[1] == 3
        and dst.shape[1] % 3 == 0
        and src.shape[0] == dst.shape[0]
        and src.shape[2:] == dst.shape[2:]
    ):
        n = dst.shape[1] // 3
        return src.repeat(1, n, 1, 1) / n
    return None


def _match(state: dict[str, torch.Tensor], target: nn.Module) -> tuple[dict, list[str], list[str]]:
    own = target.state_dict()
    matched, mismatch, adapted = {}, [], []
    for key, value in state.items():
        if key not in own:
            continue
        fitted = _adapt(value, own[key])
        if fitted is None:
            mismatch.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            matched[key] = fitted
            if fitted is not value:
                adapted.append(key)
    return matched, mismatch, adapted


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state_dict (or a pipeline checkpoint's ``"model"`` entry) with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; name the file in all of them
        raise ValueError(f"{path}: cannot read as a weights_only torch file: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ValueError(f"{path}: expected a state_dict (str -> tensor) or a checkpoint with a 'model' entry")
    return obj


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Load local weights into ``model`` non-strictly and report exactly what happened.

    The file is first matched against the whole model (a checkpoint of the same detector). If no
    key matches, it is treated as backbone weights (e.g. torchvision ResNet / timm Xception ImageNet
    weights) and loaded into every module of ``model.pretrained_targets()`` (both F3Net streams get
    the same Xception weights, as in the F3Net code). Tensors whose shape cannot be fitted (e.g. a
    1000-class fc) are skipped and reported. Raises ``ValueError`` naming the file when nothing matched.
    """
    path = Path(path)
    state = read_state_dict(path)
    report = LoadReport(path=path)
    candidates: Iterable[tuple[str, nn.Module]] = [("model", model)]
    matched, mismatch, adapted = _match(state, model)
    if not matched:
        targets: dict[str, nn.Module] = getattr(model, "pretrained_targets", lambda: {})()
        candidates = list(targets.items())
    used: set[str] = set()
    for name, target in candidates:
        matched, mismatch, adapted = _match(state, target)
        if not matched:
            continue
        result = target.load_state_dict(matched, strict=False)
        report.loaded[name] = len(matched)
        report.missing[name] = sorted(result.missing_keys)
        report.shape_mismatch += [f"{name}.{m}" for m in mismatch]
        report.adapted += [f"{name}.{a}" for a in adapted]
        used.update(matched)
        used.update(m.split(":")[0] for m in mismatch)
    if not report.loaded:
        sample_file = sorted(state)[:5]
        sample_model = sorted(model.state_dict())[:5]
        raise ValueError(
            f"{path}: no tensor matched the model ({type(model).__name__}); file keys e.g. {sample_file}, "
            f"model keys e.g. {sample_model}"
        )
    report.unexpected = sorted(set(state) - used)
    log.info("%s: loaded %s tensors into %s", path, report.total_loaded, sorted(report.loaded))
    for name, keys in report.missing.items():
        if keys:
            log.warning("%s: %d keys of %s not in the file (kept at init), e.g. %s", path, len(keys), name, keys[:5])
    if report.unexpected:
        log.warning("%s: %d file keys unused, e.g. %s", path, len(report.unexpected), report.unexpected[:5])
    if report.shape_mismatch:
        log.warning(
            "%s: skipped %d tensors of another shape: %s", path, len(report.shape_mismatch), report.shape_mismatch[:5]
        )
    return report


class ClassifierHead(nn.Module):
    """ReLU-free head: global average pool -> optional dropout -> linear. (B, C, h, w) -> (B, K)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        pooled = feats.mean(dim=(2, 3)) if feats.ndim == 4 else feats
        return self.fc(self.dropout(pooled))
