"""Input geometry of a detector: how a stored face crop becomes the network's input, in training
(resize, or resize then a random crop) and in testing (resize, centre crop, or the full image).

The papers differ here and it matters: CNNDetection (Wang et al. 2020) trains on random 224 px crops
of 256 px images with no resize and tests on the centre crop; NPR (Tan et al. 2024) resizes to 256,
trains on random 224 crops and tests on the whole 256 px image; resizing instead (the demo's and the
default geometry) resamples the pixel grid and smears the 2x up-sampling trace NPR reads.

The geometry is part of the model config (``train_input``, ``test_input``, ``resize_to``), so a
checkpoint is self-contained, and runs as a forward pre-hook of the built model (no weights, no
module names changed); train or test geometry follows the model's ``training`` flag. Random crop
offsets come from torch's global generator, which training seeds per epoch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TRAIN_INPUTS = ("resize", "random_crop")
TEST_INPUTS = ("resize", "center_crop", "full")


def resize_to_side(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, side, side): bilinear, antialiased when shrinking, no-op when equal."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=x.shape[-1] > side)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window (torchvision's CenterCrop offsets: round((H - size) / 2))."""
    _check_side(x, size)
    top, left = int(round((x.shape[-2] - size) / 2.0)), int(round((x.shape[-1] - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly placed ``size`` x ``size`` window per image (torchvision's RandomCrop, per item)."""
    _check_side(x, size)
    h, w = x.shape[-2], x.shape[-1]
    tops = torch.randint(0, h - size + 1, (x.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (x.shape[0],), generator=generator).tolist()
    return torch.stack([x[i, :, t : t + size, s : s + size] for i, (t, s) in enumerate(zip(tops, lefts))])


def _check_side(x: torch.Tensor, size: int) -> None:
    if x.shape[-1] < size or x.shape[-2] < size:
        raise ValueError(
            f"a {size} px crop needs inputs of at least {size} px, got {tuple(x.shape[-2:])} "
            "(store larger crops: preprocess.size, or resize first: model.resize_to)"
        )


def apply_geometry(x: torch.Tensor, training: bool, train_input: str, test_input: str, resize_to: int, size: int):
    """The network input of a batch ``x``: resized to ``resize_to`` (0: as stored), then the train
    geometry (``training``) or the test geometry; ``resize`` leaves the model's own resize to
    ``size`` (its input transform) in charge."""
    if resize_to:
        x = resize_to_side(x, resize_to)
    mode = train_input if training else test_input
    if mode == "random_crop":
        return random_crop(x, size)
    if mode == "center_crop":
        return center_crop(x, size)
    return x


def is_default(cfg: Any) -> bool:
    """Whether ``cfg`` (a model config) keeps the default geometry: resize the whole crop."""
    return cfg.train_input == "resize" and cfg.test_input == "resize" and not cfg.resize_to


def attach(model: nn.Module, cfg: Any) -> nn.Module:
    """Register ``cfg``'s geometry as a forward pre-hook of ``model`` (nothing for the default)."""
    if is_default(cfg):
        return model
    train_input, test_input, resize_to, size = cfg.train_input, cfg.test_input, cfg.resize_to, cfg.image_size

    def hook(module: nn.Module, args: tuple) -> tuple:
        x = apply_geometry(args[0], module.training, train_input, test_input, resize_to, size)
        return (x, *args[1:])

    model.register_forward_pre_hook(hook)
    return model
