"""Face detection, square face crops and person segmentation (MediaPipe Tasks API, OpenCV).

Geometry: MediaPipe's face box ``(x, y, w, h)`` becomes a square of side
``round(max(w, h) * margin)`` centred on the box centre. ``margin = 1.3`` is the FaceForensics++
crop (Rössler et al., ICCV 2019, "enlarged by a factor of 1.3") also used by DeepfakeBench. The
square may pass the image border; the outside is padded with 0 so the face stays centred and
the crop keeps its scale. The same box crops the manipulation mask (nearest neighbour, 0/255).

MediaPipe tasks are created once per worker process and must be ``close()``d (context managers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision


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


class _Task:
    """A MediaPipe Tasks object held in ``self._task``: closed explicitly (its ``__del__`` is noisy
    at interpreter exit), usable as a context manager."""

    _task: object

    @staticmethod
    def _base_options(model: str | Path, what: str) -> BaseOptions:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"{model}: {what} model missing (run `python -m dfpipe.core.assets`)")
        return BaseOptions(model_asset_path=str(model))

    def close(self) -> None:
        self._task.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FaceDetector(_Task):
    """BlazeFace short-range (``face_detection_short_range.tflite``) through ``vision.FaceDetector``."""

    def __init__(self, model: str | Path, min_score: float):
        options = vision.FaceDetectorOptions(
            base_options=self._base_options(model, "face detector"),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
        )
        self._task = vision.FaceDetector.create_from_options(options)

    def detect(self, rgb: np.ndarray) -> Face | None:
        """Most confident face in ``rgb`` ``(H, W, 3)`` uint8, or ``None``; ties broken by position."""
        result = self._task.detect(_mp_image(rgb))
        best = None
        for d in result.detections:
            b = d.bounding_box
            face = Face(int(b.origin_x), int(b.origin_y), int(b.width), int(b.height), float(d.categories[0].score))
            if best is None or (face.score, -face.y, -face.x) > (best.score, -best.y, -best.x):
                best = face
        return best


class PersonSegmenter(_Task):
    """Selfie segmentation (``selfie_segmentation.tflite``) through ``vision.ImageSegmenter``."""

    def __init__(self, model: str | Path):
        options = vision.ImageSegmenterOptions(
            base_options=self._base_options(model, "segmentation"),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self._task = vision.ImageSegmenter.create_from_options(options)

    def person_probability(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 in [0, 1]: probability that a pixel belongs to the person."""
        result = self._task.segment(_mp_image(rgb))
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
        out[y0 - box.y:y1 - box.y, x0 - box.x:x1 - box.x] = image[y0:y1, x0:x1]
    return out


def resize_square(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize a square array to ``(size, size, ...)``: INTER_AREA down, INTER_CUBIC up, or nearest."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def crop_image(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 crop of ``image`` ``(H, W, 3)`` at ``box``."""
    return resize_square(cut_box(image, box), size)


def crop_mask(mask: np.ndarray, box: Box, size: int, threshold: int = 127) -> np.ndarray:
    """``(size, size)`` uint8 in {0, 255}: binarised (``> threshold``) nearest-neighbour crop of ``mask`` ``(H, W)``."""
    binary = np.where(mask > threshold, np.uint8(255), np.uint8(0))
    return resize_square(cut_box(binary, box), size, nearest=True)


def blank_background(crop: np.ndarray, person: np.ndarray, threshold: float) -> np.ndarray:
    """Set pixels of ``crop`` ``(S, S, 3)`` whose person probability ``(S, S)`` is below ``threshold`` to 0."""
    out = crop.copy()
    out[person < threshold] = 0
    return out
