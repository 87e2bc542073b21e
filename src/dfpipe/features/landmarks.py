"""Facial landmarks of a variant's face crops (MediaPipe's 468-point face landmark model), cached per split.

``features@<cache>`` with ``encoder: landmarks`` runs MediaPipe's face landmark model (Face Mesh
v1, ``face_landmark.tflite`` of the ``mediapipe==0.10.21`` wheel, pinned in
:mod:`dfpipe.core.assets`) once over every crop of one variant and writes
``<out_dir>/landmarks/<variant>/<split>/`` in the layout of the other feature caches
(:class:`dfpipe.features.encoders.FeatureCache` reads it):

- ``features-NNNNN.npy``: float16 ``(n, 468, 2)`` landmark ``(x, y)`` normalised to the crop
  (0 = left / top edge, 1 = right / bottom edge), row ``i`` = manifest row ``i``. An item whose
  landmarks were rejected holds NaN (never zeros, which would be a face in the top-left corner);
- ``ids.parquet``: the manifest ids in that order;
- ``landmarks.parquet``: per item ``id``, ``status`` (``ok`` or the rejection reason) and
  ``presence`` (the model's face score after its sigmoid);
- ``index.json``: count, shape, dtype, shards, ``ids_sha256``, the encoder config and the count of
  every status.

The model (MediaPipe's ``face_landmark_cpu`` graph, v0.10.21): the crop resized to 192x192 RGB
with values in [0, 1]; output ``conv2d_21`` = 468 x (x, y, z) in input pixels (z relative depth,
not kept: only the 2-D points are used), output ``conv2d_31`` = one face-presence logit, which the
graph passes through a sigmoid. An item is ``no_face_landmarks`` when that score is below
``min_presence`` (0.5 = the graph's and the Tasks FaceLandmarker's default
``min_face_presence_confidence``): the points of a crop without a face are meaningless.

Runtime: the Tasks API cannot run a bare ``.tflite`` (FaceLandmarker wants a ``.task`` bundle with
a face detector), and mediapipe exposes no interpreter, so the model runs in LiteRT
(``ai-edge-litert``, the TFLite interpreter) with its default XNNPACK CPU delegate on one thread
(pinned: no reduction order depends on the core count), one crop at a time: same crops + same
model => byte-identical files on a machine (tests/features/test_landmarks.py). XNNPACK picks its
kernels by the CPU's instruction set, so another CPU family may differ in the last bits; float16
storage (about 0.1 px of a 192-px crop) absorbs most of that. The builtin kernels without XNNPACK
run about 60 ms a crop against about 2 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from dfpipe.core.config import Config, RepoPath
from dfpipe.core.io import sha256_file, write_json
from dfpipe.core.manifest import SPLITS, write_table
from dfpipe.features.batches import ids_digest, iter_image_batches, open_cache

ENCODER = "landmarks"  # features.encoders.<name> and the cache folder <out_dir>/landmarks/<variant>
INPUT_SIZE = 192  # the model's input side (face_landmark.tflite)
NUM_LANDMARKS = 468
STATUS_OK = "ok"
STATUS_NO_FACE = "no_face_landmarks"  # face-presence score below min_presence
STATUSES = (STATUS_OK, STATUS_NO_FACE)
# the layout of dfpipe.features.encoders' caches (that module imports this one, not the reverse)
INDEX_FILE = "index.json"
IDS_FILE = "ids.parquet"
SHARD_PREFIX = "features"
STATUS_FILE = "landmarks.parquet"
IDS_SCHEMA = pa.schema([pa.field("id", pa.string())])
STATUS_SCHEMA = pa.schema(
    [pa.field("id", pa.string()), pa.field("status", pa.string()), pa.field("presence", pa.float32())]
)
LANDMARKS_OUTPUT = "conv2d_21"  # (1, 1, 1, 1404): 468 x (x, y, z) in input pixels
PRESENCE_OUTPUT = "conv2d_31"  # (1, 1, 1, 1): face-presence logit


class LandmarkEncoder(Config):
    """``features.encoders.landmarks``: ``model`` (the assets stage's ``face_landmark.tflite``) used only
    with its pinned ``sha256``; ``min_presence``: the face score below which an item's landmarks are
    rejected (``no_face_landmarks``)."""

    model: RepoPath
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    min_presence: float = Field(ge=0, le=1)


class LandmarkModel:
    """MediaPipe's face landmark model in LiteRT: ``(S, S, 3)`` uint8 crops -> points and presence."""

    def __init__(self, path: str | Path, sha256: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: face landmark model missing; run the assets stage (`make setup`)")
        if sha256 is not None and sha256_file(path) != sha256:
            raise ValueError(f"{path}: sha256 {sha256_file(path)} does not match the pinned {sha256}")
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        (inp,) = self.interpreter.get_input_details()
        if tuple(inp["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or inp["dtype"] != np.float32:
            raise ValueError(f"{path}: expected a (1, 192, 192, 3) float32 input, got {inp['shape']} {inp['dtype']}")
        self._input = inp["index"]
        outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        if {LANDMARKS_OUTPUT, PRESENCE_OUTPUT} - set(outputs):
            raise ValueError(f"{path}: outputs {sorted(outputs)}, expected {LANDMARKS_OUTPUT} and {PRESENCE_OUTPUT}")
        self._points, self._presence = outputs[LANDMARKS_OUTPUT], outputs[PRESENCE_OUTPUT]

    def __call__(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """One ``(S, S, 3)`` uint8 crop -> ``(468, 2)`` float32 points normalised to the crop, and the
        face-presence probability."""
        self.interpreter.set_tensor(self._input, model_input(crop))
        self.interpreter.invoke()
        points = self.interpreter.get_tensor(self._points).reshape(NUM_LANDMARKS, 3)[:, :2] / INPUT_SIZE
        logit = float(self.interpreter.get_tensor(self._presence).reshape(()))
        return points.astype(np.float32), float(1.0 / (1.0 + np.exp(-logit)))


def model_input(crop: np.ndarray) -> np.ndarray:
    """``(S, S, 3)`` uint8 -> ``(1, 192, 192, 3)`` float32 in [0, 1]: bilinear resize, antialiased
    when shrinking (torch on the CPU, as the other caches resize)."""
    import torch
    import torch.nn.functional as F

    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected a uint8 (S, S, 3) crop, got {crop.dtype} {crop.shape}")
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].float().div_(255.0)
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=x.shape[-1] > INPUT_SIZE
        )
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy(), dtype=np.float32)


def landmark_row(model: LandmarkModel, crop: np.ndarray, min_presence: float) -> tuple[np.ndarray, str, float]:
    """One crop -> ``(468, 2)`` float16 points (NaN when rejected), status, presence."""
    points, presence = model(crop)
    if not np.isfinite(points).all() or not np.isfinite(presence):
        raise ValueError("face landmark model output is not finite")
    if presence < min_presence:
        return np.full((NUM_LANDMARKS, 2), np.nan, np.float16), STATUS_NO_FACE, presence
    return points.astype(np.float16), STATUS_OK, presence


def build_split(
    split_dir: Path, out_dir: Path, model: LandmarkModel, cfg: LandmarkEncoder, batch_size: int, shard_size: int, meta
) -> dict:
    """Landmarks of one variant split in manifest order; writes the cache files (module docstring)."""
    import pandas as pd

    df, ids, writer = open_cache(split_dir, out_dir, SHARD_PREFIX, shard_size)
    statuses: list[str] = []
    presence: list[float] = []
    for _, images in iter_image_batches(split_dir, df, batch_size, str(split_dir)):
        for crop in images:
            row, status, score = landmark_row(model, crop, cfg.min_presence)
            writer.add(row)
            statuses.append(status)
            presence.append(score)
    shards = writer.close()
    write_table(pd.DataFrame({"id": ids}), out_dir / IDS_FILE, IDS_SCHEMA)
    table = pd.DataFrame({"id": ids, "status": statuses, "presence": np.asarray(presence, np.float32)})
    write_table(table, out_dir / STATUS_FILE, STATUS_SCHEMA)
    index = {
        "count": len(ids),
        "shape": [NUM_LANDMARKS, 2],
        "dtype": "float16",
        "shard_size": shard_size,
        "shards": shards,
        "ids_sha256": ids_digest(ids),
        "status": {s: statuses.count(s) for s in STATUSES},
        **meta,
    }
    write_json(out_dir / INDEX_FILE, index)
    return index


def build_landmark_cache(
    cfg: LandmarkEncoder, variants_dir: Path, variant: str, out: Path, batch_size: int, shard_size: int
) -> dict[str, dict]:
    """Landmarks of every split of ``variant`` under ``out`` (``<out_dir>/landmarks/<variant>``)."""
    from dfpipe.core.config import to_dict

    model = LandmarkModel(cfg.model, cfg.sha256)
    meta: dict[str, Any] = {"encoder": ENCODER, "variant": variant, "random": False, "config": to_dict(cfg)}
    return {
        split: build_split(variants_dir / variant / split, out / split, model, cfg, batch_size, shard_size, meta)
        for split in SPLITS
    }


def read_status(split_dir: str | Path):
    """A cached split's ``landmarks.parquet`` (``id``, ``status``, ``presence``) in manifest order."""
    from dfpipe.core.manifest import read_table

    return read_table(Path(split_dir) / STATUS_FILE, STATUS_SCHEMA)


def render_maps(points: np.ndarray, ok: np.ndarray, size: int, out: np.ndarray) -> None:
    """Draw each item's landmarks into ``out`` ``(B, size, size)`` uint8: 255 at every point's pixel
    (points clipped into the crop, so an ``ok`` item always has one), 0 elsewhere; an item that is not
    ``ok`` stays all 0, the model's explicit "landmarks missing" signal.
    ``points`` ``(B, 468, 2)`` normalised (x, y); ``ok`` ``(B,)`` bool."""
    out[:] = 0
    rows = np.flatnonzero(ok)
    if len(rows) == 0:
        return
    pix = np.clip(np.floor(points[rows].astype(np.float32) * size), 0, size - 1).astype(np.int64)
    item = np.repeat(rows, pix.shape[1])
    out[item, pix[..., 1].ravel(), pix[..., 0].ravel()] = 255
