"""Fit one named run (``runs.<run>`` in params.yaml) for each of its seeds: data, model, optimiser.

Contracts (what ``train@<run>`` reads and writes)
- Model selection on the variant's ``val`` split by macro-F1 (:func:`dfpipe.scoring.metrics.macro_f1`);
  the ``test`` split is never opened here.
- Gate: nothing is read or written unless ``<audit.out_dir>/<variant>/gate.json`` exists and its
  fingerprint equals the variant folder's bytes (:mod:`dfpipe.splits.gate`).
- Outputs per seed ``s``: ``models/<run>/seed<s>.pt`` (the selected epoch's weights + run config,
  :mod:`dfpipe.training.checkpoint`) and ``metrics/train/<run>/curves/seed<s>.tsv`` (``epoch,
  train_loss, val_macro_f1, val_acc``); ``metrics/train/<run>/metrics.json`` =
  ``{"seeds": {"<s>": {"best_val_macro_f1", "best_epoch"}}}``. No timings in any of them: img/s and
  wall times go to stderr and ``<runtime.train.log_dir>/train/<run>.log`` only.
- Spectrum inputs: ``<spectra_dir>/<variant>/stats_<input>.npz`` (train-split statistics) fill the
  model's normalisation buffers once; its kind/colour/eps must equal the model config's.
- Resume: after every epoch the seed's full state (optimizer, scheduler, scaler, rng, best weights,
  history) is written to ``<scratch_dir>/<run>/<config-hash>/seed<s>.pt``; a rerun with the same
  config continues from it (a finished seed only re-exports its checkpoint). The folder is removed
  when every seed is done. Nothing DVC tracks is ``persist``, so DVC's run-cache applies.
- Determinism: every random choice is a function of ``(seed, epoch)`` (init, loader order, flips,
  the global torch RNG used by dropout), so "1 epoch + resume 1 epoch" equals "2 epochs", on CPU
  byte for byte.
- DDP: under ``torchrun`` (``WORLD_SIZE > 1``) each rank trains on its shard of every epoch
  (``batch_size`` is the global batch, split evenly); rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from dfpipe.core.config import safe_name, to_dict
from dfpipe.core.io import write_bytes, write_json
from dfpipe.core.numerics import set_torch_threads
from dfpipe.core.seeding import mix_seed
from dfpipe.features.encoders import cache_dir
from dfpipe.features.moments import load_stats, read_stats_meta
from dfpipe.features.spectra import stats_path
from dfpipe.models import build_model, load_weights
from dfpipe.models.common import spectrum_transform
from dfpipe.models.pretrained import weights_path
from dfpipe.models.registry import SpectrumInputConfig
from dfpipe.splits.gate import gate_path, require_gate
from dfpipe.training import checkpoint as ckpt_io
from dfpipe.training.augment import AUGMENT_PRESETS
from dfpipe.training.config import RunConfig, TrainConfig, load_runs
from dfpipe.training.data import cache_kind, make_loader, open_split
from dfpipe.training.device import resolve_amp, select_device
from dfpipe.training.engine import compile_model, evaluate, recalibrate_bn, train_one_epoch
from dfpipe.training.losses import build_loss

__all__ = ["RunConfig", "TrainConfig", "RunPaths", "load_runs", "fit", "fit_seed", "CURVE_COLUMNS"]

#: Columns of ``curves/seed<s>.tsv``: per epoch, no timings.
#: ``updates`` / ``images_seen``: optimizer steps and training images (all ranks) up to the end of
#: the epoch, so that tables compare rows at equal training budgets.
CURVE_COLUMNS = ("epoch", "train_loss", "val_macro_f1", "val_acc", "updates", "images_seen")
_INT_CURVE_COLUMNS = ("epoch", "updates", "images_seen")


@dataclass(frozen=True)
class RunPaths:
    """Where one run reads and writes (all relative to the repository root)."""

    variant_dir: Path
    spectrum_stats: Path | None  # stats_<input>.npz for dct/dft inputs, else None
    out_dir: Path  # seed<s>.pt
    metrics_dir: Path  # metrics.json, curves/seed<s>.tsv
    scratch_dir: Path  # <scratch_dir>/<config-hash>/seed<s>.pt (resume)
    log_file: Path  # timings (never tracked)
    pretrained: Path | None  # init weights file, or None for init: scratch
    features: Path | None = None  # features@ cache <features_dir>/<input>/<variant> (clip/lgrad inputs)
    gate: Path | None = None  # <audit.out_dir>/<variant>/gate.json; fit() refuses to start without it

    @classmethod
    def for_run(cls, run_name: str, run_cfg: RunConfig, train_cfg: TrainConfig, audit_dir: Path) -> RunPaths:
        """The run's paths; ``audit_dir`` is ``audit.out_dir``, where the variant's gate is."""
        safe_name(f"runs.{run_name}", run_name)  # it names the output folders
        stats = None
        if run_cfg.model.input in ("dct", "dft"):
            stats = stats_path(train_cfg.spectra_dir / run_cfg.variant, run_cfg.model.input)
        pretrained = weights_path(run_cfg.init, train_cfg.pretrained_dir)  # pretrained@<init> writes it
        kind = cache_kind(run_cfg.model)  # clip / lgrad inputs, landmarks beside the crops
        features = None if kind is None else cache_dir(train_cfg.features_dir, kind, run_cfg.variant)
        return cls(
            train_cfg.variants_dir / run_cfg.variant,
            stats,
            train_cfg.models_dir / run_name,
            train_cfg.metrics_dir / run_name,
            train_cfg.scratch_dir / run_name,
            train_cfg.log_dir / "train" / f"{run_name}.log",
            pretrained,
            features,
            gate_path(audit_dir, run_cfg.variant),
        )

    def resume_file(self, run_cfg: RunConfig, seed: int) -> Path:
        """``<scratch_dir>/<run>/<config-hash>/seed<seed>.pt``."""
        return ckpt_io.resume_path(self.scratch_dir.parent, self.scratch_dir.name, run_cfg, seed)


class _Logger:
    """stderr plus an appended log file (timings live here, never in tracked outputs)."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"[train] {msg}"
        print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


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


def plateau_factor(val_scores: list[float], cfg: RunConfig) -> float:
    """``schedule: plateau``: ``gamma`` to the number of times the val score has gone ``step_size``
    epochs without a strict improvement (the count restarting after each cut), as CNNDetection
    divides its lr by 10; 1.0 for other schedules. A function of the val history alone, so a
    resumed seed (whose history is in its resume state) continues at the same rate."""
    if cfg.schedule != "plateau":
        return 1.0
    best, bad, factor = float("-inf"), 0, 1.0
    for score in val_scores:
        best, bad = (score, 0) if score > best else (best, bad + 1)
        if bad >= cfg.step_size:
            factor, bad = factor * cfg.gamma, 0
    return factor


def _set_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Each group's rate as the scheduler's lambda gives it now (after a plateau cut)."""
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)


def stop_early(epochs_done: int, best_epoch: int, patience: int | None) -> bool:
    """Val-based early stopping: ``patience`` epochs have passed since the best val epoch
    (``best_epoch`` 1-based, -1 before any). ``patience`` None never stops early."""
    return patience is not None and best_epoch > 0 and epochs_done - best_epoch >= patience


def _rng_state() -> dict:
    state: dict = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _setup_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def configure_determinism(train_cfg: TrainConfig) -> None:
    set_torch_threads(train_cfg.threads)
    if train_cfg.deterministic:
        # cuBLAS needs a fixed workspace for deterministic GEMMs (PyTorch reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def init_model(run_cfg: RunConfig, paths: RunPaths, seed: int, log=None) -> nn.Module:
    """The run's model for ``seed``: random init, pretrained weights (``init``), spectrum statistics."""
    mc = run_cfg.model
    torch.manual_seed(seed)  # model initialisation
    model = build_model(mc)
    if paths.pretrained is not None:
        if not paths.pretrained.is_file():
            raise FileNotFoundError(
                f"{paths.pretrained}: pretrained weights for init {run_cfg.init!r} not found; "
                f"list it in params.yaml pretrained.fetch and run `dvc repro pretrained@{run_cfg.init}`"
            )
        report = load_weights(model, paths.pretrained)
        if log is not None:
            log(f"init {run_cfg.init}: {report.total_loaded} tensors from {paths.pretrained}")
    transform = spectrum_transform(model)
    if (transform is None) != (paths.spectrum_stats is None):
        raise ValueError(f"model input {mc.input!r} and statistics file {paths.spectrum_stats} disagree")
    if transform is not None:
        assert paths.spectrum_stats is not None  # checked just above
        assert isinstance(mc, SpectrumInputConfig)  # only these models build a spectrum transform
        meta = read_stats_meta(paths.spectrum_stats)
        want = {"kind": mc.input, "color": mc.spectrum_color, "eps": mc.spectrum_eps}
        got = {k: meta[k] for k in want}
        if got != want:
            raise ValueError(
                f"{paths.spectrum_stats}: statistics are for {got} but the model input is {want} "
                "(spectra stage settings and runs.<run>.model must agree)"
            )
        transform.set_stats(*load_stats(paths.spectrum_stats))
    return model


def _write_curves(path: Path, history: list[dict]) -> None:
    lines = ["\t".join(CURVE_COLUMNS)]
    for row in history:
        lines.append("\t".join(str(int(row[c])) if c in _INT_CURVE_COLUMNS else f"{row[c]:.6f}" for c in CURVE_COLUMNS))
    write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def fit_seed(
    run_name: str,
    run_cfg: RunConfig,
    train_cfg: TrainConfig,
    paths: RunPaths,
    seed: int,
    stop_after: int | None = None,
    log=None,
) -> dict:
    """Train one seed; return ``{"best_score", "best_epoch", "epochs_run", "history", "finished"}``.

    ``stop_after``: leave after that many completed epochs (as an interruption would; the next
    call resumes from the scratch state).
    """
    rank, world_size, local_rank = _setup_distributed()
    configure_determinism(train_cfg)
    log = log or _Logger(None)
    device = select_device(train_cfg.device, local_rank)
    amp = resolve_amp(train_cfg.amp, device)
    mc = run_cfg.model
    if run_cfg.batch_size % world_size:
        raise ValueError(f"batch_size {run_cfg.batch_size} is not divisible by WORLD_SIZE {world_size}")

    train_ds = open_split(paths.variant_dir, "train", mc, paths.features, with_masks=run_cfg.loss.uses_masks)
    val_ds = open_split(paths.variant_dir, "val", mc, paths.features)
    train_loader = make_loader(
        train_ds, run_cfg.batch_size // world_size, True, train_cfg.num_workers, seed, run_cfg.balance, rank, world_size
    )
    val_loader = make_loader(val_ds, run_cfg.eval_batch_size or run_cfg.batch_size, False, train_cfg.num_workers, seed)
    steps_per_epoch = len(train_loader)
    if run_cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, run_cfg.max_steps_per_epoch)
    bn_batches = run_cfg.bn_batches(len(train_loader))

    model = init_model(run_cfg, paths, seed, log if rank == 0 else None).to(device)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, run_cfg)
    plateau = [1.0]  # schedule plateau: the current factor (rank 0 decides from val, others receive it)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, run_cfg, steps_per_epoch) * plateau[0]
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loss_fn = build_loss(run_cfg.loss, mc.num_classes).to(device)

    resume_file = paths.resume_file(run_cfg, seed)
    state = ckpt_io.load_resume(resume_file, run_cfg)
    start_epoch, best_score, best_epoch, history, best_state = 0, -1.0, -1, [], None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_score, best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
        history, best_state = list(state["history"]), state["best_model"]
        if run_cfg.schedule == "plateau":
            plateau[0] = plateau_factor([h["val_macro_f1"] for h in history], run_cfg)
            _set_lr(optimizer, scheduler)
        if rank == 0:
            log(f"{run_name} seed {seed}: resuming after epoch {start_epoch} from {resume_file}")

    net = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    # training steps only: `model` (plain) keeps serving checkpoints, precise BN and validation
    net = compile_model(net, device, train_cfg.compile, log if rank == 0 else None)
    if rank == 0:
        log(
            f"{run_name} seed {seed}: {len(train_ds)} train / {len(val_ds)} val items of {paths.variant_dir}, "
            f"{steps_per_epoch} steps/epoch, precise-BN {bn_batches} batches, device {device}, amp {amp}, "
            f"world {world_size}, batch {run_cfg.batch_size // world_size} per rank"
        )

    epochs_run = 0
    stopped = stop_early(len(history), best_epoch, run_cfg.patience)  # a resumed seed that had stopped
    for epoch in range(start_epoch, run_cfg.epochs if not stopped else start_epoch):
        train_loader.sampler.set_epoch(epoch)
        torch.manual_seed(mix_seed(seed, epoch, stream=2))  # dropout etc.: resume-proof
        tr = train_one_epoch(
            net,
            train_loader,
            loss_fn,
            optimizer,
            scaler,
            device,
            amp,
            epoch=epoch,
            seed=seed,
            scheduler=scheduler,
            max_steps=steps_per_epoch,
            flip=run_cfg.flip,
            channels_last=train_cfg.channels_last,
            grad_clip=run_cfg.grad_clip,
            log_every=train_cfg.log_every,
            log_fn=log if rank == 0 else None,
            progress=train_cfg.progress and rank == 0,
            augment=AUGMENT_PRESETS[run_cfg.augment],
        )
        epochs_run += 1
        recalibrate_bn(model, train_loader, device, amp, bn_batches, train_cfg.channels_last)
        if rank == 0:
            val = evaluate(model, val_loader, device, amp, train_cfg.channels_last, train_cfg.progress)
            improved = val["macro_f1"] > best_score  # strict: ties keep the earlier epoch
            if improved:
                best_score, best_epoch = val["macro_f1"], epoch + 1
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            spent = history[-1] if history else {}
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": tr["loss"],
                    "val_macro_f1": val["macro_f1"],
                    "val_acc": val["acc"],
                    "updates": spent.get("updates", 0) + tr["steps"],
                    "images_seen": spent.get("images_seen", 0) + tr["images"] * world_size,
                }
            )
            ckpt_io.save_resume(
                resume_file,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "config": to_dict(run_cfg),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_model": best_state,
                    "history": history,
                    "rng": _rng_state(),
                },
            )
            log(
                f"{run_name} seed {seed} epoch {epoch + 1}/{run_cfg.epochs}: loss {tr['loss']:.4f} "
                f"val macro-F1 {val['macro_f1']:.4f} acc {val['acc']:.4f} "
                f"({tr['img_per_s']:.1f} img/s, data wait {100 * tr['data_wait']:.0f}%)"
                + (" *best*" if improved else "")
            )
        if run_cfg.patience is not None:
            flag = torch.tensor([int(rank == 0 and stop_early(epoch + 1, best_epoch, run_cfg.patience))], device=device)
            if world_size > 1:
                dist.broadcast(flag, src=0)  # rank 0 alone validates; every rank stops together
            stopped = bool(flag.item())
        if run_cfg.schedule == "plateau":
            factor = plateau_factor([h["val_macro_f1"] for h in history], run_cfg) if rank == 0 else 1.0
            sent = torch.tensor([factor], dtype=torch.float64, device=device)
            if world_size > 1:
                dist.broadcast(sent, src=0)
            plateau[0] = float(sent.item())
            _set_lr(optimizer, scheduler)  # the next step already runs at the cut rate
            stopped = stopped or run_cfg.lr * plateau[0] < run_cfg.min_lr  # CNNDetection ends at 1e-6
        if world_size > 1:
            dist.barrier()
        if stopped:
            if rank == 0:
                log(f"{run_name} seed {seed}: early stop after epoch {epoch + 1} (best {best_epoch})")
            break
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    finished = (stopped or len(history) >= run_cfg.epochs) if rank == 0 else True
    if rank == 0 and finished:
        ckpt_io.save_model(paths.out_dir / f"seed{seed}.pt", model, run_cfg, state_dict=best_state)
        _write_curves(paths.metrics_dir / "curves" / f"seed{seed}.tsv", history)
    return {
        "best_score": best_score,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "history": history,
        "finished": finished,
    }


def fit(
    run_name: str, run_cfg: RunConfig, train_cfg: TrainConfig, paths: RunPaths, stop_after: int | None = None
) -> dict[int, dict]:
    """Train every seed of the run; write metrics.json when all are done; ``{seed: fit_seed result}``.

    Nothing starts unless ``paths.gate`` approves the variant as it is on disk
    (:func:`dfpipe.splits.gate.require_gate`; :class:`~dfpipe.splits.gate.GateRefused` otherwise).
    ``stop_after`` applies to each seed (the resume test); the scratch folder of this config is
    removed once every seed has finished.
    """
    require_gate(paths.gate, paths.variant_dir, run_cfg.variant)
    log = _Logger(paths.log_file)
    t0 = time.perf_counter()
    results = {}
    for seed in run_cfg.seeds:
        results[seed] = fit_seed(run_name, run_cfg, train_cfg, paths, seed, stop_after, log)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and all(r["finished"] for r in results.values()):
        for old in sorted(paths.out_dir.glob("seed*.pt")):  # seeds no longer in the run
            if old.name not in {f"seed{s}.pt" for s in run_cfg.seeds}:
                old.unlink()
        for old in sorted((paths.metrics_dir / "curves").glob("seed*.tsv")):
            if old.name not in {f"seed{s}.tsv" for s in run_cfg.seeds}:
                old.unlink()
        write_json(
            paths.metrics_dir / "metrics.json",
            {
                "seeds": {
                    str(s): {"best_val_macro_f1": r["best_score"], "best_epoch": r["best_epoch"]}
                    for s, r in results.items()
                }
            },
        )
        shutil.rmtree(paths.resume_file(run_cfg, 0).parent, ignore_errors=True)
        scores = [r["best_score"] for r in results.values()]
        log(
            f"{run_name}: {len(scores)} seeds, val macro-F1 mean {np.mean(scores):.4f}, "
            f"{time.perf_counter() - t0:.1f} s"
        )
    if dist.is_initialized():
        dist.destroy_process_group()  # torchrun workers exit cleanly after the last seed
    return results
