"""Checkpoint files: the tracked ``seed<s>.pt`` (weights + config) and the untracked resume state.

Contracts (``train@`` writes these files, ``evaluate@`` and a resumed ``train@`` read them)
- ``models/<run>/seed<s>.pt`` = exactly ``{"model": state_dict, "config": <RunConfig as a plain
  dict>}``; it loads with ``torch.load(weights_only=True)`` and needs no other file: input
  normalisation statistics (spectrum inputs) are buffers of the state dict.
- Resume state = ``{"model", "optimizer", "scheduler", "scaler", "epoch", "best_score",
  "best_epoch", "best_model", "history", "rng", "config"}`` in
  ``<scratch_dir>/<run>/<config_hash>/seed<s>.pt`` (``.scratch/train/...``), never a DVC output.
Every file is serialised in memory and written atomically: ``torch.save`` names its zip records
after the target, so saving to a temporary name would make identical checkpoints differ in bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfpipe.core.config import build, to_dict
from dfpipe.core.io import write_bytes
from dfpipe.models import build_model
from dfpipe.training.config import RunConfig

CHECKPOINT_KEYS = frozenset({"model", "config"})


def write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically and byte-reproducibly."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def checkpoint_path(models_dir: str | Path, run: str, seed: int) -> Path:
    """``<models_dir>/<run>/seed<seed>.pt``."""
    return Path(models_dir) / run / f"seed{seed}.pt"


#: What ``torch.compile``'s wrapper (``OptimizedModule``) inserts before every state-dict key.
COMPILED_PREFIX = "_orig_mod."


def plain_module(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers, in any
    nesting: its state-dict keys are the ones :func:`load_model` expects of a plain model."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # duck-typed: importing torch._dynamo costs start-up
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_model(
    path: str | Path, model: nn.Module, run_cfg: RunConfig, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """Write ``{"model": state_dict, "config": run config dict}`` (``state_dict`` defaults to the
    model's). A compiled (or DDP-wrapped) model is saved as its plain module, and ``_orig_mod.``
    is removed from the keys of a given ``state_dict``, so a checkpoint never depends on how the
    run was executed."""
    if state_dict is None:
        state = plain_module(model).state_dict()
    else:
        state = {k.replace(COMPILED_PREFIX, ""): v for k, v in state_dict.items()}
    write_torch(path, {"model": {k: v.detach().cpu() for k, v in state.items()}, "config": to_dict(run_cfg)})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild a checkpoint's model in eval mode on ``device``: ``(model, run_cfg)``.

    The architecture comes from the stored config, every weight and buffer (spectrum statistics
    included) from the state dict, loaded strictly; ``init`` is not re-applied.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (did train@<run> run?)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or set(ckpt) != CHECKPOINT_KEYS:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not a model checkpoint (keys {keys}, expected {sorted(CHECKPOINT_KEYS)})")
    run_cfg = build(RunConfig, ckpt["config"], where=str(path))
    model = build_model(run_cfg.model)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), run_cfg


def config_hash(run_cfg: RunConfig) -> str:
    """First 16 hex digits of the sha256 of the run config's canonical JSON (keys the resume folder)."""
    text = json.dumps(to_dict(run_cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def resume_path(scratch_dir: str | Path, run: str, run_cfg: RunConfig, seed: int) -> Path:
    """``<scratch_dir>/<run>/<config_hash>/seed<seed>.pt``: only an identical config finds it."""
    return Path(scratch_dir) / run / config_hash(run_cfg) / f"seed{seed}.pt"


def save_resume(path: str | Path, state: dict) -> None:
    """Write a resume state (see the module docstring for its keys)."""
    write_torch(path, state)


def load_resume(path: str | Path, run_cfg: RunConfig) -> dict | None:
    """The resume state at ``path`` if it is readable and belongs to ``run_cfg``; else None.

    A config hash collision or an unreadable (e.g. half-written by another tool) file means:
    start from scratch.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if build(RunConfig, state["config"], where=str(path)) != run_cfg:
            return None
    except Exception:  # noqa: BLE001 - any unreadable resume file means: train from scratch
        return None
    return state
