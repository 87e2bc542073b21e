"""Run and shared training settings (``runs.<run>``, ``train:``) as typed, frozen configs.

Kept apart from :mod:`dfpipe.training.train` so that :mod:`dfpipe.training.checkpoint` (which
rebuilds a :class:`RunConfig` from a checkpoint) and the evaluation stage need not import the fit
loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dfpipe.core.config import ConfigError, build
from dfpipe.models import ModelConfig
from dfpipe.training.losses import LossConfig


@dataclass(frozen=True)
class RunConfig:
    """One training run (``runs.<run>``). ``lr`` and ``batch_size`` are the notes' values.

    ``seeds``: every seed is trained in the same stage (``models/<run>/seed<s>.pt``); a seed fixes
    initialisation, loader order, flips and dropout. ``warmup_epochs``: linear warm-up from 0 over
    that many epochs (fractions allowed), then the ``schedule`` (``cosine`` to 0 at the end,
    ``step``: times ``gamma`` every ``step_size`` epochs, ``none``: constant).
    ``max_steps_per_epoch`` > 0 caps batches per epoch (the demo). ``eval_batch_size`` 0 means
    ``batch_size``. ``bn_recalibration_images`` > 0: precise BN, BatchNorm statistics re-estimated
    on ``min(ceil(images / batch_size), batches per epoch)`` training batches before each validation
    (:func:`dfpipe.training.engine.recalibrate_bn`; detectron2's PreciseBN default is 200 batches,
    Wu & Johnson 2021). ``balance``: class-balanced sampling of the training split.
    ``init``: ``scratch`` (random) or the key of a pretrained file ``<train.pretrained_dir>/<key>.pth``.
    """

    model: ModelConfig
    variant: str
    lr: float
    batch_size: int
    epochs: int
    seeds: tuple[int, ...] = (0,)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "step", "none"] = "none"
    warmup_epochs: float = 0.0
    step_size: int = 1
    gamma: float = 0.1
    balance: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    max_steps_per_epoch: int = 0
    grad_clip: float = 0.0
    flip: bool = True
    eval_batch_size: int = 0
    bn_recalibration_images: int = 0
    init: str = "scratch"

    def validate(self) -> None:
        if not self.variant or "/" in self.variant or self.variant in (".", ".."):
            raise ValueError(f"variant must be a plain variant name, got {self.variant!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative ints, got {list(self.seeds)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name in ("weight_decay", "warmup_epochs", "max_steps_per_epoch", "grad_clip", "eval_batch_size",
                     "bn_recalibration_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if self.step_size < 1 or not 0 < self.gamma <= 1:
            raise ValueError(f"step_size must be >= 1 and gamma in (0, 1], got {self.step_size}, {self.gamma}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.loss.uses_masks and not self.model.seg_head:
            raise ValueError("loss.w_bce/w_dice > 0 need model.seg_head: true")
        cw = self.loss.class_weights
        if cw is not None and len(cw) != self.model.num_classes:
            raise ValueError(f"loss.class_weights has {len(cw)} entries for {self.model.num_classes} classes")
        if self.loss.uses_masks and self.loss.mask_on == "edited" and self.model.num_classes != 3:
            raise ValueError("loss.mask_on: edited needs the 3-class labels (model.num_classes: 3)")
        if not self.init or "/" in self.init or self.init in (".", ".."):
            raise ValueError(f"init must be 'scratch' or a pretrained key (a file name stem), got {self.init!r}")

    def bn_batches(self, batches_per_epoch: int) -> int:
        """Precise-BN batches: ``min(ceil(bn_recalibration_images / batch_size), batches_per_epoch)``."""
        return min(math.ceil(self.bn_recalibration_images / self.batch_size), batches_per_epoch)


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by all runs (``train:``). ``amp``: ``auto`` = bf16 on CUDA, off on CPU.

    ``threads`` > 0 sets ``torch.set_num_threads`` (0: torch's default). ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (warn-only for ops without a deterministic kernel).
    ``scratch_dir``: resume state of unfinished seeds; ``log_dir``: timing logs (both git- and
    DVC-ignored, never DVC outputs). ``pretrained_dir``: ``<key>.pth`` files named by ``init``.
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    deterministic: bool = True
    threads: int = 0
    log_every: int = 50
    progress: bool = True
    variants_dir: Path = Path("data/variants")
    spectra_dir: Path = Path("data/spectra")
    models_dir: Path = Path("models")
    metrics_dir: Path = Path("metrics/train")
    scratch_dir: Path = Path(".scratch/train")
    log_dir: Path = Path(".scratch/logs")
    pretrained_dir: Path = Path("models/pretrained")

    def validate(self) -> None:
        for name in ("num_workers", "threads", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def load_runs(params: dict) -> tuple[TrainConfig, dict[str, RunConfig]]:
    """``train:`` and ``runs:`` of a loaded params.yaml, built strictly."""
    for key in ("train", "runs"):
        if key not in params:
            raise ConfigError(f"params.yaml: missing section '{key}'")
    train_cfg = build(TrainConfig, params["train"], where="train")
    if not isinstance(params["runs"], dict):
        raise ConfigError("runs: expected a mapping of run name -> run config")
    runs = {name: build(RunConfig, cfg, where=f"runs.{name}") for name, cfg in sorted(params["runs"].items())}
    return train_cfg, runs
