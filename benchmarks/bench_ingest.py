"""Still-image decoding and video container opens of the preprocess worker against the plain libraries.

    python benchmarks/bench_ingest.py [--size 1024] [--repeat 15]

Prints, per format (a drawn face with photo-like noise, PNG as FFHQ stores it, JPEG quality 95):
``read_image`` (header parse, EXIF orientation, one decode, the format rules) beside
``cv2.imdecode`` of the same bytes alone (the baseline), min / median ms over ``--repeat`` runs
(the two alternate), and the ratio of medians (target: at most 1.1x). Then how many times one FF++ video item with a mask
opens a container (``av.open``) in ``Worker.process``: one open per file is the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only synthetic inputs
from synthetic import draw_synthetic_face, write_video  # noqa: E402
from timing import interleaved  # noqa: E402

from dfpipe.core.config import build  # noqa: E402
from dfpipe.ingest.images import read_image  # noqa: E402
from dfpipe.ingest.items import Item  # noqa: E402
from dfpipe.ingest.preprocess import PreprocessConfig  # noqa: E402
from dfpipe.ingest.sources import SourceConfig  # noqa: E402
from dfpipe.ingest.worker import Worker  # noqa: E402

from bench_scale import CFG as SCALE_CFG  # noqa: E402 - one preprocess config for the benchmarks

CFG = {**SCALE_CFG, "size": 64, "frames_per_video": 4}


def bench_images(tmp: Path, size: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    bgr = draw_synthetic_face(size, size, size // 2, size // 2, size // 4)[:, :, ::-1].astype(np.int16)
    bgr = np.clip(bgr + rng.normal(0, 6, bgr.shape), 0, 255).astype(np.uint8)
    for ext, params in ((".png", []), (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])):
        path = tmp / f"face{ext}"
        cv2.imwrite(str(path), bgr, params)
        data = np.fromfile(path, np.uint8)
        dec, rej = read_image(path, 10**9)
        assert rej is None and dec is not None and dec.rgb.shape == (size, size, 3), rej
        got = interleaved({"plain": lambda: cv2.imdecode(data, cv2.IMREAD_UNCHANGED),
                           "ours": lambda: read_image(path, 10**9)}, repeat)
        plain, ours = got["plain"], got["ours"]
        ratio = statistics.median(ours) / statistics.median(plain)
        print(f"{size} px {ext[1:]:4s} ({path.stat().st_size / 1e6:.2f} MB): read_image "
              f"{1e3 * min(ours):7.2f} / {1e3 * statistics.median(ours):7.2f} ms, cv2.imdecode alone "
              f"{1e3 * min(plain):7.2f} / {1e3 * statistics.median(plain):7.2f} ms (min / median of {repeat}); "
              f"ratio {ratio:.2f}x (target <= 1.1)")


def count_video_opens(tmp: Path) -> None:
    import av

    vids, masks = tmp / "ff" / "c23" / "videos", tmp / "ff" / "masks" / "videos"
    frames = [draw_synthetic_face(120, 160, 70 + i, 60, 30) for i in range(30)]
    m = [np.pad(np.full((40, 30), 255, np.uint8), ((35, 45), (65, 65))) for _ in range(30)]
    write_video(vids / "000_100.mp4", frames, gop=10)
    write_video(masks / "000_100.mp4", m, gop=10, crf=0, gray=True)
    spec = build(SourceConfig, dict(kind="ffpp", path="ff", label=2, method="F2F", mode="crop",
                                    sampling="every_nth", masks=True))
    worker = Worker(build(PreprocessConfig, CFG), spec, tmp / "ff")
    item = Item("c23/videos/000_100.mp4", True, "000_100", ("000", "100"),
                mask_path="masks/videos/000_100.mp4")
    try:
        with mock.patch.object(av, "open", side_effect=av.open) as opened:
            res = worker.process(item)
    finally:
        worker.close()
    print(f"video item with mask: {opened.call_count} container opens for 2 files "
          f"({res.frames_sampled} frames sampled, {len(res.crops)} crops; target: 1 open per file)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    cv2.setNumThreads(1)  # per-core figures
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        bench_images(Path(tmp), args.size, args.repeat)
        count_video_opens(Path(tmp))


if __name__ == "__main__":
    main()
