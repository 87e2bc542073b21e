"""Throughput of every registered detector: parameters and forward+backward images/s.

CPU: fp32 at 64 px (the demo size) and at the paper size (224 for ResNet-18 / NPR, 299 for
Xception / F3Net), a few iterations only. CUDA (when available): bf16 autocast + channels_last.
Usage (from the repository root):

    .venv/bin/python benchmarks/bench_models.py [--iters 3] [--batch 8] [--threads 2] [--skip-paper-size]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from dfpipe.models import build_model, count_parameters, model_config

MODELS = {
    "resnet18": (dict(name="resnet18"), 224),
    "npr": (dict(name="npr"), 224),
    "xception": (dict(name="xception"), 299),
    "f3net_fad": (dict(name="f3net", f3net_mode="fad"), 299),
    "f3net_lfs": (dict(name="f3net", f3net_mode="lfs"), 299),
    "f3net_both": (dict(name="f3net", f3net_mode="both"), 299),
    "f3net_mix": (dict(name="f3net", f3net_mode="mix"), 299),
    "f3net_mix_reduced": (dict(name="f3net", f3net_mode="mix", reduced=True), 299),
    "f3net_mix_seg": (dict(name="f3net", f3net_mode="mix", seg_head=True), 299),
}


def train_step_rate(model: torch.nn.Module, size: int, batch: int, iters: int, device: torch.device,
                    amp: bool) -> float:
    """Images/s of forward + backward (no optimizer step) on a random batch, after one warm-up step."""
    model.train().to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size, device=device)
    if amp:
        x = x.to(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
            loss = F.cross_entropy(out["logits"].float(), y)
            if "mask" in out:
                loss = loss + out["mask"].float().sigmoid().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, cuDNN autotuning)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-paper-size", action="store_true", help="CPU at 64 px only")
    parser.add_argument("--models", nargs="*", default=sorted(MODELS), choices=sorted(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CPU threads {args.threads}, batch {args.batch}, iters {args.iters}, "
          f"CUDA: {torch.cuda.get_device_name(0) if cuda else 'none'}")
    header = f"{'model':<20}{'params (M)':>11}{'cpu 64px img/s':>16}{'cpu paper img/s':>17}"
    if cuda:
        header += f"{'cuda bf16 64px':>16}{'cuda bf16 paper':>17}"
    print(header)
    for key in args.models:
        kw, paper = MODELS[key]
        torch.manual_seed(0)
        small = build_model(model_config({"image_size": 64, **({"mask_size": 64} if kw.get("seg_head") else {}), **kw}))
        row = f"{key:<20}{count_parameters(small) / 1e6:>11.2f}"
        row += f"{train_step_rate(small, 64, args.batch, args.iters, torch.device('cpu'), False):>16.1f}"
        big = build_model(model_config({"image_size": paper, **kw}))
        if args.skip_paper_size:
            row += f"{'-':>17}"
        else:
            row += f"{train_step_rate(big, paper, max(2, args.batch // 4), 1, torch.device('cpu'), False):>17.2f} ({paper})"
        if cuda:
            dev = torch.device("cuda")
            row += f"{train_step_rate(small, 64, 64, 10, dev, True):>16.0f}"
            row += f"{train_step_rate(big, paper, 32, 10, dev, True):>17.0f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
