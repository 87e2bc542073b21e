"""Benchmark: face detection recall, false detections and speed of each detection policy on real photographs.

Faces: real photographs that installed packages ship (never drawn faces): scikit-image's
``data.astronaut()`` (Eileen Collins, NASA) and matplotlib's ``grace_hopper.jpg`` (US Navy), each
also mirrored. The face box of each photo is a fixed, hand-checked constant (:data:`FACES`). A
head-and-shoulders patch around the face (:data:`CONTEXT` x the face box) is shrunk with
``INTER_AREA`` so that the face is ``w`` pixels wide, ``w`` drawn log-uniformly inside one of the
width buckets (:data:`BUCKETS`, equal counts per bucket), and pasted with a feathered edge into a
1280 x 720 or 1920 x 1080 background, up to three faces per frame, never overlapping.

Backgrounds: real non-face photographs from the same packages (scikit-image's coffee, rocket,
brick, grass, gravel, motorcycle, hubble; scikit-learn's china and flower) scaled to cover the
frame, or multi-octave textured noise. Every frame is scored uncompressed, as JPEG (quality 75)
and as H.264 intra (CRF 23, PyAV; :func:`dfpipe.ingest.codec.apply_codec`). Face-free frames (the
same backgrounds and codecs, no face) count false detections.

A face is found when a detection's box overlaps its box by IoU >= 0.3. Frames/s per core: the
policy's ``detect_all`` alone on the uncompressed 1080p (and 720p) frames, this process pinned to
one CPU (``sched_setaffinity``; OpenCV single-threaded), frames per second of the process's CPU
time (``time.process_time``: MediaPipe's own threads included, time lost to other processes on a
shared machine not), best of 3 passes.

Usage: ``python benchmarks/bench_face_recall.py [--frames 60] [--policies whole tiled ...]
[--min-scores 0.5 0.7]``;
``--tiny``: a few frames, for the test that keeps this script working. Models from
``models/mediapipe/`` (``make setup``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from dfpipe.ingest.codec import apply_codec
from dfpipe.ingest.config import POLICY_INPUT
from dfpipe.ingest.faces import Face, FaceDetector

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "short": ROOT / "models/mediapipe/face_detection_short_range.tflite",
    "full": ROOT / "models/mediapipe/face_detection_full_range_sparse.tflite",
}
#: face box (x, y, w, h) in each photo's own pixels, checked by eye (BlazeFace short-range finds
#: these two photos at score 0.92 / 0.94 with boxes within 2 px of them)
FACES = {"astronaut": (177, 82, 95, 95), "grace_hopper": (171, 146, 194, 194)}
CONTEXT = 2.6  # pasted patch side / face box side: head, hair and shoulders around the face
BUCKETS = ((40, 48), (48, 80), (80, 160), (160, 400))
FRAME_SIZES = ((720, 1280), (1080, 1920))
CODECS = (("none", None, None), ("jpeg75", "jpeg", None), ("h264_crf23", "h264", 23))
MATCH_IOU = 0.3
DEFAULT_TILE = {"tiled": (384, 96), "full_range_tiled": (768, 128)}


def _rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def face_photos() -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(photo, face box) pairs: each real photo and its mirror image."""
    import matplotlib.cbook
    from skimage import data

    photos = {
        "astronaut": np.ascontiguousarray(data.astronaut()),
        "grace_hopper": _rgb(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
    }
    out = []
    for name, img in photos.items():
        x, y, w, h = FACES[name]
        out.append((img, (x, y, w, h)))
        out.append((np.ascontiguousarray(img[:, ::-1]), (img.shape[1] - x - w, y, w, h)))
    return out


def background_photos() -> list[np.ndarray]:
    """Real photographs with no human face in them."""
    import sklearn.datasets
    from skimage import data

    imgs = [data.coffee(), data.rocket(), data.brick(), data.grass(), data.gravel(), data.stereo_motorcycle()[0]]
    imgs.append(data.hubble_deep_field())
    imgs += list(sklearn.datasets.load_sample_images().images)
    return [np.ascontiguousarray(np.dstack([i] * 3) if i.ndim == 2 else i[..., :3]) for i in imgs]


def noise_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured noise: octaves of smoothly enlarged random colour fields, 1/f-like amplitudes."""
    acc = np.zeros((h, w, 3), np.float32)
    for octave in range(2, 8):
        cells = 2**octave
        field = rng.normal(0, 1, (cells * h // w + 2, cells + 2, 3)).astype(np.float32)
        acc += cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC) * (60.0 / octave)
    acc += rng.uniform(60, 190, 3).astype(np.float32)
    return np.clip(acc, 0, 255).astype(np.uint8)


def make_background(rng: np.random.Generator, photos: list[np.ndarray], h: int, w: int) -> np.ndarray:
    k = int(rng.integers(len(photos) + 2))
    if k >= len(photos):  # about one in five: textured noise
        return noise_background(rng, h, w)
    img = photos[k]
    s = max(h / img.shape[0], w / img.shape[1]) * rng.uniform(1.0, 1.5)
    big = cv2.resize(img, (math.ceil(img.shape[1] * s), math.ceil(img.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
    y, x = int(rng.integers(big.shape[0] - h + 1)), int(rng.integers(big.shape[1] - w + 1))
    return np.ascontiguousarray(big[y : y + h, x : x + w])


def paste_face(frame, photo, box, width, cx, cy) -> tuple[int, int, int, int]:
    """Paste a CONTEXT-sized patch of ``photo`` around ``box`` so that the face is ``width`` px
    wide and centred at (cx, cy); returns the pasted face box in frame pixels."""
    fx, fy, fw, fh = box
    s = width / fw
    half = CONTEXT * fw / 2
    x0, y0 = int(fx + fw / 2 - half), int(fy + fh / 2 - half)
    x1, y1 = int(fx + fw / 2 + half), int(fy + fh / 2 + half)
    pad = max(0, -x0, -y0, x1 - photo.shape[1], y1 - photo.shape[0])
    src = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REFLECT) if pad else photo
    patch = src[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    side = max(1, round(patch.shape[0] * s))
    patch = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    # feathered alpha: 1 in the middle, fading out over the outer 15 % of the patch
    ramp = np.clip(np.minimum(np.arange(side), np.arange(side)[::-1]) / max(1.0, 0.15 * side), 0, 1)
    alpha = np.minimum.outer(ramp, ramp)[..., None].astype(np.float32)
    px, py = int(round(cx - side / 2)), int(round(cy - side / 2))
    H, W = frame.shape[:2]
    ax0, ay0, ax1, ay1 = max(px, 0), max(py, 0), min(px + side, W), min(py + side, H)
    sub = patch[ay0 - py : ay1 - py, ax0 - px : ax1 - px].astype(np.float32)
    a = alpha[ay0 - py : ay1 - py, ax0 - px : ax1 - px]
    dst = frame[ay0:ay1, ax0:ax1].astype(np.float32)
    frame[ay0:ay1, ax0:ax1] = np.clip(a * sub + (1 - a) * dst + 0.5, 0, 255).astype(np.uint8)
    w = round(fw * s)
    h = round(fh * s)
    return int(round(cx - w / 2)), int(round(cy - h / 2)), w, h


def compose(rng, faces, backgrounds, h, w, n_faces):
    """One frame with ``n_faces`` non-overlapping faces: (frame, [(box, width bucket)])."""
    frame = make_background(rng, backgrounds, h, w)
    placed: list[tuple[float, float, float]] = []
    truth = []
    for _ in range(n_faces):
        lo, hi = BUCKETS[int(rng.integers(len(BUCKETS)))]
        width = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        r = width * CONTEXT / 2
        for _try in range(50):
            cx = rng.uniform(width * 0.6, w - width * 0.6)
            cy = rng.uniform(width * 0.7, h - width * 0.7)
            if all(math.hypot(cx - px, cy - py) > r + pr for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        photo, box = faces[int(rng.integers(len(faces)))]
        truth.append((paste_face(frame, photo, box, width, cx, cy), (lo, hi)))
    return frame, truth


def iou(a: tuple[int, int, int, int], f: Face) -> float:
    iw = min(a[0] + a[2], f.x + f.w) - max(a[0], f.x)
    ih = min(a[1] + a[3], f.y + f.h) - max(a[1], f.y)
    inter = max(iw, 0) * max(ih, 0)
    return inter / (a[2] * a[3] + f.w * f.h - inter)


def dataset(n_frames: int, n_free: int, seed: int, sizes):
    """Frames per (size, codec): lists of (frame, truth); face-free frames have empty truth."""
    rng = np.random.default_rng(seed)
    faces, backgrounds = face_photos(), background_photos()
    out = {}
    for h, w in sizes:
        raw = [compose(rng, faces, backgrounds, h, w, int(rng.integers(1, 4))) for _ in range(n_frames)]
        raw += [(make_background(rng, backgrounds, h, w), []) for _ in range(n_free)]
        for name, kind, crf in CODECS:
            out[(h, w, name)] = [(f if kind is None else apply_codec(f, kind, crf, 75), t) for f, t in raw]
    return out


def make_detector(policy: str, min_score: float) -> FaceDetector:
    model = MODELS["full" if POLICY_INPUT[policy] == 192 else "short"]
    tile, overlap = DEFAULT_TILE.get(policy, (720, 120))
    # the tiled policies' whole-frame pass: the short-range model (params.yaml preprocess.whole_model)
    whole = MODELS["short"] if policy.endswith("tiled") else None
    return FaceDetector(model, min_score, policy, tile, overlap, whole)


def score(policy: str, data, min_score: float) -> dict:
    hits: dict[tuple[int, tuple[int, int]], list[int]] = {}
    free = {}
    with make_detector(policy, min_score) as det:
        for (h, _w, _codec), frames in data.items():
            for frame, truth in frames:
                found = det.detect_all(frame)
                if not truth:
                    n, k = free.get(h, (0, 0))
                    free[h] = (n + 1, k + len(found))
                for box, bucket in truth:
                    ok = any(iou(box, f) >= MATCH_IOU for f in found)
                    hits.setdefault((h, bucket), []).append(int(ok))
    return {"hits": hits, "free": free}


def speed(policy: str, data, min_score: float, repeat: int = 3) -> tuple[dict[int, float], dict[int, float]]:
    """Frames/s of ``detect_all`` on every uncompressed frame of each height (best of ``repeat``)
    and model runs per frame (windows + candidate checks)."""
    fps, runs = {}, {}
    with make_detector(policy, min_score) as det:
        raw, count = det._detect_raw, [0]

        def counted(img, *args, **kwargs):
            count[0] += 1
            return raw(img, *args, **kwargs)

        for (h, _w, codec), frames in data.items():
            if codec != "none":
                continue
            imgs = [f for f, _ in frames]
            det._detect_raw = counted  # type: ignore[method-assign]
            count[0] = 0
            for img in imgs:
                det.detect_all(img)
            runs[h] = count[0] / len(imgs)
            det._detect_raw = raw  # type: ignore[method-assign]
            best = math.inf
            for _ in range(repeat):
                t = time.process_time()
                for img in imgs:
                    det.detect_all(img)
                best = min(best, time.process_time() - t)
            fps[h] = len(imgs) / best
    return fps, runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="frames with faces per frame size (x 3 codecs)")
    ap.add_argument("--free", type=int, default=40, help="face-free frames per frame size (x 3 codecs)")
    ap.add_argument("--policies", nargs="+", default=list(POLICY_INPUT), choices=list(POLICY_INPUT))
    ap.add_argument("--min-scores", type=float, nargs="+", default=[0.5, 0.7], help="preprocess.min_score values")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="2 + 2 frames at 720p, 1 timing pass (the test)")
    args = ap.parse_args(argv)
    sizes = FRAME_SIZES
    if args.tiny:
        args.frames, args.free, sizes = 2, 2, FRAME_SIZES[:1]
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # one core: frames/s per core
    cv2.setNumThreads(1)
    data = dataset(args.frames, args.free, args.seed, sizes)
    n_faces = sum(len(t) for (h, w, c), fr in data.items() if c == "none" for _, t in fr)
    print(f"# {args.frames} frames with {n_faces} faces + {args.free} face-free frames per size, x {len(CODECS)} "
          f"codecs ({', '.join(c for c, _, _ in CODECS)}); seed {args.seed}")
    heights = [h for h, _ in sizes]
    head = ["policy", "min_score"] + [f"{h}p {lo}-{hi} px" for h in heights for lo, hi in BUCKETS]
    head += [f"{h}p >= 80 px" for h in heights] + [f"{h}p false/frame" for h in heights]
    head += [f"{h}p frames/s/core" for h in heights] + [f"{h}p model runs/frame" for h in heights]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for policy, min_score in [(p, m) for m in args.min_scores for p in args.policies]:
        r = score(policy, data, min_score)
        fps, runs = speed(policy, data, min_score, repeat=1 if args.tiny else 3)
        cells = [policy, f"{min_score:g}"]
        for h in heights:
            for b in BUCKETS:
                v = r["hits"].get((h, b), [])
                cells.append(f"{100 * np.mean(v):.1f} % ({len(v)})" if v else "-")
        for h in heights:
            v = [x for b in BUCKETS if b[0] >= 80 for x in r["hits"].get((h, b), [])]
            cells.append(f"{100 * np.mean(v):.1f} % ({len(v)})" if v else "-")
        for h in heights:
            n, k = r["free"].get(h, (0, 0))
            cells.append(f"{k / n:.3f} ({k}/{n})" if n else "-")
        cells += [f"{fps[h]:.0f}" for h in heights] + [f"{runs[h]:.1f}" for h in heights]
        print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
