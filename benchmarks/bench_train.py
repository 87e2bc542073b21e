"""Training-loop throughput (img/s) per model, and the data path alone (can it keep a GPU busy?).

    python benchmarks/bench_train.py --device cpu --size 64 --batch 32 --steps 5
    python benchmarks/bench_train.py --device cuda --size 224 --batch 128 --amp bf16 --workers 8

Generates a synthetic variant split (random uint8 crops in the shard + manifest format) in a
temporary folder, then times (1) the loader alone (uint8 batches copied to the device and converted
to float), and (2) full training steps (forward, loss, backward, optimiser) of each model through
``dfpipe.training.engine.train_one_epoch``. Prints one line per measurement. The first ``--warmup`` steps are
not timed (allocator, cuDNN autotuning, lazy init). On CUDA each training line also gives the peak
GPU memory of the timed steps (``torch.cuda.max_memory_allocated``) and the GPU busy fraction: NVML's
utilisation (the share of each sample period in which at least one kernel ran), sampled every 50 ms
while the timed steps run.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dfpipe.training.data import VariantDataset, make_loader
from dfpipe.training.engine import compile_model, to_device, train_one_epoch
from dfpipe.training.losses import LossConfig, build_loss
from dfpipe.core.manifest import VARIANT_SCHEMA, write_variant
from dfpipe.models import build_model, model_config
from dfpipe.core.shards import ShardWriter

MODELS = {
    "resnet18": dict(name="resnet18"),
    "f3net_mix": dict(name="f3net", f3net_mode="mix", reduced=True),
    # the paper's full Xception backbone (the demo trains the reduced one)
    "f3net_mix_full": dict(name="f3net", f3net_mode="mix", reduced=False),
    "f3net_mix_seg": dict(name="f3net", f3net_mode="mix", reduced=True, seg_head=True),
}


def write_split(root: Path, split: str, labels: list[int], size: int, seed: int = 0) -> None:
    """``root/<split>``: one random crop per entry of ``labels`` (masks for edited items, label 2),
    in the variant stage's shard + manifest format."""
    rng = np.random.default_rng(seed)
    rows = []
    with ShardWriter(root / split, "images", 1024) as images, ShardWriter(root / split, "masks", 1024) as masks:
        for i, label in enumerate(labels):
            shard, offset = images.add(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            mshard, _ = masks.add((rng.random((size, size)) > 0.5).astype(np.uint8) * 255)
            rows.append({c: None for c in VARIANT_SCHEMA.names} | dict(
                id=f"bench/{split}/{i:06d}", source="bench", label=label, method="bench", video_id="",
                group_keys=[f"bench:{split}:{i}"], path="", frame_index=-1, n_frames=-1, box_x=0, box_y=0,
                box_w=size, box_h=size, det_score=0.0, content_hash="", has_mask=label == 2,
                shard=shard, offset=offset, mask_shard=mshard if label == 2 else "", split=split,
                split_group=f"bench:{split}:{i}"))
    write_variant(pd.DataFrame(rows), root / split / "manifest.parquet")


def synthetic_split(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """A train split of ``n`` random crops, labels cycling 0, 1, 2."""
    write_split(root, "train", [i % 3 for i in range(n)], size, seed)
    return root


class BusySampler:
    """Mean NVML GPU utilisation (%) over the ``with`` block; ``None`` without CUDA or NVML."""

    def __init__(self, device: torch.device, period_s: float = 0.05):
        self.device, self.period_s, self.samples = device, period_s, []
        self._stop = threading.Event()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> "BusySampler":
        self.enabled = self.device.type == "cuda"
        if self.enabled:
            try:
                torch.cuda.utilization(self.device)
            except Exception:  # noqa: BLE001 - no pynvml / no NVML: report n/a rather than fail the benchmark
                self.enabled = False
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def print_profile(step_fn, device: torch.device, rows: int = 15) -> None:
    """Run ``step_fn`` under ``torch.profiler`` and print the top operators by device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step_fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=64, help="stored crop size = model image_size")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--deterministic", action="store_true",
                    help="cuDNN autotuning off (train.deterministic: true); default: on, as at full scale")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after timing, profile this many more steps and print the top operators by device time")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (train.compile: CUDA only; a logged no-op on the CPU); "
                         "compilation happens in the warm-up steps")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = not args.deterministic
    n = args.batch * (args.steps + args.warmup)
    print(f"device={device} size={args.size} batch={args.batch} amp={args.amp} workers={args.workers} "
          f"threads={torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic_split(Path(tmp), n, args.size)
        for with_masks in (False, True):
            ds = VariantDataset(root, "train", with_masks=with_masks)
            loader = make_loader(ds, args.batch, True, args.workers, seed=0)
            t0, count = time.perf_counter(), 0
            for batch in loader:
                count += to_device(batch, device, args.channels_last)["image"].shape[0]
            if device.type == "cuda":
                torch.cuda.synchronize()
            print(f"data path{' +masks' if with_masks else ''}: {count / (time.perf_counter() - t0):.0f} img/s", flush=True)
        for key in args.models:
            seg = MODELS[key].get("seg_head", False)
            mask = {"mask_size": args.size} if MODELS[key].get("seg_head") else {}  # only F3Net's mask head has one
            cfg = model_config({"image_size": args.size, **mask, **MODELS[key]})
            torch.manual_seed(0)
            model = build_model(cfg).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            net = compile_model(model, device, args.compile, print)
            opt = torch.optim.Adam(model.parameters(), lr=2e-4)
            loss_fn = build_loss(LossConfig(
                w_cls=1.0, w_bce=1.0 if seg else 0.0, w_dice=1.0 if seg else 0.0, class_weights=None,
                label_smoothing=0.0, dice_eps=1.0, mask_on="edited"), 3).to(device)
            scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
            loader = make_loader(VariantDataset(root, "train", with_masks=seg), args.batch, True, args.workers, seed=0)
            common = dict(channels_last=args.channels_last, progress=False)
            train_one_epoch(net, loader, loss_fn, opt, scaler, device, args.amp, max_steps=args.warmup, **common)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
            with BusySampler(device) as busy:
                out = train_one_epoch(net, loader, loss_fn, opt, scaler, device, args.amp, epoch=1,
                                      max_steps=args.steps, **common)
            n_par = sum(p.numel() for p in model.parameters()) / 1e6
            gpu = ""
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**30
                frac = "n/a" if busy.mean is None else f"{busy.mean:.0f}%"
                gpu = f", peak {peak:.2f} GiB, GPU busy {frac}"
            print(f"train {key} ({n_par:.1f} M params): {out['img_per_s']:.1f} img/s "
                  f"({out['steps']} steps, data wait {100 * out['data_wait']:.0f}%{gpu})", flush=True)
            if args.profile:
                print_profile(functools.partial(train_one_epoch, net, loader, loss_fn, opt, scaler, device,
                                                args.amp, epoch=2, max_steps=args.profile, **common), device)
            del model, net, opt, loss_fn, loader
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
