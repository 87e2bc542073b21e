"""Training loader throughput (img/s): item-by-item DataLoader, whole-batch reads, and the plain numpy gather.

    python benchmarks/bench_loader.py --sizes 224 299 --n 1536 --batch 128 --repeat 5

Writes a synthetic train split (random uint8 crops, the variant stage's shard + manifest format)
in a temporary folder, reads it once to warm the page cache (training reads every epoch), then
times epochs from this one process (the loaders' epochs alternate): ``before`` = ``torch.utils.data.DataLoader`` over
``VariantDataset.__getitem__`` with the default collate (the previous ``make_loader``); ``after`` =
:class:`dfpipe.training.data.BatchLoader` (``make_loader`` today) with 0 and 2 read-ahead threads;
``plain`` = the baseline, ``np.take`` of each batch's sorted rows from the memory-mapped shard into
one reused buffer (no labels, no tensors). Batches stay on the host (no device here). Prints min /
median img/s over ``--repeat`` epochs and each loader's ratio of medians against ``plain`` (targets
on 2 idle cores: 299 px >= 50k img/s, 224 px >= 0.9x plain).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import synthetic_split  # noqa: E402 - the benchmarks' shared split writer
from timing import interleaved, line  # noqa: E402

from dfpipe.training.data import VariantDataset, make_loader  # noqa: E402


def epoch_fn(loader):
    """One epoch of ``loader`` per call, epoch ``r`` in the sampler's order ``r`` on the ``r``-th call."""
    state = {"epoch": 0, "items": 0}

    def run() -> None:
        loader.sampler.set_epoch(state["epoch"] % 8)
        state["epoch"] += 1
        state["items"] = sum(batch["image"].shape[0] for batch in loader)

    return run, state


def plain_fn(ds: VariantDataset, loader):
    """The library alone: each batch's rows, per shard in sorted offset order, gathered from the
    memory maps with ``np.take`` into one reused buffer."""
    names = np.asarray(ds._shard, dtype=object)
    shards = {name: ds.reader.shard(name) for name in sorted(set(names))}
    first = next(iter(shards.values()))
    buf = np.empty((loader.batch_size,) + first.shape[1:], first.dtype)
    state = {"epoch": 0}

    def run() -> None:
        loader.sampler.set_epoch(state["epoch"] % 8)
        state["epoch"] += 1
        for rows in loader._batches():
            k = 0
            for name, shard in shards.items():
                offsets = np.sort(ds._offset[rows[names[rows] == name]])
                np.take(shard, offsets, axis=0, out=buf[k : k + len(offsets)])
                k += len(offsets)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 299])
    ap.add_argument("--n", type=int, default=1536, help="items in the synthetic split")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"n={args.n} batch={args.batch} torch threads={torch.get_num_threads()} "
          f"cuda={torch.cuda.is_available()}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = synthetic_split(Path(tmp), args.n, size)
            ds = VariantDataset(root, "train")
            fast = make_loader(ds, args.batch, True, 0, seed=0)
            before = DataLoader(ds, batch_size=args.batch, sampler=fast.sampler, drop_last=fast.drop_last,
                                pin_memory=torch.cuda.is_available())
            ahead = make_loader(ds, args.batch, True, 2, seed=0)
            loaders = {"before (item DataLoader, 0 workers)": before, "after  (BatchLoader, 0 threads)    ": fast,
                       "after  (BatchLoader, 2 threads)    ": ahead}
            runs = {label: epoch_fn(loader) for label, loader in loaders.items()}
            # epochs alternate between the loaders (a slow spell on a shared box hits all alike);
            # the warm-up epoch fills the page cache
            secs = interleaved({"plain": plain_fn(ds, fast), **{k: run for k, (run, _) in runs.items()}}, args.repeat)
            n = len(fast) * args.batch
            print(line(f"{size} px  plain  (np.take into a reused buffer)", secs["plain"], n, "img/s"))
            for label, (_, state) in runs.items():
                print(line(f"{size} px  {label}", secs[label], state["items"], "img/s", secs["plain"], n))

if __name__ == "__main__":
    main()
