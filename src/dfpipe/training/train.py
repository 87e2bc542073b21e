"""Fit one named run (``runs.<run>`` in params.yaml): data, model, optimiser, checkpoints, dvclive.

Contracts
- Model selection on the variant's ``val`` split by macro-F1 (:func:`dfpipe.evaluation.metrics.macro_f1`);
  the ``eval`` split is never opened here.
- ``models/<run>/last.pt`` (every epoch, atomic) = ``{model, optimizer, scaler, scheduler, epoch
  (epochs completed), config, best_score, best_epoch, history, rng, spectrum_stats}``;
  ``models/<run>/best.pt`` = ``{model, config, epoch, best_score, spectrum_stats}``. Both load
  with ``torch.load(weights_only=True)``. ``spectrum_stats`` (dct/dft inputs, else None) =
  ``{mean, std, kind, color, eps}``: the statistics file's transform, rebuilt by :func:`load_model`.
- Spectrum inputs read ``<spectra_dir>/<variant>/stats_<input>.npz`` (the spectra stage writes
  both kinds whatever kind it caches); its recorded kind must equal the model input.
- Resume: an unfinished ``last.pt`` whose config equals the current run config is continued;
  anything else (other config, finished run, unreadable file) starts fresh and says why.
- Determinism: every random choice is a function of ``(seed, epoch)`` (loader order, flips, the
  global torch RNG used by dropout), so "1 epoch + resume 1 epoch" equals "2 epochs", on CPU
  byte for byte.
- DDP: under ``torchrun`` (``WORLD_SIZE > 1``) each rank trains on its shard of every epoch
  (``batch_size`` is the global batch, split evenly); rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from pydantic import Field, model_validator

from dfpipe.core.config import Config, ConfigError, PlainName, RepoPath, build, merged_entry, to_dict
from dfpipe.core.seeding import mix_seed
from dfpipe.training.augment import AUGMENT_PRESETS
from dfpipe.training.data import make_loader, open_split
from dfpipe.training.engine import evaluate, recalibrate_bn, train_one_epoch
from dfpipe.core.io import write_bytes
from dfpipe.training.losses import LossConfig, build_loss
from dfpipe.models import ModelConfig, build_model


class RunConfig(Config):
    """One training run (``runs.<run>`` merged over ``run_defaults``). ``lr`` and ``batch_size`` are the notes' values.

    ``warmup_epochs``: linear warm-up from 0 over that many epochs (fractions allowed), then the
    ``schedule`` (``cosine`` to 0 at the end, ``step``: times ``gamma`` every ``step_size``
    epochs, ``none``: constant). ``max_steps_per_epoch`` > 0 caps batches per epoch (the demo).
    ``eval_batch_size`` 0 means ``batch_size``. ``bn_recalibration_batches`` > 0 re-estimates
    BatchNorm statistics on that many training batches before each validation
    (:func:`dfpipe.training.engine.recalibrate_bn`; essential for short runs such as the demo's).
    ``seeds``: every seed the run trains (contract C1). Every key is required: the shared values
    live in params.yaml's ``run_defaults:``, never in code.
    """

    model: ModelConfig
    variant: PlainName
    lr: float = Field(gt=0, allow_inf_nan=False)
    batch_size: int = Field(ge=2)  # BatchNorm needs two items
    epochs: int = Field(ge=1)
    optimizer: Literal["adam", "adamw", "sgd"]
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    schedule: Literal["cosine", "step", "none"]
    warmup_epochs: float = Field(ge=0)
    step_size: int = Field(ge=1)
    gamma: float = Field(gt=0, le=1)
    balance: bool
    loss: LossConfig
    seed: int
    seeds: tuple[int, ...] = Field(min_length=1)
    max_steps_per_epoch: int = Field(ge=0)
    grad_clip: float = Field(ge=0)
    flip: bool
    eval_batch_size: int = Field(ge=0)
    bn_recalibration_batches: int = Field(ge=0)
    augment: Literal["none", "blur_jpeg"]  # train-split preset of dfpipe.training.augment

    @model_validator(mode="after")
    def _cross_checks(self) -> "RunConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has duplicates: {list(self.seeds)}")
        if self.loss.uses_masks and not self.model.seg_head:
            raise ValueError("loss.w_bce/w_dice > 0 need model.seg_head: true")
        cw = self.loss.class_weights
        if cw is not None and len(cw) != self.model.num_classes:
            raise ValueError(f"loss.class_weights has {len(cw)} entries for {self.model.num_classes} classes")
        return self


class TrainConfig(Config):
    """Settings shared by all runs (``train:``). ``amp``: ``auto`` = bf16 on CUDA, off on CPU.

    ``threads`` > 0 sets ``torch.set_num_threads`` (0: torch's default). ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (warn-only for ops without a deterministic kernel).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    deterministic: bool = True
    threads: int = Field(0, ge=0)
    log_every: int = Field(50, ge=0)
    progress: bool = True
    variants_dir: RepoPath = Path("data/variants")
    spectra_dir: RepoPath = Path("data/spectra")
    models_dir: RepoPath = Path("models")
    metrics_dir: RepoPath = Path("metrics/train")
    features_dir: RepoPath = Path("data/features")  # features@ caches (model.input clip / lgrad)


@dataclass(frozen=True)
class RunPaths:
    """Where one run reads and writes (all relative to the repository root)."""

    variant_dir: Path
    spectrum_stats: Optional[Path]  # stats_<input>.npz for dct/dft inputs, else None
    out_dir: Path                   # best.pt, last.pt
    live_dir: Path                  # dvclive: metrics.json, plots/
    features: Optional[Path] = None  # features@ cache <features_dir>/<input>/<variant> (clip/lgrad inputs)

    @classmethod
    def for_run(cls, run_name: str, run_cfg: RunConfig, train_cfg: TrainConfig) -> "RunPaths":
        stats = None
        if run_cfg.model.input in ("dct", "dft"):
            from dfpipe.features.spectra import stats_path

            stats = stats_path(train_cfg.spectra_dir / run_cfg.variant, run_cfg.model.input)
        from dfpipe.features.encoders import FEATURE_INPUTS, cache_dir

        features = (cache_dir(train_cfg.features_dir, run_cfg.model.input, run_cfg.variant)
                    if run_cfg.model.input in FEATURE_INPUTS else None)
        return cls(train_cfg.variants_dir / run_cfg.variant, stats,
                   train_cfg.models_dir / run_name, train_cfg.metrics_dir / run_name, features)


def load_runs(params: dict) -> tuple[TrainConfig, dict[str, RunConfig]]:
    """``train:`` and ``runs:`` (each merged over ``run_defaults``) of a loaded params.yaml, built strictly."""
    for key in ("train", "runs"):
        if key not in params:
            raise ConfigError(f"params.yaml: missing section '{key}'")
    train_cfg = build(TrainConfig, params["train"], where="train")
    if not isinstance(params["runs"], dict):
        raise ConfigError("runs: expected a mapping of run name -> run config")
    runs = {name: build(RunConfig, merged_entry(params, "runs", name), where=f"runs.{name}")
            for name in sorted(params["runs"])}
    return train_cfg, runs


# ------------------------------------------------------------------------------------------------
# Pieces


def _log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> str:
    return ("bf16" if device.type == "cuda" else "off") if amp == "auto" else amp


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: RunConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``lr`` before optimiser step ``step`` (0-based, counted over all epochs)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch - warmup
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / max(total, 1)))
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_size)
    return 1.0


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` written atomically: an interrupted write never replaces ``last.pt``.

    Serialised to memory first: ``torch.save`` names the zip records after the target file, so
    saving to a random temporary name would make identical checkpoints differ in bytes.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def _load_spectrum_stats(path: Path, kind: str) -> dict:
    """``{mean, std, kind, color, eps}`` of a statistics file whose recorded kind is ``kind``."""
    from dfpipe.features.spectra import load_stats, read_stats_meta

    meta = read_stats_meta(path)
    if meta["kind"] != kind:
        raise ValueError(f"{path}: statistics are for {meta['kind']!r} spectra but the model input is "
                         f"{kind!r} (rerun the spectra stage: it writes stats_<kind>.npz for both kinds)")
    mean, std = load_stats(path)
    return {"mean": mean, "std": std, "kind": meta["kind"], "color": meta["color"], "eps": meta["eps"]}


def _spectrum_transform(stats: dict, default_kind: str):
    """The model's input transform from a checkpoint's / statistics file's ``spectrum_stats``.

    Checkpoints written before kind/color/eps were stored hold only ``mean``/``std``: then the
    kind is the model input, the colour follows from the channel count and eps is the default.
    """
    from dfpipe.features.spectra import SpectrumTransform

    mean, std = stats["mean"], stats["std"]
    color = stats.get("color", "gray" if mean.shape[0] == 1 else "per_channel")
    extra = {"eps": float(stats["eps"])} if "eps" in stats else {}
    return SpectrumTransform(kind=stats.get("kind", default_kind), color=color, mean=mean, std=std, **extra)


def _try_resume(path: Path, run_cfg: RunConfig) -> Optional[dict]:
    """The checkpoint to continue from, or None (with the reason printed)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = build(RunConfig, ckpt["config"], where=str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means: start fresh, say why
        _log(f"{path}: not resumable ({type(exc).__name__}: {exc}); training from scratch")
        return None
    if saved != run_cfg:
        diff = sorted(k for k, v in to_dict(run_cfg).items() if to_dict(saved).get(k) != v)
        _log(f"{path}: config differs ({', '.join(diff)}); training from scratch")
        return None
    if ckpt["epoch"] >= run_cfg.epochs:
        _log(f"{path}: run already finished ({ckpt['epoch']} epochs); training again from scratch")
        return None
    _log(f"{path}: resuming after epoch {ckpt['epoch']}")
    return ckpt


def _setup_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def configure_determinism(train_cfg: TrainConfig) -> None:
    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    if train_cfg.deterministic:
        # cuBLAS needs a fixed workspace for deterministic GEMMs (PyTorch reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


# ------------------------------------------------------------------------------------------------
# fit / load_model


def fit(run_name: str, run_cfg: RunConfig, train_cfg: TrainConfig, paths: RunPaths,
        stop_after: Optional[int] = None) -> dict:
    """Train ``run_name``; return ``{"best_score", "best_epoch", "epochs_run", "history"}``.

    ``stop_after``: leave after that many completed epochs (as an interruption would; the next
    call resumes). Used by the resume test and for time-boxed jobs.
    """
    rank, world_size, local_rank = _setup_distributed()
    configure_determinism(train_cfg)
    device = pick_device(train_cfg.device, local_rank)
    amp = resolve_amp(train_cfg.amp, device)
    mc = run_cfg.model
    if run_cfg.batch_size % world_size:
        raise ValueError(f"batch_size {run_cfg.batch_size} is not divisible by WORLD_SIZE {world_size}")

    train_ds = open_split(paths.variant_dir, "train", mc, paths.features, with_masks=run_cfg.loss.uses_masks)
    val_ds = open_split(paths.variant_dir, "val", mc, paths.features)
    train_loader = make_loader(train_ds, run_cfg.batch_size // world_size, True, train_cfg.num_workers,
                               run_cfg.seed, run_cfg.balance, rank, world_size)
    val_loader = make_loader(val_ds, run_cfg.eval_batch_size or run_cfg.batch_size, False,
                             train_cfg.num_workers, run_cfg.seed)
    steps_per_epoch = len(train_loader)
    if run_cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, run_cfg.max_steps_per_epoch)

    stats_state = _load_spectrum_stats(paths.spectrum_stats, mc.input) if paths.spectrum_stats else None
    torch.manual_seed(run_cfg.seed)  # model initialisation
    model = build_model(mc, None if stats_state is None else _spectrum_transform(stats_state, mc.input)).to(device)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, run_cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, run_cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loss_fn = build_loss(run_cfg.loss, mc.num_classes).to(device)

    last_path, best_path = paths.out_dir / "last.pt", paths.out_dir / "best.pt"
    ckpt = _try_resume(last_path, run_cfg)
    start_epoch, best_score, best_epoch, history = 0, -1.0, -1, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_score, best_epoch = ckpt["epoch"], ckpt["best_score"], ckpt["best_epoch"]
        history = list(ckpt["history"])
        if not best_path.is_file():
            raise FileNotFoundError(f"{best_path}: missing although {last_path} is resumable; delete "
                                    f"{last_path} to train from scratch")
    config_dict = to_dict(run_cfg)

    net = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    live = None
    if rank == 0:
        from dvclive import Live

        paths.out_dir.mkdir(parents=True, exist_ok=True)
        live = Live(str(paths.live_dir), resume=ckpt is not None, save_dvc_exp=False, dvcyaml=None)
        live.log_params({"run": run_name, **_flat(config_dict)})
        _log(f"{run_name}: {len(train_ds)} train / {len(val_ds)} val items of {paths.variant_dir}, "
             f"{steps_per_epoch} steps/epoch, device {device}, amp {amp}, world {world_size}")

    epochs_run = 0
    for epoch in range(start_epoch, run_cfg.epochs):
        train_loader.sampler.set_epoch(epoch)
        torch.manual_seed(mix_seed(run_cfg.seed, epoch, stream=2))  # dropout etc.: resume-proof
        tr = train_one_epoch(net, train_loader, loss_fn, optimizer, scaler, device, amp, epoch=epoch,
                             seed=run_cfg.seed, scheduler=scheduler, max_steps=steps_per_epoch,
                             flip=run_cfg.flip, channels_last=train_cfg.channels_last,
                             grad_clip=run_cfg.grad_clip, log_every=train_cfg.log_every,
                             log_fn=_log if rank == 0 else None, progress=train_cfg.progress and rank == 0,
                             augment=AUGMENT_PRESETS[run_cfg.augment])
        epochs_run += 1
        recalibrate_bn(model, train_loader, device, amp, run_cfg.bn_recalibration_batches,
                       train_cfg.channels_last)
        if rank == 0:
            val = evaluate(model, val_loader, device, amp, train_cfg.channels_last, train_cfg.progress)
            improved = val["macro_f1"] > best_score  # strict: ties keep the earlier epoch
            if improved:
                best_score, best_epoch = val["macro_f1"], epoch + 1
                save_checkpoint(best_path, {"model": model.state_dict(), "config": config_dict,
                                            "epoch": epoch + 1, "best_score": best_score,
                                            "spectrum_stats": stats_state})
            row = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_acc": tr["acc"],
                   "val_macro_f1": val["macro_f1"], "val_acc": val["acc"], "val_nll": val["nll"],
                   "lr": optimizer.param_groups[0]["lr"]}  # no timings: checkpoints stay byte-identical
            history.append(row)
            save_checkpoint(last_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch + 1, "config": config_dict, "best_score": best_score,
                "best_epoch": best_epoch, "history": history, "rng": _rng_state(),
                "spectrum_stats": stats_state})
            for key in ("train_loss", "train_acc", "val_macro_f1", "val_acc", "val_nll", "lr"):
                live.log_metric(_metric_name(key), row[key])
            live.log_metric("img_per_s", tr["img_per_s"])
            for key, value in tr.items():
                if key.startswith("loss_"):
                    live.log_metric(f"train/{key}", value)
            live.summary["best"] = {"val_macro_f1": best_score, "epoch": best_epoch}
            live.next_step()
            _log(f"{run_name} epoch {epoch + 1}/{run_cfg.epochs}: loss {tr['loss']:.4f} "
                 f"val macro-F1 {val['macro_f1']:.4f} acc {val['acc']:.4f} "
                 f"({tr['img_per_s']:.1f} img/s, data wait {100 * tr['data_wait']:.0f}%)"
                 + (" *best*" if improved else ""))
        if world_size > 1:
            dist.barrier()
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    if live is not None:
        live.end()
    return {"best_score": best_score, "best_epoch": best_epoch, "epochs_run": epochs_run, "history": history}


def _metric_name(key: str) -> str:
    split, _, name = key.partition("_")
    return f"{split}/{name}" if split in ("train", "val") else key


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> ``{"model.name": ...}`` (dvclive params must be scalars or lists)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_model(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild the model of a ``best.pt``/``last.pt`` in eval mode: ``(model, run_cfg)``.

    Loads with ``weights_only=True``; the architecture comes from the saved config, the weights
    (spectrum statistics included) from the state dict; ``model.weights`` is ignored (the
    checkpoint already holds the trained weights, and the pretrained file need not exist here).
    A spectrum input gets the saved transform (kind, colour, eps) back from ``spectrum_stats``.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (did train@<run> run?)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "config"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a training checkpoint (no {key!r})")
    run_cfg = build(RunConfig, ckpt["config"], where=str(path))
    stats = ckpt.get("spectrum_stats")
    transform = None if stats is None else _spectrum_transform(stats, run_cfg.model.input)
    model = build_model(run_cfg.model.model_copy(update={"weights": None}), transform)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), run_cfg
