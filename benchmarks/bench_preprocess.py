"""Benchmark: sampled preprocessing vs. "extract every frame" (FaceForensics++'s official script).

Generates a 300-frame 1280x720 H.264 video of a moving drawn face, then times on ONE core:

- sampled: probe + K = 30 evenly spaced frames (seek / decode-and-skip, RGB only for kept frames)
  + BlazeFace detection + square crop (224) + selfie segmentation, i.e. ``Worker.process`` of the
  preprocess stage in ``crop_seg`` mode;
- baseline: decode every frame with ``cv2.VideoCapture`` and write each one as PNG, as
  ``extract_compressed_videos.py`` of FaceForensics++ does, into a temporary folder.

Prints seconds and video frames per second (per core) for two key-frame intervals: 250 (x264's
default, what FF++'s c23 videos have) and 25. Usage: ``python benchmarks/bench_preprocess.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only synthetic inputs
from synthetic import draw_synthetic_face, write_video  # noqa: E402

from dfpipe.core.config import build
from dfpipe.ingest.preprocess import PreprocessConfig
from dfpipe.ingest.items import Item
from dfpipe.ingest.sources import SourceConfig
from dfpipe.ingest.worker import Worker

N_FRAMES, H, W, K = 300, 720, 1280, 30


def frames():
    for i in range(N_FRAMES):
        yield draw_synthetic_face(H, W, 400 + 2 * i, 330 + int(40 * ((i % 60) / 60)), 110)


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
        for gop in (250, 25):
            name = f"gop{gop}.mp4"
            write_video(tmp / name, frames(), fps=25, gop=gop, crf=23)
            worker = Worker(cfg, spec, tmp)
            try:
                worker.process(Item(name, True, "gop", ("bench",)))  # warm-up: model init, caches
                t0 = time.perf_counter()
                res = worker.process(Item(name, True, "gop", ("bench",)))
                t_sampled = time.perf_counter() - t0
            finally:
                worker.close()
            assert len(res.crops) == K, f"expected {K} crops, got {len(res.crops)}: {res.rejects[:3]}"
            png_dir = tmp / f"png{gop}"
            png_dir.mkdir()
            t0 = time.perf_counter()
            n = baseline(tmp / name, png_dir)
            t_base = time.perf_counter() - t0
            assert n == N_FRAMES
            print(f"key-frame interval {gop}: {N_FRAMES} frames {W}x{H}, 1 core")
            print(f"  sampled K={K} + detect + crop + segment: {t_sampled:7.2f} s  "
                  f"{N_FRAMES / t_sampled:7.1f} video frames/s  {K / t_sampled:6.1f} crops/s")
            print(f"  baseline decode all + write PNG:        {t_base:7.2f} s  "
                  f"{N_FRAMES / t_base:7.1f} video frames/s")
            print(f"  speed-up: {t_base / t_sampled:.1f}x")


if __name__ == "__main__":
    main()
