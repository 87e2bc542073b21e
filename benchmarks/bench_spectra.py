"""Benchmark the spectrum cache against computing spectra on the device.

Prints, for 64 px and 224 px crops (min / median over ``--repeat`` runs; ratios of medians against
the plain-library baseline measured in the same run):
  - baseline: ``scipy.fft.dctn`` + log-abs of the same images (float64, one worker);
  - log-spectra (``log_spectrum_np``) of the DCT and of the DFT, and the cache build on one core
    (read + DCT + log + float16 shards + train statistics of both kinds: the train split's work;
    target >= 0.8x of the baseline for the transforms);
  - cache read: images/s and MB/s for shuffled training batches (page cache warm), and the cost of
    the normalisation (done on the device in training);
  - on-device SpectrumTransform: images/s on CPU (one thread) and on CUDA when available, from
    uint8 crops already in memory (what a loader hands the model).
Usage: .venv/bin/python benchmarks/bench_spectra.py [--n64 N] [--n224 N] [--batch B] [--kind dct|dft] [--repeat R]
Data: random uint8 images written as a one-variant layout under a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm loads: progress bars would interleave with the figures

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.fft
import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import line, times  # noqa: E402

from dfpipe.features import spectra as sp  # noqa: E402
from dfpipe.features import moments  # noqa: E402
from dfpipe.models.spectrum import SpectrumTransform  # noqa: E402
from dfpipe.core.manifest import SPLITS, VARIANT_SCHEMA, write_variant  # noqa: E402
from dfpipe.core.shards import ShardReader, ShardWriter  # noqa: E402


def write_variant_split(root: Path, split: str, images: np.ndarray) -> None:
    n = len(images)
    w = ShardWriter(root / split, "images", 4096)
    refs = [w.add(im) for im in images]
    w.close()
    ids = [f"bench/{split}_{i:06d}" for i in range(n)]
    cols = {name: None for name in VARIANT_SCHEMA.names}
    cols.update(
        id=ids, source="bench", label=np.zeros(n, np.int8), method="bench", video_id="",
        group_keys=[[i] for i in ids], path=ids, frame_index=np.full(n, -1, np.int32),
        n_frames=np.full(n, -1, np.int32), box_x=np.zeros(n, np.int32), box_y=np.zeros(n, np.int32),
        box_w=np.zeros(n, np.int32), box_h=np.zeros(n, np.int32), det_score=np.full(n, np.nan, np.float32),
        content_hash=ids, has_mask=np.zeros(n, bool), shard=[r[0] for r in refs],
        offset=np.array([r[1] for r in refs], np.int32), mask_shard="", split=split, split_group=ids,
    )
    write_variant(pd.DataFrame(cols), root / split / "manifest.parquet")


def bench_size(size: int, n: int, batch: int, kind: str, tmp: Path, repeat: int) -> None:
    """``tmp`` is the working directory (the config's paths are relative, as in params.yaml)."""
    rng = np.random.default_rng(size)
    # smooth content + noise, like face crops (pure noise would make every coefficient large)
    low = rng.normal(size=(n, size // 8, size // 8, 3)).astype(np.float32)
    images = np.clip(128 + 50 * np.repeat(np.repeat(low, 8, 1), 8, 2) + rng.normal(0, 4, (n, size, size, 3)), 0, 255).astype(np.uint8)
    root = Path(f"variants_{size}") / "bench"
    for split in SPLITS:
        write_variant_split(root, split, images if split == "train" else images[:batch])
    cfg = sp.SpectraConfig(
        variants=("bench",), variants_dir=root.parent, out_dir=Path(f"spectra_{size}"), metrics_dir=Path("m"),
        plots_dir=Path("p"), cache=("bench",), kind=kind, color="per_channel", eps=1e-12, batch_size=256, shard_size=4096,
    )
    print(f"\n== {size} px, {n} train images, kind={kind}, per_channel ==")

    def plain():
        for i in range(0, n, cfg.batch_size):
            x64 = np.moveaxis(images[i : i + cfg.batch_size].astype(np.float64), -1, 1)
            np.log(np.abs(scipy.fft.dctn(x64, type=2, norm="ortho", axes=(-2, -1), workers=1)) + cfg.eps)

    base = times(plain, repeat)
    print(line("baseline scipy.fft.dctn + log-abs (float64, 1 worker)", base, n, "img/s"))
    for k in ("dct", "dft"):
        secs = times(lambda: [sp.log_spectrum_np(images[i : i + cfg.batch_size], k, "per_channel", cfg.eps)
                              for i in range(0, n, cfg.batch_size)], repeat)
        print(line(f"log_spectrum_np {k}                                   ", secs, n, "img/s", base))
    both = {k: moments.RunningMoments() for k in sp.KINDS}
    secs = times(lambda: sp.build_split(root / "train", cfg.out_dir / "bench" / "train", cfg, both, desc="bench"),
                 max(1, repeat // 2), warmup=0)
    print(line("cache build + stats of both kinds (1 core)           ", secs, n, "img/s", base))
    sp.build_variant("bench", cfg)

    cache = sp.SpectraCache(cfg.out_dir / "bench" / "train")
    mean, std = moments.load_stats(cfg.out_dir / "bench" / "stats.npz")
    perm = np.random.default_rng(0).permutation(n)
    batches = [np.sort(perm[i : i + batch]) for i in range(0, n - batch + 1, batch)]
    nbytes = cache.gather([0]).nbytes

    def read_cache():
        for rows in batches:
            cache.gather(rows)

    k = len(batches) * batch
    t = min(times(read_cache, repeat))
    print(f"cache read (float16, batch {batch}):             {k / t:10.1f} images/s  {k * nbytes / t / 1e6:8.1f} MB/s")
    block = cache.gather(batches[0])
    t = min(times(lambda: moments.normalize(block, mean, std), repeat))
    print(f"  + normalise on CPU (1 thread):              {batch / t:10.1f} images/s")

    reader = ShardReader(root / "train")
    man = pd.read_parquet(root / "train" / "manifest.parquet")
    img_bytes = images[0].nbytes

    def read_images():
        for rows in batches:
            reader.gather(list(man["shard"].iloc[rows]), man["offset"].to_numpy()[rows])

    t = min(times(read_images, repeat))
    print(f"uint8 crop read (for on-device, batch {batch}):  {k / t:10.1f} images/s  {k * img_bytes / t / 1e6:8.1f} MB/s")

    transform = SpectrumTransform(kind, "per_channel", 1e-12, size)
    transform.set_stats(mean, std)
    xb = torch.from_numpy(images[:batch]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        t = min(times(lambda: transform(xb), repeat))
    print(f"SpectrumTransform CPU (1 thread, batch {batch}): {batch / t:10.1f} images/s")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        tc = transform.to(dev)
        xc = xb.to(dev)
        with torch.no_grad():
            for _ in range(3):
                tc(xc)
            torch.cuda.synchronize()

            def run():
                for _ in range(20):
                    tc(xc)
                torch.cuda.synchronize()

            t = min(times(run, repeat)) / 20
        print(f"SpectrumTransform CUDA (batch {batch}):          {batch / t:10.1f} images/s  [{torch.cuda.get_device_name()}]")
    else:
        print("SpectrumTransform CUDA: no CUDA device here")
    print(f"bytes per image: cache {nbytes} (float16), crop {img_bytes} (uint8)")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n64", type=int, default=1024)
    p.add_argument("--n224", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--kind", choices=["dct", "dft"], default="dct")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # per-core figures on a shared machine
    print(f"torch {torch.__version__}, numpy {np.__version__}, scipy {scipy.__version__}; torch threads 1")
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bench_spectra_") as tmp:
        os.chdir(tmp)  # the config's paths must be relative (params.yaml's rule)
        try:
            for size, n in ((64, args.n64), (224, args.n224)):
                bench_size(size, n, args.batch, args.kind, Path(tmp), args.repeat)
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main(sys.argv[1:])
