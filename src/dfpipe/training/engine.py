"""One training epoch, evaluation and prediction (torchvision classification-reference style).

Batches arrive as ``uint8``; :func:`to_device` copies them (``non_blocking``, from pinned memory)
and converts images to ``float`` in [0, 1] on the device, in ``channels_last`` when asked. Mixed
precision is ``bf16`` autocast (no loss scaling needed), or ``fp16`` with a ``GradScaler`` on CUDA.
Host-to-device copies are ``non_blocking`` from pinned memory, so the step loop never waits for
the GPU (a pageable copy is a stream synchronisation); :func:`compile_model` wraps the model in
``torch.compile`` for CUDA training (``train.compile``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from dfpipe.core.seeding import mix_seed
from dfpipe.models.class_head import class_probs, predicted_class
from dfpipe.scoring.metrics import macro_f1

if TYPE_CHECKING:
    from dfpipe.training.data import BatchLoader

Amp = Literal["off", "bf16", "fp16"]


class SizedBatches(Protocol):
    """What the training loop needs of a loader: its batch count and the batches."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


def autocast(device: torch.device, amp: Amp):
    """Autocast context for ``amp`` on ``device`` (``fp16`` only on CUDA)."""
    if amp == "off":
        return nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 needs CUDA; use bf16 or off on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _h2d(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` without a host wait: a CPU tensor bound for CUDA goes through pinned
    memory (a copy from pageable memory synchronises the stream: the host would wait for every
    queued kernel, and the GPU would idle while the next step is prepared)."""
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def compile_model(
    model: nn.Module, device: torch.device, enabled: bool, log: Callable[[str], None] | None = None
) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (``train.compile``) and ``device`` is CUDA; else ``model``.

    Policy on other devices: fall back to the eager model with one logged line rather than refuse,
    so that one params file (the full-scale profile sets ``compile: true``) also runs a CPU
    rehearsal or debugging session; on the CPU, inductor would need a C++ toolchain and minutes of
    compilation for a demo-sized run, and eager CPU results stay bit-exact. The caller keeps the
    plain module for checkpoints, precise BN and validation (the compiled wrapper shares its
    parameters; its state-dict keys carry an ``_orig_mod.`` prefix that
    :func:`dfpipe.training.checkpoint.save_model` never writes). Only the model is compiled, not
    the loss: cross-entropy is one fused kernel already, and the mask terms act on ``(B, h, w)``
    maps, a few small kernels next to the backbone's hundreds; a second graph would add compile
    time and recompilations for no measurable gain. The first steps pay the compilation; later
    steps and epochs reuse the graph (the training loader drops its ragged last batch, so batch
    shapes stay static).
    """
    if not enabled:
        return model
    if device.type != "cuda":
        if log is not None:
            log(f"train.compile: true ignored on {device.type}: compiled training is CUDA-only; eager model")
        return model
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule
    return compiled


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device``; a uint8 ``image`` becomes float ``(B,3,S,S)`` in [0, 1], cached
    features (float16, :class:`dfpipe.training.data.FeatureDataset`) become float32 unscaled.

    The loader pins its batches when CUDA is present; tensors made on the host after it (an
    augmentation preset's images) are pinned here."""
    out = {k: _h2d(v, device) for k, v in batch.items()}
    # The loader's images are channels-last views of the stored (B,S,S,3) bytes; the layout is
    # fixed here, on uint8 (a quarter of the float bytes): contiguous NCHW unless channels_last.
    # Cached features (C, H, W maps or flat vectors) are float16: float32, unscaled.
    image = out["image"]
    fmt = torch.channels_last if channels_last and image.dim() == 4 else torch.contiguous_format
    image = image.contiguous(memory_format=fmt)
    out["image"] = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
    return out


def random_hflip(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Flip each item (image and mask) left-right with p = 0.5; coin flips from a CPU generator.

    Drawing on the CPU keeps the flips identical on every device and independent of the loader.
    """
    image = batch["image"]
    if image.ndim != 4:  # feature vectors (B, D) have no left and right
        return batch
    flip = _h2d(torch.rand(image.shape[0], generator=generator) < 0.5, image.device)
    out = dict(batch)
    out["image"] = torch.where(flip[:, None, None, None], image.flip(-1), image)
    if "mask" in batch:
        out["mask"] = torch.where(flip[:, None, None], batch["mask"].flip(-1), batch["mask"])
    return out


class Meter:
    """Throughput: images per second of wall time, and the fraction spent waiting for data."""

    def __init__(self):
        self.images = 0
        self.wait = 0.0
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def img_per_s(self) -> float:
        return self.images / max(self.elapsed, 1e-9)


def train_one_epoch(
    model: nn.Module,
    loader: SizedBatches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: Amp = "off",
    *,
    epoch: int = 0,
    seed: int = 0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_steps: int = 0,
    flip: bool = True,
    channels_last: bool = False,
    grad_clip: float = 0.0,
    log_every: int = 0,
    log_fn: Callable[[str], None] | None = None,
    progress: bool = True,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Train for one epoch (or ``max_steps`` batches when > 0); the scheduler steps per batch.

    Returns ``loss`` (mean total loss), ``loss_<part>`` per active term, ``acc`` (train accuracy
    on the augmented batches), ``img_per_s``, ``data_wait`` (fraction of time waiting for the
    loader), ``steps`` and ``images``.

    No per-step host synchronisation: the flip coins and any host-made tensor reach the device by
    a non_blocking copy from pinned memory (:func:`_h2d`); loss sums (float64, so the means equal
    the former ``loss.item()`` sums bit for bit) and correct counts accumulate on the device and are
    read every ``log_every`` steps and at the end. A non-finite loss therefore raises
    ``FloatingPointError`` (naming the first bad step) at the next read, not at once.
    """
    model.train()
    flip_gen = torch.Generator().manual_seed(mix_seed(seed, epoch, stream=1))
    # augmentation preset (dfpipe.training.augment) on the uint8 CPU batch; own stream: resume-proof
    aug_gen = torch.Generator().manual_seed(mix_seed(seed, epoch, stream=3))
    n_batches = len(loader) if max_steps <= 0 else min(max_steps, len(loader))
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
    steps = 0
    meter = Meter()
    bar = tqdm(total=n_batches, desc=f"train {epoch}", disable=not progress, leave=False)

    def check() -> None:
        bad = int(first_bad)
        if bad >= 0:
            raise FloatingPointError(f"non-finite loss at epoch {epoch} step {bad}")

    t_wait = time.perf_counter()
    for batch in loader:
        if steps >= n_batches:
            break
        if augment is not None:
            batch = {**batch, "image": augment(batch["image"], aug_gen)}
        batch = to_device(batch, device, channels_last)
        meter.wait += time.perf_counter() - t_wait
        if flip:
            batch = random_hflip(batch, flip_gen)
        with autocast(device, amp):
            outputs = model(batch["image"])
        loss, parts = loss_fn(outputs, batch)  # losses in float32, outside autocast
        first_bad = torch.where(
            (first_bad < 0) & ~torch.isfinite(loss.detach()), torch.full_like(first_bad, steps), first_bad
        )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        b = batch["label"].shape[0]
        for k, v in [("loss", loss)] + [(f"loss_{k}", v) for k, v in parts.items()]:
            term = v.detach().double() * b
            sums[k] = sums[k] + term if k in sums else term
        correct += (predicted_class(outputs["logits"]) == batch["label"]).sum()
        meter.images += b
        steps += 1
        bar.update(1)
        if log_every > 0 and steps % log_every == 0:
            check()
            if log_fn is not None:
                log_fn(
                    f"epoch {epoch} step {steps}/{n_batches} loss {loss.item():.4f} "
                    f"lr {optimizer.param_groups[0]['lr']:.3g} {meter.img_per_s:.1f} img/s"
                )
        t_wait = time.perf_counter()
    bar.close()
    if steps == 0:
        raise ValueError("the training loader produced no batch (fewer items than batch_size?)")
    check()  # reads the device: also waits for the queued steps, so img/s is wall time
    out = {k: float(v) / meter.images for k, v in sums.items()}
    out.update(
        acc=int(correct) / meter.images,
        img_per_s=meter.img_per_s,
        data_wait=meter.wait / max(meter.elapsed, 1e-9),
        steps=steps,
        images=meter.images,
    )
    return out


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: Amp = "off",
    num_batches: int = 0,
    channels_last: bool = False,
) -> int:
    """Re-estimate BatchNorm running statistics on ``num_batches`` training batches ("precise BN").

    BatchNorm's running mean/var are an exponential average (momentum 0.1) of the statistics of
    weights that kept changing; after few optimisation steps, as in a short run, they lag far
    behind the weights and eval-mode predictions collapse to one class although train accuracy is
    high. Recomputing them as a plain average over fixed weights (Wu & Johnson 2021, "Rethinking
    'Batch' in BatchNorm", sec. 3; detectron2's PreciseBN) removes that lag. Returns the number
    of batches used (0: nothing to do).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if num_batches <= 0 or not bns:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches below
    model.train()
    used = 0
    for batch in loader:
        if used >= num_batches:
            break
        batch = to_device(batch, device, channels_last)
        with autocast(device, amp):
            model(batch["image"])
        used += 1
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.train(was_training)
    return used


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: BatchLoader,
    device: torch.device,
    amp: Amp = "off",
    channels_last: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Class probabilities for every item the loader yields (in loader order).

    Returns ``index (N,) int64`` (dataset rows), ``ids (N,) object`` (manifest ids), ``labels (N,)
    int64``, ``probs (N,K) float32`` (:func:`~dfpipe.models.class_head.class_probs`: softmax, or
    ``[1 - sigmoid, sigmoid]`` of a single-logit head) and, for models with a mask head, ``mask_probs``
    ``(N,h,w) float16`` (sigmoid; float16 to bound memory).
    """
    model.eval()
    index, labels, probs, masks = [], [], [], []
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        batch = to_device(batch, device, channels_last)
        with autocast(device, amp):
            outputs = model(batch["image"])
        # kept on the device (no host sync per batch); mask maps go to the host per batch to
        # bound device memory, as a non_blocking copy into pinned memory (a plain .cpu() would
        # wait for the batch's kernels): read only after the synchronisation below
        probs.append(class_probs(outputs["logits"]))  # softmax; [1 - sigmoid, sigmoid] of one logit
        labels.append(batch["label"])
        index.append(batch["index"])
        if "mask" in outputs:
            masks.append(torch.sigmoid(outputs["mask"].float())[:, 0].half().to("cpu", non_blocking=True))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # the non_blocking mask copies have landed
    index_np = torch.cat(index).cpu().numpy()
    out = {
        "index": index_np,
        "ids": np.asarray(loader.dataset.ids)[index_np],
        "labels": torch.cat(labels).cpu().numpy(),
        "probs": torch.cat(probs).cpu().numpy().astype(np.float32),
    }
    if masks:
        out["mask_probs"] = torch.cat(masks).numpy()
    return out


def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    device: torch.device,
    amp: Amp = "off",
    channels_last: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """``macro_f1``, ``acc`` and mean ``nll`` (cross-entropy of the predicted probabilities)."""
    pred = predict(model, loader, device, amp, channels_last, progress)
    y, p = pred["labels"], pred["probs"]
    k = p.shape[1]
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    return {
        "macro_f1": macro_f1(y, p.argmax(1), k),
        "acc": float(np.mean(p.argmax(1) == y)),
        "nll": nll if math.isfinite(nll) else float("nan"),
    }
