"""BlazeFace (short-range or full-range ``.tflite``) run in LiteRT: model-sized RGB windows -> scored boxes.

The tiled detection policies (:class:`dfpipe.ingest.faces.FaceDetector`) run the model 5-10
times per frame on windows that are already the model's input size; MediaPipe's Tasks
``FaceDetector`` adds about 0.7 ms of graph overhead to each 3.0 ms full-range run (one thread,
measured with benchmarks/bench_face_recall.py's pinned core). This module runs the same ``.tflite``
in LiteRT (``ai-edge-litert``, default XNNPACK delegate, one thread: same input => same bytes on a
machine, as :mod:`dfpipe.features.landmarks`) and decodes it as MediaPipe's face detection graph
(``mediapipe/modules/face_detection/face_detection.pbtxt`` and the Tasks ``face_detector_graph``):

- input: the window centred in the ``S x S`` input (``S`` = 128 short-range, 192 full-range), as
  MediaPipe letterboxes a window whose longer side is ``S`` (``(S - side) // 2`` rows or columns
  before it; MediaPipe shifts by half a pixel more, interpolating, when ``S - side`` is odd, and
  enlarges a window smaller than ``S`` both ways, which is not done here), RGB scaled to
  [-1, 1]; the rest of the input is -1 (black, MediaPipe's ``BORDER_ZERO``);
- SSD anchors with fixed size 1 (``SsdAnchorsCalculator``): short-range strides 8, 16, 16, 16
  (2 anchors per 8-px cell, 6 per 16-px cell: 896), full-range stride 4 (1 per cell: 2304), centres
  at the cell centres;
- boxes ``(x, y, w, h)`` relative to the anchor in input pixels (``reverse_output_order``), score =
  sigmoid of the logit clipped to +-100 (``TensorsToDetectionsCalculator``);
- weighted non-maximum suppression at IoU 0.3 (``NonMaxSuppressionCalculator``, ``WEIGHTED``): the
  most confident box takes every box overlapping it by IoU > 0.3, their corners averaged by score,
  its own score kept.

Boxes come back as MediaPipe Tasks returns them (:func:`pixel_boxes`, the Tasks graph's
``DetectionTransformationCalculator``): whole pixels of the window, each of ``x, y, w, h`` its
relative value (float32) times the window's side, truncated toward zero and bounded to
``[0, side]``, so that the two runners give the same integers for the same detection
(tests/ingest/test_blazeface.py); the caller maps them to frame pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: MediaPipe's ``min_suppression_threshold`` for face detection
NMS_IOU = 0.3
#: (input side -> strides of the anchor layers, anchors per cell of each layer) of the two models
ANCHOR_LAYERS = {128: ((8, 2), (16, 6)), 192: ((4, 1),)}
#: uint8 -> [-1, 1] (MediaPipe's ``ImageToTensorCalculator`` output range of both models)
_SCALE = np.float32(2.0 / 255.0)


def anchors(side: int) -> np.ndarray:
    """``(N, 2)`` float32 anchor centres in input pixels, in the model's output order (layer, row,
    column, anchor of the cell)."""
    out = []
    for stride, per_cell in ANCHOR_LAYERS[side]:
        n = -(-side // stride)
        c = (np.arange(n, dtype=np.float64) + 0.5) / n * side
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression of ``(N, 4)`` ``(x0, y0, x1, y1)`` boxes:
    ``(M, 4)`` blended boxes and the ``(M,)`` scores of their leaders, most confident first (ties:
    the earlier anchor)."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order].astype(np.float64), scores[order].astype(np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    out_boxes, out_scores = [], []
    alive = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        iw = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        inter = iw * ih
        union = area[i] + area - inter
        group = alive & (inter > iou * np.where(union > 0, union, np.inf))
        group[i] = True
        w = scores[group]
        out_boxes.append((boxes[group] * w[:, None]).sum(axis=0) / w.sum())
        out_scores.append(scores[i])
        alive &= ~group
    return np.array(out_boxes, np.float64).reshape(-1, 4), np.array(out_scores, np.float64)


def pixel_boxes(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(M, 4)`` int64 ``(x, y, w, h)`` of ``(M, 4)`` ``(x0, y0, x1, y1)`` boxes in the pixels of a
    ``width`` x ``height`` image, converted as MediaPipe Tasks converts a detection's relative box
    (``ConvertRelativeBoundingBoxToBoundingBox`` in
    ``mediapipe/calculators/util/detection_transformation_calculator.cc``): ``xmin``, ``ymin``,
    ``width``, ``height`` relative to the image as float32, each times the image side in float32,
    converted to int (truncation toward zero), then bounded to ``[0, side]`` (a box past the left
    border starts at 0 and keeps its width). Rounding instead gave other integers for 295 of 340
    detections on generated windows (tests/ingest/test_blazeface.py's images)."""
    size = np.array([width, height, width, height], np.float32)
    rel = np.stack(
        [corners[:, 0], corners[:, 1], corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]], axis=1
    ) / size.astype(np.float64)  # relative in float64 (the sides are exact), then float32 as MediaPipe
    px = np.trunc(rel.astype(np.float32) * size).astype(np.int64)
    return np.clip(px, 0, size.astype(np.int64))


class BlazeFaceLite:
    """One BlazeFace ``.tflite`` in a one-thread LiteRT interpreter; :meth:`detect` takes an
    ``(h, w, 3)`` uint8 RGB window with ``h, w <= side``."""

    def __init__(self, model: str | Path, min_score: float):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter: Any = Interpreter(model_path=str(model), num_threads=1)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        self.side = int(inp["shape"][1])
        if self.side not in ANCHOR_LAYERS:
            raise ValueError(f"{model}: input side {self.side}, expected a BlazeFace model (128 or 192)")
        self._input = inp["index"]
        # regressors (1, N, 16) and classificators (1, N, 1), told apart by their last dimension
        outs = {int(d["shape"][-1]): d["index"] for d in self.interpreter.get_output_details()}
        self._boxes, self._logits = outs[16], outs[1]
        self.anchors = anchors(self.side)
        self.min_score = min_score
        self._logit_min = float(np.log(min_score / (1.0 - min_score))) if 0 < min_score < 1 else -np.inf
        self._buf = np.full((1, self.side, self.side, 3), -1.0, np.float32)

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        """``(x, y, w, h, score)``, the box in whole pixels of ``rgb`` (:func:`pixel_boxes`), most
        confident first, score >= ``min_score``."""
        h, w = rgb.shape[:2]
        if h > self.side or w > self.side or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected (<= {self.side}, <= {self.side}, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        buf = self._buf
        # MediaPipe letterboxes a smaller window centred (ImageToTensorCalculator, keep_aspect_ratio,
        # BORDER_ZERO): a 192 x 180 window sits 6 rows down; the same place here (the stride-4
        # anchor grid makes the offset matter for small faces)
        ox, oy = (self.side - w) // 2, (self.side - h) // 2
        if h < self.side or w < self.side:
            buf.fill(-1.0)
        view = buf[0, oy : oy + h, ox : ox + w]
        np.multiply(rgb, _SCALE, out=view, dtype=np.float32)
        view -= 1.0
        self.interpreter.set_tensor(self._input, buf)
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self._logits)[0, :, 0]
        keep = np.flatnonzero(np.clip(logits, -100.0, 100.0) >= self._logit_min)
        if not len(keep):
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep].astype(np.float64), -100.0, 100.0)))
        ok = scores >= self.min_score
        keep, scores = keep[ok], scores[ok]
        raw = self.interpreter.get_tensor(self._boxes)[0, keep, :4].astype(np.float64)
        cx = raw[:, 0] + (self.anchors[keep, 0] - ox)
        cy = raw[:, 1] + (self.anchors[keep, 1] - oy)
        corners = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1)
        boxes, best = weighted_nms(corners, scores)
        return [(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(s)) for b, s in zip(pixel_boxes(boxes, w, h), best)]

    def close(self) -> None:
        self.interpreter = None
