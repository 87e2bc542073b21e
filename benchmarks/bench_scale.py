"""Scale-out benchmarks: preprocessing executors, decode-once, spectra statistics over cores.

    python benchmarks/bench_scale.py [--images 400] [--videos 40] [--spectra-n 512] [--skip-ray]

Generates (in a temporary folder) drawn-face PNGs and FF++-layout videos with masks, then prints:

1. preprocessing items/s of one image source and one video source through
   ``dfpipe.ingest.executor.ordered_map``: local executor with 1 and 2 worker processes, and the Ray
   executor on a private local Ray instance with 2 CPUs (2 actors); start-up (until the first
   result) and steady state reported apart; crops checked identical to the 1-worker run;
2. decode-once: an FF++ folder sampled by two policies (every n-th and K per video) as two
   ``run_source`` calls vs one ``run_sources`` pass (1 worker), outputs checked identical;
3. spectra statistics + cache (``build_split``, 224 px): img/s with ``workers`` 1 and 2 threads.

Each figure is wall time on this machine; on a shared machine compare figures from the same run only.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dfpipe.core.config import build
from dfpipe.features import spectra as sp
from dfpipe.features import moments
from dfpipe.ingest.executor import ordered_map
from dfpipe.ingest.preprocess import PreprocessConfig, run_source, run_sources
from dfpipe.ingest.sources import SourceConfig, list_items
from dfpipe.ingest.worker import Worker

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only synthetic inputs
from bench_spectra import write_variant_split  # noqa: E402 - the benchmarks' split writer
from synthetic import draw_synthetic_face, write_video  # noqa: E402

CFG = dict(
    detector_model="models/mediapipe/face_detection_short_range.tflite",
    segmenter_model="models/mediapipe/selfie_segmentation.tflite",
    margin=1.3, size=224, min_score=0.5, min_face=24, every_n=10, frames_per_video=8,
    seg_threshold=0.5, seg_background="blank", min_person=0.05, max_pixels=40_000_000,
    shard_size=4096, workers=1,
)


def make_raw(root: Path, n_images: int, n_videos: int) -> None:
    for i in range(n_images):
        img = draw_synthetic_face(320, 320, 140 + i % 40, 150, 70)[:, :, ::-1]
        (root / "img").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "img" / f"{i:05d}.png"), img)
    vids, masks = root / "ff" / "c23" / "videos", root / "ff" / "masks" / "videos"
    for v in range(n_videos):
        frames = [draw_synthetic_face(240, 320, 120 + i + v, 110, 55) for i in range(60)]
        m = [np.pad(np.full((80, 60), 255, np.uint8), ((70, 90), (130, 130))) for _ in range(60)]
        write_video(vids / f"{v:03d}_{v + 100:03d}.mp4", frames, gop=25, crf=23)
        write_video(masks / f"{v:03d}_{v + 100:03d}.mp4", m, gop=25, crf=0, gray=True)


def folder_bytes(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def bench_preprocess(tmp: Path, skip_ray: bool) -> None:
    """Items/s of the preprocess worker under each executor: start-up (pool spawn / Ray actors
    loading MediaPipe) and steady state (from the first result to the last) separately."""
    img = build(SourceConfig, dict(kind="image_folder", path="img", label=0, method="b", mode="crop"))
    ff = build(SourceConfig, dict(kind="ffpp", path="ff", label=2, method="F2F", mode="crop",
                                  sampling="every_nth", masks=True))
    runs = [("local", 1), ("local", 2)] + ([] if skip_ray else [("ray", 2)])
    for name, spec in (("images", img), ("videos", ff)):
        items, _ = list_items(name, spec, tmp / spec.path.as_posix())
        ref = None
        for executor, workers in runs:
            cfg = build(PreprocessConfig, {**CFG, "workers": workers, "executor": executor})
            if executor == "ray":
                import ray

                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            factory = functools.partial(Worker, cfg, spec, tmp / spec.path.as_posix())
            t0 = time.perf_counter()
            results, t_first = [], 0.0
            for res in ordered_map(factory, items, workers, executor):
                t_first = t_first or time.perf_counter()
                results.append(res)
            t_end = time.perf_counter()
            if executor == "ray":
                ray.shutdown()
            crops = [c.image.tobytes() for r in results for c in r.crops]
            ref = ref or crops
            print(f"preprocess {name:6s} {executor:5s} workers={workers}: steady {(len(items) - 1) / (t_end - t_first):7.2f} "
                  f"items/s, start-up {t_first - t0:5.1f} s, total {len(items) / (t_end - t0):7.2f} items/s "
                  f"({len(items)} items, {len(crops)} crops){'' if crops == ref else '  CROPS DIFFER'}")


def bench_decode_once(tmp: Path) -> None:
    cfg = build(PreprocessConfig, CFG)
    base = dict(kind="ffpp", path="ff", label=2, method="F2F", mode="crop", masks=True)
    n20 = build(SourceConfig, {**base, "sampling": "every_nth"})
    k = build(SourceConfig, {**base, "sampling": "per_video"})
    t0 = time.perf_counter()
    run_source("n", n20, cfg, tmp / "two-n", root=tmp / "ff")
    run_source("k", k, cfg, tmp / "two-k", root=tmp / "ff")
    t_two = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_sources(["n", "k"], [n20, k], cfg, [tmp / "one-n", tmp / "one-k"], root=tmp / "ff")
    t_one = time.perf_counter() - t0
    same = folder_bytes(tmp / "two-n") == folder_bytes(tmp / "one-n") and \
        folder_bytes(tmp / "two-k") == folder_bytes(tmp / "one-k")
    print(f"decode-once (every {cfg.every_n}th + K={cfg.frames_per_video}, 1 worker): two passes {t_two:.2f} s, "
          f"one pass {t_one:.2f} s, {t_two / t_one:.2f}x{'' if same else '  BYTES DIFFER'}")


def bench_spectra(tmp: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    write_variant_split(tmp / "variants" / "v", "train", images)
    cfg = build(sp.SpectraConfig, dict(
        variants=["v"], variants_dir="variants", out_dir="spectra", metrics_dir="m", plots_dir="p",
        kind="dct", color="per_channel", eps=1e-12, batch_size=64, shard_size=512, workers=1))
    ref = None
    for workers in (1, 2):
        c = cfg.model_copy(update={"workers": workers})
        acc = {"dct": moments.RunningMoments(), "dft": moments.RunningMoments()}
        out = tmp / f"spectra{workers}"
        t0 = time.perf_counter()
        sp.build_split(tmp / "variants" / "v" / "train", out, c, acc)
        dt = time.perf_counter() - t0
        got = (folder_bytes(out), acc["dct"].result()[1].tobytes())
        ref = ref or got
        print(f"spectra 224 px dct cache + dct/dft stats, workers={workers}: {n / dt:7.1f} img/s"
              f"{'' if got == ref else '  BYTES DIFFER'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--spectra-n", type=int, default=512)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--only", choices=["preprocess", "decode", "spectra"], nargs="*")
    args = ap.parse_args()
    only = set(args.only or ["preprocess", "decode", "spectra"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_raw(tmp, args.images, args.videos)
        cwd = Path.cwd()
        if "preprocess" in only:
            bench_preprocess(tmp, args.skip_ray)
        if "decode" in only:
            bench_decode_once(tmp)
        if "spectra" in only:
            bench_spectra(tmp, args.spectra_n)
        assert Path.cwd() == cwd


if __name__ == "__main__":
    main()
