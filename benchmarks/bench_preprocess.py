"""Benchmark: sampled preprocessing vs. "extract every frame" (FaceForensics++'s official script).

Generates a 300-frame 1280x720 H.264 video of a moving drawn face, then times on ONE core:

- sampled: probe + K = 30 evenly spaced frames (seek / decode-and-skip, RGB only for kept frames)
  + BlazeFace detection + square crop (224) + selfie segmentation, i.e. ``Worker.process`` of the
  preprocess stage in ``crop_seg`` mode;
- baseline: decode every frame with ``cv2.VideoCapture`` and write each one as PNG, as
  ``extract_compressed_videos.py`` of FaceForensics++ does, into a temporary folder.

Prints seconds (min / median over ``--repeat`` runs) and video frames per second (per core) for
two key-frame intervals: 250 (x264's default, what FF++'s c23 videos have) and 25, and the speed-up
(ratio of medians) against the baseline measured in the same run.
Usage: ``python benchmarks/bench_preprocess.py [--frames 300] [--width 1280] [--height 720] [--k 30] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only synthetic inputs
from synthetic import draw_synthetic_face, write_video  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from timing import times  # noqa: E402

from dfpipe.core.config import build
from dfpipe.ingest.preprocess import PreprocessConfig
from dfpipe.ingest.items import Item
from dfpipe.ingest.sources import SourceConfig
from dfpipe.ingest.worker import Worker

def frames(n: int, h: int, w: int):
    for i in range(n):
        yield draw_synthetic_face(h, w, w // 3 + 2 * i * w // 1280, h // 2 + int(h / 18 * ((i % 60) / 60)), max(h // 6, 20))


def baseline(video: Path, out_dir: Path) -> int:
    """Every frame decoded and written as PNG (FF++ extract_compressed_videos.py)."""
    cap = cv2.VideoCapture(str(video))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.imwrite(str(out_dir / f"{n:04d}.png"), frame)
        n += 1
    cap.release()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--k", type=int, default=30, help="frames sampled per video")
    ap.add_argument("--gops", type=int, nargs="+", default=[250, 25])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n_frames, H, W, K = args.frames, args.height, args.width, args.k
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # per-core figures
    cv2.setNumThreads(1)
    cfg = build(PreprocessConfig, dict(
        detector_model="models/mediapipe/face_detection_short_range.tflite",
        segmenter_model="models/mediapipe/selfie_segmentation.tflite",
        margin=1.3, size=224, min_score=0.5, min_face=24, every_n=20, frames_per_video=K,
        seg_threshold=0.5, seg_background="blank", min_person=0.0, max_pixels=40_000_000,
        shard_size=4096, workers=1))
    spec = build(SourceConfig, dict(kind="video_folder", path="bench", label=2, method="bench",
                                    mode="crop_seg", sampling="per_video"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for gop in args.gops:
            name = f"gop{gop}.mp4"
            write_video(tmp / name, frames(n_frames, H, W), fps=25, gop=gop, crf=23)
            worker = Worker(cfg, spec, tmp)
            item = Item(name, True, "gop", ("bench",))
            got = []
            try:
                sampled = times(lambda: got.append(worker.process(item)), args.repeat)  # warm-up: model init
            finally:
                worker.close()
            res = got[-1]
            assert len(res.crops) == K, f"expected {K} crops, got {len(res.crops)}: {res.rejects[:3]}"
            png_dir = tmp / f"png{gop}"
            png_dir.mkdir()
            counts = []
            base = times(lambda: counts.append(baseline(tmp / name, png_dir)), args.repeat, warmup=0)
            assert counts[-1] == n_frames
            t_sampled, t_base = statistics.median(sampled), statistics.median(base)
            print(f"key-frame interval {gop}: {n_frames} frames {W}x{H}, 1 core, min / median of {args.repeat}")
            print(f"  sampled K={K} + detect + crop + segment: {min(sampled):7.2f} / {t_sampled:7.2f} s  "
                  f"{n_frames / t_sampled:7.1f} video frames/s  {K / t_sampled:6.1f} crops/s")
            print(f"  baseline decode all + write PNG:        {min(base):7.2f} / {t_base:7.2f} s  "
                  f"{n_frames / t_base:7.1f} video frames/s")
            print(f"  speed-up: {t_base / t_sampled:.1f}x (ratio of medians)")


if __name__ == "__main__":
    main()
