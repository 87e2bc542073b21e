"""Face detection, square face crops and person segmentation (MediaPipe Tasks API, OpenCV).

Geometry: MediaPipe's face box ``(x, y, w, h)`` becomes a square of side
``round(max(w, h) * margin)`` centred on the box centre. ``margin = 1.3`` is the FaceForensics++
crop (Rössler et al., ICCV 2019, "enlarged by a factor of 1.3") also used by DeepfakeBench. The
square may pass the image border; the outside is padded with 0 so the face stays centred and
the crop keeps its scale. The same box crops the manipulation mask (nearest neighbour, 0/255).

Face choice (FaceForensics++'s extraction script keeps the largest face): without a mask, the
largest box (``largest``); a single detection is ``only``. With a manipulation mask the frame is a
fake and only the manipulated face may be cropped: the face whose box holds most mask pixels
(``mask_overlap``; ``only`` when it is the single detection). When no detected box touches the
mask there is no choice (``mask_face_not_found``): any other face is an unaltered person, and its
crop would be stored labelled edited with an all-zero mask.

Resampling (one path for every source): the square region is cut at native resolution, then
shrunk with ``cv2.INTER_AREA`` whatever its size; a region smaller than the output is either
rejected or enlarged with one fixed kernel (``INTER_CUBIC``), by the ``upscale`` param, and the
kernel is recorded per crop (``resize_kernel``), with the native side and the scale.

MediaPipe tasks are created once per worker process and must be ``close()``d (context managers).
LiteRT writes about a dozen INFO/WARNING lines per task to file descriptor 2 from C++ (no
environment variable silences them in this build: GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL were
tried); :func:`_quiet_native_logs` drops those lines and passes everything else through.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from dfpipe.ingest.blazeface import BlazeFaceLite
from dfpipe.ingest.config import POLICY_INPUT


@dataclass(frozen=True)
class Face:
    """The most confident detection: box in source pixels (may be clipped by MediaPipe)."""

    x: int
    y: int
    w: int
    h: int
    score: float


@dataclass(frozen=True)
class Box:
    """Square crop box in source pixels; may extend past the image (padded with 0)."""

    x: int
    y: int
    side: int


def _mp_image(rgb: np.ndarray) -> mp.Image:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))


# Start-up, first-inference and shutdown chatter of LiteRT / MediaPipe (C++ logging to fd 2).
_NATIVE_NOISE = re.compile(
    r"^(INFO: |WARNING: Logging before InitGoogle\(\)|[IW]\d{4} [\d:.]+\s+\d+ \S+\] "
    r"(Input tensor memory is not aligned|Feedback manager requires|.*TfLiteXNNPackDelegate|Created TensorFlow))"
    # the full-range model is stored sparse: LiteRT warns once per sparse tensor when loading it
    r"|^WARNING: \[model_load\.cc:\d+\] Sparsity tensors may not yet be fully supported\.$"
)


@contextlib.contextmanager
def _quiet_native_logs():
    """Send fd 2 to a temporary file for the block, then re-emit every line that is not
    :data:`_NATIVE_NOISE` (errors and anything unexpected still reach the terminal)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave logs alone
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines() if not _NATIVE_NOISE.match(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


class _Task:
    """A MediaPipe Tasks object held in ``self._task``: closed explicitly (its ``__del__`` is noisy
    at interpreter exit), usable as a context manager. Creation, the first call and ``close`` run
    under :func:`_quiet_native_logs` (the only moments LiteRT logs)."""

    _task: Any  # a mediapipe vision task (FaceDetector / ImageSegmenter)
    _warm: bool = False

    def _run(self, fn, *args):
        if self._warm:
            return fn(*args)
        with _quiet_native_logs():
            out = fn(*args)
        self._warm = True
        return out

    @staticmethod
    def _base_options(model: str | Path, what: str) -> BaseOptions:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"{model}: {what} model missing (run `python -m dfpipe.core.assets`)")
        return BaseOptions(model_asset_path=str(model))

    def close(self) -> None:
        if self._task is None:
            return
        with _quiet_native_logs():
            self._task.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Merge of overlapping detections (tiled policies): a box is dropped when it overlaps a more
#: confident kept box by IoU > 0.3 (the ``min_suppression_threshold`` of MediaPipe's face
#: detection graphs), or when more than half of the smaller box lies inside the kept one (a face
#: cut by a window border, detected as a part).
NMS_IOU = 0.3
NMS_INSIDE = 0.5
#: Tiled policies: every candidate box is checked again on a square this many times its side,
#: so that the face spans a quarter of the model input, well inside the range where both models
#: detect real faces reliably (16-48+ px of 128, 12-48+ px of 192; benchmarks/bench_face_recall.py).
VERIFY_CONTEXT = 4.0
#: Tiled policies: windows report candidates from this score on (MediaPipe's default
#: ``min_detection_confidence``); a candidate is kept when its re-checked box reaches
#: ``min_score``. Measured (benchmarks/bench_face_recall.py --seed 11, 1080p, full-range, 768 px
#: windows, min_score 0.7, 222 faces of 48-80 px): candidates from 0.3 find 94.6 % of them with
#: 10.3 model runs per frame, from 0.5 86.9 % with 8.6 runs; no false detection in 180 face-free
#: frames either way.
CANDIDATE_SCORE = 0.5
#: Tiled policies: a candidate at least :data:`CHECK_BELOW_PX` pixels wide at the model input,
#: scoring at least :data:`CHECK_BELOW_SCORE` and not touching an inner window border is kept as
#: found, without the check (one model run each). Measured (benchmarks/bench_face_recall.py, 1080p
#: and 720p, full-range, 768 px windows, min_score 0.7): every texture false positive that the
#: check removes scored below 0.84 (16-35 px at the input), so the threshold 0.9 keeps the false
#: detections of the checked policy (0.008 per face-free 1080p frame) and its recall in every
#: width bucket, with 1.4 fewer model runs per 1080p frame; from 0.7, 0.09 false per frame.
CHECK_BELOW_PX = 16
CHECK_BELOW_SCORE = 0.9
#: A window's box this close (model pixels) to a window border that is not the frame's is cut by
#: the window (a part of a face larger than the overlap): it is always checked, on a larger square.
BORDER_PX = 2


def window_origins(length: int, side: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``side`` pixels along an axis of ``length`` pixels: the fewest
    windows with at least ``overlap`` pixels shared by neighbours, spread evenly from 0 to
    ``length - side`` (integer arithmetic: the same offsets on every machine)."""
    if length <= side:
        return [0]
    stride = side - overlap
    n = -(-(length - side) // stride) + 1  # ceil division
    return [(i * (length - side)) // (n - 1) for i in range(n)]


def windows(height: int, width: int, side: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiling windows ``(x, y, w, h)`` of a ``height`` x ``width`` frame, row by row; a frame
    whose both sides fit in one window gives none (the whole-frame pass covers it)."""
    if height <= side and width <= side:
        return []
    w, h = min(side, width), min(side, height)
    return [(x, y, w, h) for y in window_origins(height, h, overlap) for x in window_origins(width, w, overlap)]


def halve(image: np.ndarray) -> np.ndarray:
    """``image`` at half its size: the 2 x 2 means (``INTER_AREA``) of its whole blocks (an odd
    last row or column is dropped)."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return cv2.resize(image[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)


def pyramid(image: np.ndarray, k: int) -> list[tuple[int, np.ndarray]]:
    """``[(1, image), (f, image shrunk f x), ..., (k, image shrunk k x)]``: ``image``, whose sides
    are multiples of ``k``, shrunk with ``INTER_AREA`` by halving steps while ``k`` is even
    (OpenCV's vectorised 2 x 2 mean: 0.66 ms against 2.0 ms for one 4 x step on a 1080p frame, one
    core; each step's rounding differs by at most 1 grey level), then the odd rest in one step,
    each step kept. Every step averages whole blocks, so a window of the last level at a multiple
    of ``k`` equals its native window shrunk alone."""
    levels = [(1, image)]
    f = 1
    while k > 1:
        step = 2 if k % 2 == 0 else k
        if step == 2:
            image = halve(image)
        else:
            image = cv2.resize(image, (image.shape[1] // step, image.shape[0] // step), interpolation=cv2.INTER_AREA)
        k //= step
        f *= step
        levels.append((f, image))
    return levels


def shrink(image: np.ndarray, k: int) -> np.ndarray:
    """``image``, whose sides are multiples of ``k``, shrunk ``k`` x: the last level of :func:`pyramid`."""
    return pyramid(image, k)[-1][1]


def _intersection(a: Face, b: Face) -> int:
    iw = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    ih = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return max(iw, 0) * max(ih, 0)


def _iou(a: Face, b: Face) -> float:
    inter = _intersection(a, b)
    return inter / (a.w * a.h + b.w * b.h - inter) if inter else 0.0


def merge_faces(faces: list[Face]) -> list[Face]:
    """Greedy non-maximum suppression (:data:`NMS_IOU`, :data:`NMS_INSIDE`) in frame pixels:
    most confident first, ties by position and size, so the result does not depend on the order
    the windows ran in."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: (-f.score, f.y, f.x, f.h, f.w)):
        for k in kept:
            inter = _intersection(f, k)
            if inter and (_iou(f, k) > NMS_IOU or inter > NMS_INSIDE * min(f.w * f.h, k.w * k.h)):
                break
        else:
            kept.append(f)
    return kept


class FaceDetector(_Task):
    """BlazeFace (short-range or full-range ``.tflite``) through ``vision.FaceDetector``, run by a
    detection policy (``preprocess.detector``):

    - ``whole`` / ``full_range``: the whole frame, as MediaPipe letterboxes it into the model
      input (``whole`` is the detector as it always was: same boxes, same bytes downstream);
    - ``tiled`` / ``full_range_tiled``: candidates from the whole frame (``whole_model``, default
      the policy's model; the short-range one finds the close-ups this pass is for at a third of
      the full-range cost) and from square windows of ``tile_size``
      source pixels overlapping by at least ``tile_overlap``, each shrunk to the
      model input (``INTER_AREA``), boxes mapped back to frame pixels and merged
      (:func:`merge_faces`); then each small, uncertain or cut candidate (:data:`CHECK_BELOW_PX`,
      :data:`CHECK_BELOW_SCORE`, :data:`BORDER_PX`) is checked on a :data:`VERIFY_CONTEXT` x
      larger square around it (:meth:`_verify`: cut from the most shrunk halving step where it
      still spans the model input), whose box replaces it. The
      whole-frame pass stays: close-ups wider than a window are cut by every window, and their
      parts score too low to be found again (tests/ingest/test_face_policies.py). Every run is
      on a window no larger than the model input, so the tiled policies run the bare model in
      LiteRT (:class:`dfpipe.ingest.blazeface.BlazeFaceLite`: MediaPipe's boxes without the Tasks
      graph's 0.7 ms per call); ``whole`` / ``full_range`` keep MediaPipe Tasks.

    A face ``w`` pixels wide reaches the model at ``w * input / tile_size`` pixels instead of
    ``w * input / max(H, W)``; measured on real photographs (benchmarks/bench_face_recall.py), the
    short-range model finds faces from about 16 px of its 128 px input, the full-range one from
    about 12 px of 192, but at that size both also fire on textures: hence the check at a scale
    where a face fills a quarter of the input.
    """

    def __init__(
        self,
        model: str | Path,
        min_score: float,
        policy: str = "whole",
        tile_size: int = 768,
        tile_overlap: int = 128,
        whole_model: str | Path | None = None,
    ):
        if policy not in POLICY_INPUT:
            raise ValueError(f"detector policy {policy!r}: expected one of {sorted(POLICY_INPUT)}")
        if not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile_overlap {tile_overlap} must be in [0, tile_size {tile_size})")
        self.policy, self.tile_size, self.tile_overlap = policy, tile_size, tile_overlap
        self.min_score, self.tiled = min_score, policy.endswith("tiled")
        self.input_side = POLICY_INPUT[policy]
        # tiled policies: (the windows' and checks' model, the whole-frame pass's model)
        self._lite: tuple[BlazeFaceLite, BlazeFaceLite] | None = None
        if self.tiled:
            # every run is on a window of the model's input size: the bare model in LiteRT, without
            # the Tasks graph's per-call overhead (dfpipe.ingest.blazeface); candidates from
            # CANDIDATE_SCORE, the verified box must reach min_score
            path = self._base_options(model, "face detector").model_asset_path
            with _quiet_native_logs():
                lite = BlazeFaceLite(path, min(min_score, CANDIDATE_SCORE))
                whole = lite
                if whole_model is not None:
                    wpath = self._base_options(whole_model, "whole-frame face detector").model_asset_path
                    whole = BlazeFaceLite(wpath, min(min_score, CANDIDATE_SCORE))
            if lite.side != self.input_side:
                raise ValueError(f"{model}: input {lite.side} px, policy {policy!r} expects {self.input_side}")
            self._lite = (lite, whole)
            self._task = None
            return
        options = vision.FaceDetectorOptions(
            base_options=self._base_options(model, "face detector"),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
        )
        with _quiet_native_logs():
            self._task = vision.FaceDetector.create_from_options(options)

    def _detect_raw(self, rgb: np.ndarray, whole: bool = False) -> list[Face]:
        if self._lite is not None:  # tiled: boxes in whole pixels of rgb, as MediaPipe Tasks converts them
            lite = self._lite[1] if whole else self._lite[0]
            return [Face(x, y, w, h, s) for x, y, w, h, s in self._run(lite.detect, rgb)]
        result = self._run(self._task.detect, _mp_image(rgb))
        faces = []
        for d in result.detections:
            b = d.bounding_box
            faces.append(
                Face(int(b.origin_x), int(b.origin_y), int(b.width), int(b.height), float(d.categories[0].score))
            )
        return faces

    def _detect_scaled(self, region: np.ndarray, x0: int, y0: int, k: float, whole: bool = False) -> list[Face]:
        """Faces in ``region``, a copy of the frame shrunk by ``k`` whose pixel (0, 0) is frame
        pixel (x0, y0): boxes mapped back to frame pixels."""
        return [
            Face(x0 + int(round(f.x * k)), y0 + int(round(f.y * k)), int(round(f.w * k)), int(round(f.h * k)), f.score)
            for f in self._detect_raw(np.ascontiguousarray(region), whole)
        ]

    def _fit(self, region: np.ndarray, side: int | None = None) -> tuple[np.ndarray, float]:
        """``region`` shrunk with ``INTER_AREA`` so that its longer side is the model input
        (MediaPipe's own resize is bilinear, which aliases small faces), and the factor."""
        h, w = region.shape[:2]
        side = side or self.input_side
        if max(h, w) <= side:
            return region, 1.0
        k = max(h, w) / side
        size = (max(1, round(w / k)), max(1, round(h / k)))
        return cv2.resize(region, size, interpolation=cv2.INTER_AREA), k

    def _pyramid(self, rgb: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """The tiled pass's :func:`pyramid` of ``rgb`` down to the factor ``tile_size // input``
        (the last < k rows / columns dropped: no face fits in them); ``[(1, rgb)]`` for a frame
        that fits in one window."""
        H, W = rgb.shape[:2]
        if not windows(H, W, self.tile_size, self.tile_overlap):
            return [(1, rgb)]
        k = max(1, self.tile_size // self.input_side)
        return pyramid(rgb[: H // k * k, : W // k * k], k)

    def _candidates(
        self, rgb: np.ndarray, levels: list[tuple[int, np.ndarray]] | None = None
    ) -> list[tuple[Face, bool]]:
        """Whole frame plus windows, merged, each with whether it must be checked
        (:data:`CHECK_BELOW_PX`, :data:`CHECK_BELOW_SCORE`, :data:`BORDER_PX`). The frame is shrunk
        once by the integer factor ``tile_size // input`` (``levels``, :meth:`_pyramid`, over whole
        k x k blocks: each window of the shrunk frame equals its native window shrunk alone) and
        cut into model-sized windows; a frame that fits in one window is run whole (every
        candidate checked)."""
        H, W = rgb.shape[:2]
        if not windows(H, W, self.tile_size, self.tile_overlap):
            small, k = self._fit(rgb)
            return [(f, True) for f in self._detect_scaled(small, 0, 0, k)]
        k, small = (levels or self._pyramid(rgb))[-1]
        h, w = small.shape[:2]
        # the whole-frame pass: the shrunk frame halved again while it stays at least twice the
        # model input (2 x 2 means: 480 x 270 -> 240 x 135 for 1080p, a quarter of the pixels for
        # the non-integer INTER_AREA step to the input), then fitted to the input
        half, kh = small, k
        while max(half.shape[:2]) >= 2 * self._whole_side and min(half.shape[:2]) >= 2:
            half = halve(half)
            kh *= 2
        whole, k0 = self._fit(half, self._whole_side)
        faces = self._detect_scaled(whole, 0, 0, kh * k0, whole=True)
        # the whole frame's boxes are never cut; size in model pixels is the box over kh * k0
        check = {f for f in faces if f.w < CHECK_BELOW_PX * kh * k0 or f.score < CHECK_BELOW_SCORE}
        for x0, y0, ww, wh in windows(h, w, self.input_side, -(-self.tile_overlap // k)):
            for f in self._detect_raw(np.ascontiguousarray(small[y0 : y0 + wh, x0 : x0 + ww])):
                cut = (
                    (x0 > 0 and f.x <= BORDER_PX)
                    or (y0 > 0 and f.y <= BORDER_PX)
                    or (x0 + ww < w and f.x + f.w >= ww - BORDER_PX)
                    or (y0 + wh < h and f.y + f.h >= wh - BORDER_PX)
                )
                face = Face(x0 * k + f.x * k, y0 * k + f.y * k, f.w * k, f.h * k, f.score)
                faces.append(face)
                if cut or f.w < CHECK_BELOW_PX or f.score < CHECK_BELOW_SCORE:
                    check.add(face)
        return [(f, f in check) for f in merge_faces(faces)]

    @property
    def _whole_side(self) -> int:
        return self._lite[1].side if self._lite is not None else self.input_side

    def _verify(self, rgb: np.ndarray, c: Face, levels: list[tuple[int, np.ndarray]] | None = None) -> Face | None:
        """Run the model again on a square of :data:`VERIFY_CONTEXT` x the candidate's side around
        it (padded with 0 past the border, shrunk to the model input): the face now fills a
        quarter of the input, the scale the detector is most reliable at. The square is cut from
        the most shrunk of ``levels`` (:meth:`_pyramid`) where it still spans the model input
        (its corners widened to that level's pixel grid), else from ``rgb`` at native resolution:
        a 600 px square of a 1080p frame is then shrunk from 300 px, not copied and shrunk at
        600. The best box there that overlaps the candidate (IoU > :data:`NMS_IOU`) replaces it;
        none (a texture that looked like a face at 12 px) drops it."""
        side = max(1, int(round(max(c.w, c.h) * VERIFY_CONTEXT)))
        box = Box(int(round(c.x + c.w / 2 - side / 2)), int(round(c.y + c.h / 2 - side / 2)), side)
        q, img = max(
            ((q, im) for q, im in levels or [] if side >= q * self.input_side), key=lambda t: t[0], default=(1, rgb)
        )
        if q > 1:
            x0, y0 = box.x // q, box.y // q
            s = max(-(-(box.x + side) // q) - x0, -(-(box.y + side) // q) - y0)
            region, k = self._fit(cut_box(img, Box(x0, y0, s)))
            found = self._detect_scaled(region, x0 * q, y0 * q, k * q)
        else:
            region, k = self._fit(cut_box(rgb, box))
            found = self._detect_scaled(region, box.x, box.y, k)
        best = None
        for f in found:
            if _iou(f, c) > NMS_IOU and (best is None or (f.score, -f.y, -f.x) > (best.score, -best.y, -best.x)):
                best = f
        return best

    def detect_all(self, rgb: np.ndarray) -> list[Face]:
        """Every face in ``rgb`` ``(H, W, 3)`` uint8, most confident first (ties: top, then left)."""
        if self.tiled:
            levels = self._pyramid(rgb)
            verified = (self._verify(rgb, c, levels) if check else c for c, check in self._candidates(rgb, levels))
            faces = merge_faces([f for f in verified if f is not None and f.score >= self.min_score])
        else:
            faces = self._detect_raw(rgb)
        return sorted(faces, key=lambda f: (-f.score, f.y, f.x))

    def detect(self, rgb: np.ndarray) -> Face | None:
        """Most confident face in ``rgb`` ``(H, W, 3)`` uint8, or ``None``; ties broken by position."""
        faces = self.detect_all(rgb)
        return faces[0] if faces else None


#: Mask pixels above this grey level are manipulated (FF++ mask videos are lossy H.264).
MASK_THRESHOLD = 127


def choose_face(
    faces: list[Face], mask: np.ndarray | None = None, threshold: int = MASK_THRESHOLD
) -> tuple[Face | None, str]:
    """The face to crop and the rule that chose it (``only``, ``mask_overlap``, ``largest``), or
    ``(None, "mask_face_not_found")``.

    ``mask`` ``(H, W)`` uint8 (manipulation mask, > ``threshold`` = manipulated): the face whose
    box holds most mask pixels wins (``only`` when it is the single detection); when no box holds
    a mask pixel (an empty mask included) the result is ``(None, "mask_face_not_found")``, never
    another face. With no mask, the largest box (FF++ extraction script). Ties: larger box, then
    higher score, then top-left first.
    """
    if not faces:
        raise ValueError("choose_face needs at least one face")

    def size_key(f: Face):
        return (f.w * f.h, f.score, -f.y, -f.x)

    if mask is not None:
        binary = mask > threshold
        h, w = binary.shape[:2]

        def overlap(f: Face) -> int:
            x0, y0 = min(max(f.x, 0), w), min(max(f.y, 0), h)
            x1, y1 = min(max(f.x + f.w, 0), w), min(max(f.y + f.h, 0), h)
            return int(binary[y0:y1, x0:x1].sum())

        scored = [(overlap(f), size_key(f), f) for f in faces]
        best = max(scored, key=lambda t: (t[0], t[1]))
        if best[0] == 0:
            return None, "mask_face_not_found"
        return best[2], "only" if len(faces) == 1 else "mask_overlap"
    if len(faces) == 1:
        return faces[0], "only"
    return max(faces, key=size_key), "largest"


class PersonSegmenter(_Task):
    """Selfie segmentation (``selfie_segmentation.tflite``) through ``vision.ImageSegmenter``."""

    def __init__(self, model: str | Path):
        options = vision.ImageSegmenterOptions(
            base_options=self._base_options(model, "segmentation"),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        with _quiet_native_logs():
            self._task = vision.ImageSegmenter.create_from_options(options)

    def person_probability(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 in [0, 1]: probability that a pixel belongs to the person."""
        result = self._run(self._task.segment, _mp_image(rgb))
        masks = result.confidence_masks
        # the selfie model has one output channel (person); a 2-channel variant has background first
        prob = masks[-1].numpy_view()
        return np.array(prob, dtype=np.float32).reshape(rgb.shape[:2])


def square_box(face: Face, margin: float) -> Box:
    """Square of side ``round(max(w, h) * margin)`` centred on the face box centre."""
    side = max(1, int(round(max(face.w, face.h) * margin)))
    cx = face.x + face.w / 2.0
    cy = face.y + face.h / 2.0
    return Box(int(math.floor(cx - side / 2.0 + 0.5)), int(math.floor(cy - side / 2.0 + 0.5)), side)


def whole_image_box(height: int, width: int) -> Box:
    """The centred square holding the whole image (``raw`` mode: pad to square, no crop)."""
    side = max(height, width)
    return Box((width - side) // 2, (height - side) // 2, side)


def cut_box(image: np.ndarray, box: Box) -> np.ndarray:
    """``image[box]`` of shape ``(side, side, ...)``; pixels outside the image are 0."""
    h, w = image.shape[:2]
    out = np.zeros((box.side, box.side) + image.shape[2:], dtype=image.dtype)
    x0, y0 = max(box.x, 0), max(box.y, 0)
    x1, y1 = min(box.x + box.side, w), min(box.y + box.side, h)
    if x1 > x0 and y1 > y0:
        out[y0 - box.y : y1 - box.y, x0 - box.x : x1 - box.x] = image[y0:y1, x0:x1]
    return out


#: OpenCV interpolation per recorded ``resize_kernel`` name.
KERNELS = {"area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC, "none": None}


def resize_kernel(native: int, size: int, upscale: str = "cubic") -> str | None:
    """The kernel for a ``native``-pixel square region stored at ``size``: ``"area"`` when
    shrinking (any ratio), ``"none"`` when equal, ``upscale`` (``"cubic"``) when enlarging, or
    ``None`` when ``upscale == "reject"`` (the caller rejects the crop as ``small_face``)."""
    if native > size:
        return "area"
    if native == size:
        return "none"
    return None if upscale == "reject" else upscale


def resize_square(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize a square array to ``(size, size, ...)``: the :func:`resize_kernel` policy with cubic
    enlargement (segmentation maps), or nearest neighbour (masks)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    # square input of another size: "area" or "cubic" (never None with upscale="cubic", nor "none")
    interp = cv2.INTER_NEAREST if nearest else KERNELS[cast(str, resize_kernel(image.shape[0], size))]
    assert interp is not None
    return cv2.resize(image, (size, size), interpolation=interp)


def crop_image(image: np.ndarray, box: Box, size: int, kernel: str | None = None) -> np.ndarray:
    """``(size, size, 3)`` uint8 crop of ``image`` ``(H, W, 3)`` at ``box``, resized with ``kernel``
    (a :data:`KERNELS` name; default: :func:`resize_kernel` with cubic up-sampling)."""
    region = cut_box(image, box)
    kernel = kernel or resize_kernel(box.side, size)
    if kernel == "none" or box.side == size:
        return np.ascontiguousarray(region)
    # resize_kernel gives None only for upscale="reject"; "none" returned above
    interp = KERNELS[cast(str, kernel)]
    assert interp is not None
    return cv2.resize(region, (size, size), interpolation=interp)


def crop_mask(mask: np.ndarray, box: Box, size: int, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """``(size, size)`` uint8 in {0, 255}: binarised (``> threshold``) nearest-neighbour crop of ``mask`` ``(H, W)``."""
    binary = np.where(mask > threshold, np.uint8(255), np.uint8(0))
    return resize_square(cut_box(binary, box), size, nearest=True)


def blank_background(crop: np.ndarray, person: np.ndarray, threshold: float) -> np.ndarray:
    """Set pixels of ``crop`` ``(S, S, 3)`` whose person probability ``(S, S)`` is below ``threshold`` to 0."""
    out = crop.copy()
    out[person < threshold] = 0
    return out
