"""Training loader throughput (img/s): item-by-item DataLoader (before) vs whole-batch reads (after).

    python benchmarks/bench_loader.py --sizes 224 299 --n 1536 --batch 128

Writes a synthetic train split (random uint8 crops, the variant stage's shard + manifest format)
in a temporary folder, reads it once to warm the page cache (training reads every epoch), then
times one epoch of each loader from this one process: ``before`` = ``torch.utils.data.DataLoader``
over ``VariantDataset.__getitem__`` with the default collate (the previous ``make_loader``),
``after`` = :class:`dfpipe.training.data.BatchLoader` (``make_loader`` today), with 0 and 2
read-ahead threads. Batches stay on the host (no device here); the best of ``--repeat`` epochs
is printed, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import synthetic_split  # noqa: E402 - the benchmarks' shared split writer

from dfpipe.training.data import VariantDataset, make_loader  # noqa: E402


def epoch_rate(loader, repeat: int) -> float:
    best = 0.0
    for r in range(repeat):
        loader.sampler.set_epoch(r)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += batch["image"].shape[0]
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 299])
    ap.add_argument("--n", type=int, default=1536, help="items in the synthetic split")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"n={args.n} batch={args.batch} torch threads={torch.get_num_threads()} "
          f"cuda={torch.cuda.is_available()}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = synthetic_split(Path(tmp), args.n, size)
            ds = VariantDataset(root, "train")
            fast = make_loader(ds, args.batch, True, 0, seed=0)
            epoch_rate(fast, 1)  # warm the page cache
            before = DataLoader(ds, batch_size=args.batch, sampler=fast.sampler, drop_last=fast.drop_last,
                                pin_memory=torch.cuda.is_available())
            print(f"{size} px  before (item DataLoader, 0 workers): {epoch_rate(before, args.repeat):8.0f} img/s")
            print(f"{size} px  after  (BatchLoader, 0 threads):     {epoch_rate(fast, args.repeat):8.0f} img/s")
            ahead = make_loader(ds, args.batch, True, 2, seed=0)
            print(f"{size} px  after  (BatchLoader, 2 threads):     {epoch_rate(ahead, args.repeat):8.0f} img/s")


if __name__ == "__main__":
    main()
