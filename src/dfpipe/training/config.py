"""Run and shared training settings (``runs.<run>`` over ``run_defaults``, ``train:``) as typed configs.

Kept apart from :mod:`dfpipe.training.train` so that :mod:`dfpipe.training.checkpoint` (which
rebuilds a :class:`RunConfig` from a checkpoint) and the evaluation stage need not import the fit
loop.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from dfpipe.core.config import Config, ConfigError, PlainName, RepoPath, SafeName, build, merged_entry, section_data
from dfpipe.models import ModelConfig, model_settings
from dfpipe.training.losses import LossConfig

if TYPE_CHECKING:
    ModelSettings = ModelConfig
else:  # the union of every registered model's config class, discriminated by its name
    ModelSettings = model_settings()


def stopping_label(patience: int | None) -> str:
    """How a detector's training ends, as a results row shows it: every detector in a table that
    compares budgets should say the same (``runs.<run>.patience``, ``frank.<name>.patience``)."""
    return "fixed epochs" if patience is None else f"val early stop, patience {patience}"


class RunConfig(Config):
    """One training run (``runs.<run>`` merged over ``run_defaults``). ``lr`` and ``batch_size`` are the notes' values.

    ``seeds``: every seed is trained in the same stage (one ``models/<run>/seed<s>.pt`` each); a seed fixes
    initialisation, loader order, flips and dropout. ``warmup_epochs``: linear warm-up from 0 over
    that many epochs (fractions allowed), then the ``schedule`` (``cosine`` to 0 at the end,
    ``step``: times ``gamma`` every ``step_size`` epochs, ``plateau``: times ``gamma`` once the val
    macro-F1 has not improved for ``step_size`` epochs, training ending when the rate falls below
    ``min_lr`` (Wang et al. 2020), ``none``: constant).
    ``max_steps_per_epoch`` > 0 caps batches per epoch (the demo). ``patience``: val-based early
    stopping, training ends after that many epochs without a better val macro-F1 (``epochs`` is
    then the most it may run; the selected weights are the best val epoch's either way). ``eval_batch_size`` 0 means
    ``batch_size``. ``bn_recalibration_images`` > 0: precise BN, BatchNorm statistics re-estimated
    on ``min(ceil(images / batch_size), batches per epoch)`` training batches before each validation
    (:func:`dfpipe.training.engine.recalibrate_bn`; detectron2's PreciseBN default is 200 batches,
    Wu & Johnson 2021). ``balance``: class-balanced sampling of the training split.
    ``init``: ``scratch`` (random) or the key of a pretrained file ``<train.pretrained_dir>/<key>.pt``.
    Every key is required: the shared values live in params.yaml's ``run_defaults:``, never in code.
    ``model``: the registered model's own config class (chosen by ``model.name``), whose knobs
    default to the published network (the model file documents them).
    """

    model: ModelSettings
    variant: PlainName
    lr: float = Field(gt=0, allow_inf_nan=False)
    batch_size: int = Field(ge=2)  # BatchNorm needs two items
    epochs: int = Field(ge=1)
    patience: int | None = Field(ge=1)  # early stopping: epochs without a better val score; null: run every epoch
    seeds: tuple[int, ...] = Field(min_length=1)
    optimizer: Literal["adam", "adamw", "sgd"]
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    schedule: Literal["cosine", "step", "plateau", "none"]
    warmup_epochs: float = Field(ge=0)
    step_size: int = Field(ge=1)
    gamma: float = Field(gt=0, le=1)
    # plateau: training ends once lr x the plateau factor falls below min_lr (CNNDetection: 1e-6);
    # left out of the dumped config at 0 so checkpoints written before the key keep their bytes
    min_lr: float = Field(0.0, ge=0, exclude_if=lambda v: v == 0.0)
    balance: bool
    loss: LossConfig
    max_steps_per_epoch: int = Field(ge=0)
    grad_clip: float = Field(ge=0)
    flip: bool
    eval_batch_size: int = Field(ge=0)
    bn_recalibration_images: int = Field(ge=0)
    init: SafeName
    augment: Literal["none", "blur_jpeg"]  # train-split preset of dfpipe.training.augment

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative ints, got {list(self.seeds)}")
        if self.loss.uses_mask_head and not self.model.mask_output:
            raise ValueError(
                "loss.w_bce/w_dice/w_map > 0 need a model with a mask output (f3net with seg_head: true, ffd)"
            )
        if self.loss.w_relation > 0 and not self.model.relation_output:
            raise ValueError("loss.w_relation > 0 needs a model with patch-similarity outputs (lrl)")
        if self.loss.uses_masks and self.loss.mask_on == "edited" and self.model.num_classes != 3:
            raise ValueError("loss.mask_on: edited needs the 3-class labels (model.num_classes: 3)")
        cw = self.loss.class_weights
        if cw is not None and len(cw) != self.model.num_classes:
            raise ValueError(f"loss.class_weights has {len(cw)} entries for {self.model.num_classes} classes")
        return self

    def bn_batches(self, batches_per_epoch: int) -> int:
        """Precise-BN batches: ``min(ceil(bn_recalibration_images / batch_size), batches_per_epoch)``."""
        return min(math.ceil(self.bn_recalibration_images / self.batch_size), batches_per_epoch)


class TrainConfig(Config):
    """Settings shared by all runs (``train:``). ``amp``: ``auto`` = bf16 on CUDA, off on CPU.

    ``threads``: torch's CPU thread count, fixed (never the machine's core count) because training's
    backward reductions split by thread; with the kernels pinned by :mod:`dfpipe.core.numerics` a
    CPU run then gives the same bytes on any x86-64 machine. ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (warn-only for ops without a deterministic kernel).
    ``scratch_dir``: resume state of unfinished seeds; ``log_dir``: timing logs (both git- and
    DVC-ignored, never DVC outputs). ``pretrained_dir``: ``<key>.pt`` files named by ``init``
    (written by pretrained@<key>). ``compile``: ``torch.compile`` the model for CUDA training
    (:func:`dfpipe.training.engine.compile_model`; on the CPU a logged fallback to eager).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    deterministic: bool = True
    compile: bool = False  # result-affecting on CUDA (other kernels, not bit-exact): a train: key
    threads: int = Field(2, ge=1)  # result-affecting on CPU (reduction order of the backward pass)
    log_every: int = Field(50, ge=0)
    progress: bool = True
    gpus: int = Field(1, ge=1)  # processes per node (one per GPU; gloo processes on CPU); > 1: torchrun
    nodes: int = Field(1, ge=1)  # machines; > 1 needs rdzv_endpoint (dfpipe.training.launch)
    rdzv_endpoint: str | None = None  # "host:port" of the c10d rendezvous for nodes > 1
    variants_dir: RepoPath = Path("data/variants")
    spectra_dir: RepoPath = Path("data/spectra")
    models_dir: RepoPath = Path("models")
    metrics_dir: RepoPath = Path("metrics/train")
    features_dir: RepoPath = Path("data/features")  # features@ caches (model.input clip / lgrad)
    scratch_dir: RepoPath = Path(".scratch/train")
    log_dir: RepoPath = Path(".scratch/logs")
    pretrained_dir: RepoPath = Path("models/pretrained")

    @model_validator(mode="after")
    def _rendezvous(self) -> TrainConfig:
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nodes > 1 needs rdzv_endpoint (host:port reachable by every node)")
        return self


def load_runs(params: dict) -> tuple[TrainConfig, dict[str, RunConfig]]:
    """``train:`` and ``runs:`` (each merged over ``run_defaults``) of a loaded params.yaml, built strictly."""
    for key in ("train", "runs"):
        if key not in params:
            raise ConfigError(f"params.yaml: missing section '{key}'")
    train_cfg = build(TrainConfig, section_data(params, "train"), where="train")
    if not isinstance(params["runs"], dict):
        raise ConfigError("runs: expected a mapping of run name -> run config")
    runs = {
        name: build(RunConfig, merged_entry(params, "runs", name), where=f"runs.{name}")
        for name in sorted(params["runs"])
    }
    return train_cfg, runs
