"""The preprocess stage: one raw source -> face crops in shards + manifest + rejects + metrics.

Per item (an image, or the sampled frames of a video): decode, detect the most confident face,
crop a square around it (``mode: crop``), optionally blank the background with the selfie
segmenter (``crop_seg``), or keep the whole image padded to a square (``raw``); crop the
manipulation mask with the same box. Items are processed in parallel (one MediaPipe detector and
segmenter per worker process) and their results re-ordered by item before anything is written, so
the output bytes do not depend on the number of workers.

Outputs in ``out_dir``: ``images-NNNNN.npy`` ``(N, size, size, 3)`` uint8, ``masks-NNNNN.npy``
``(N, size, size)`` uint8 0/255 (sources with masks), ``manifest.parquet`` (``FACE_SCHEMA``, sorted
by id), ``rejects.parquet`` (``REJECT_SCHEMA``, sorted); and a metrics JSON.
"""

from __future__ import annotations

import math
import multiprocessing as mpr
import multiprocessing.util
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from dfpipe.core.config import Config, RepoPath

from dfpipe.ingest.faces import (
    Box, FaceDetector, PersonSegmenter, blank_background, crop_image, crop_mask, cut_box,
    resize_square, square_box, whole_image_box,
)
from dfpipe.core.io import array_hash, resolve_inside, write_json
from dfpipe.core.manifest import FACE_SCHEMA, REJECT_SCHEMA, write_faces, write_rejects
from dfpipe.core.shards import ShardWriter
from dfpipe.ingest.sources import Item, Reject, SourceConfig, list_items
from dfpipe.ingest.video import VideoError, probe, read_frames, sample_indices


class PreprocessConfig(Config):
    """The ``preprocess:`` section of params.yaml (shared by every source)."""

    detector_model: RepoPath
    segmenter_model: RepoPath
    margin: float = Field(ge=1.0, le=4.0)  # crop side = max(w, h) * margin; 1.3 as FaceForensics++ / DeepfakeBench
    size: int = Field(ge=8, le=1024)       # stored crop side in pixels
    min_score: float = Field(ge=0, le=1)   # face detector confidence threshold
    min_face: int = Field(ge=1)            # smallest accepted face box side, source pixels
    every_n: int = Field(ge=1)             # every_nth policy: frames 0, N, 2N, ...
    frames_per_video: int = Field(ge=1)    # per_video policy: K evenly spaced frames
    seg_threshold: float = Field(ge=0, le=1)  # person probability above which a pixel is foreground
    seg_background: Literal["blank", "keep"]  # crop_seg: zero the background, or keep it
    min_person: float = Field(ge=0, le=1)  # crop_seg (blank or keep): reject crops with less foreground than this
    max_pixels: int = Field(ge=1)          # larger images are rejected before decoding (decompression bombs)
    shard_size: int = Field(ge=1)
    workers: int = Field(ge=1)


@dataclass
class Crop:
    """One stored face: manifest fields plus pixels (``image`` (S, S, 3), ``mask`` (S, S) or None)."""

    frame_index: int
    n_frames: int
    box: Box
    det_score: float
    image: np.ndarray
    mask: np.ndarray | None


@dataclass
class ItemResult:
    crops: list[Crop]
    rejects: list[Reject]
    frames_sampled: int


# ---------------------------------------------------------------------------------------------
# image loading


def read_image(path: Path, max_pixels: int) -> tuple[np.ndarray | None, Reject | None]:
    """``(H, W, 3)`` uint8 RGB, or a reject for unreadable / odd images.

    Grayscale, 16-bit and translucent RGBA images are rejected rather than converted: a real or
    fake class whose images differ in format from the others is a shortcut a detector learns.
    A fully opaque alpha channel is dropped (the pixels are unchanged).
    """
    rel = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, Reject(rel, -1, "unreadable", str(exc))
    if size == 0:
        return None, Reject(rel, -1, "empty_file", "zero-byte file")
    from PIL import Image  # header only: the size is known before any pixel is decoded

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject with its text
        return None, Reject(rel, -1, "unreadable", f"not a readable image: {exc}")
    if w * h > max_pixels:
        return None, Reject(rel, -1, "too_large", f"{w}x{h} exceeds max_pixels {max_pixels}")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None, Reject(rel, -1, "unreadable", "OpenCV could not decode the image (truncated?)")
    if img.dtype != np.uint8:
        return None, Reject(rel, -1, "bit_depth", f"{img.dtype} pixels, expected 8-bit")
    if img.ndim == 2 or img.shape[2] == 1:
        return None, Reject(rel, -1, "grayscale", f"single-channel image {img.shape}")
    if img.shape[2] == 4:
        if int(img[:, :, 3].min()) < 255:
            return None, Reject(rel, -1, "alpha", "translucent RGBA image")
        img = img[:, :, :3]
    if img.shape[2] != 3:
        return None, Reject(rel, -1, "channels", f"{img.shape[2]} channels")
    return np.ascontiguousarray(img[:, :, ::-1]), None


# ---------------------------------------------------------------------------------------------
# per-worker processing


class Worker:
    """Holds the MediaPipe tasks of one process; :meth:`process` turns an item into crops."""

    def __init__(self, cfg: PreprocessConfig, spec: SourceConfig, root: Path):
        self.cfg, self.spec, self.root = cfg, spec, Path(root)
        self.detector = FaceDetector(cfg.detector_model, cfg.min_score) if spec.mode != "raw" else None
        self.segmenter = PersonSegmenter(cfg.segmenter_model) if spec.mode == "crop_seg" else None

    def close(self) -> None:
        for task in (self.detector, self.segmenter):
            if task is not None:
                task.close()
        self.detector = self.segmenter = None

    def process(self, item: Item) -> ItemResult:
        try:
            return self._video(item) if item.is_video else self._image(item)
        except (VideoError, OSError, ValueError) as exc:
            return ItemResult([], [Reject(item.path, -1, "unreadable", str(exc))], 0)

    def _face(self, rgb: np.ndarray, rel: str, frame: int, n_frames: int, mask: np.ndarray | None):
        """Crop one frame/image; returns ``(Crop, None)`` or ``(None, Reject)``."""
        cfg = self.cfg
        if self.spec.mode == "raw":
            box, score = whole_image_box(*rgb.shape[:2]), math.nan
        else:
            face = self.detector.detect(rgb)
            if face is None:
                return None, Reject(rel, frame, "no_face", f"no face with score >= {cfg.min_score}")
            if max(face.w, face.h) < cfg.min_face:
                return None, Reject(rel, frame, "small_face", f"face {face.w}x{face.h} < min_face {cfg.min_face}")
            box, score = square_box(face, cfg.margin), face.score
        image = crop_image(rgb, box, cfg.size)
        if self.segmenter is not None:
            # Segment the whole frame, then crop the probability map with the face box: the
            # selfie model needs head-and-shoulders context, a tight face crop alone is unreliable.
            person = resize_square(cut_box(self.segmenter.person_probability(rgb), box), cfg.size)
            fg = float((person >= cfg.seg_threshold).mean())
            if fg < cfg.min_person:
                return None, Reject(rel, frame, "no_person", f"foreground {fg:.3f} < min_person {cfg.min_person}")
            if cfg.seg_background == "blank":
                image = blank_background(image, person, cfg.seg_threshold)
        m = crop_mask(mask, box, cfg.size) if mask is not None else None
        return Crop(frame, n_frames, box, score, image, m), None

    def _image(self, item: Item) -> ItemResult:
        path = resolve_inside(self.root, item.path)
        rgb, rej = read_image(path, self.cfg.max_pixels)
        if rej is not None:
            return ItemResult([], [Reject(item.path, -1, rej.reason, rej.detail)], 0)
        crop, rej = self._face(rgb, item.path, -1, -1, None)
        return ItemResult([crop] if crop else [], [rej] if rej else [], 0)

    def _video(self, item: Item) -> ItemResult:
        cfg, rel = self.cfg, item.path
        path = resolve_inside(self.root, rel)
        info = probe(path)
        if info.width * info.height > self.cfg.max_pixels:
            return ItemResult([], [Reject(rel, -1, "too_large", f"{info.width}x{info.height} frames")], 0)
        indices = sample_indices(info.n_frames, self.spec.sampling, cfg.every_n, cfg.frames_per_video)
        masks: dict[int, np.ndarray] | None = None
        if item.mask_path is not None:
            mpath = resolve_inside(self.root, item.mask_path)
            if not mpath.is_file():
                return ItemResult([], [Reject(rel, -1, "mask_missing", f"{item.mask_path} not found")], 0)
            try:
                minfo = probe(mpath)
            except VideoError as exc:
                return ItemResult([], [Reject(rel, -1, "mask_unreadable", str(exc))], 0)
            if minfo.n_frames < info.n_frames:
                return ItemResult([], [Reject(rel, -1, "mask_short",
                                              f"mask {minfo.n_frames} frames < video {info.n_frames}")], 0)
            if (minfo.width, minfo.height) != (info.width, info.height):
                return ItemResult([], [Reject(rel, -1, "mask_size",
                                              f"mask {minfo.width}x{minfo.height} != video {info.width}x{info.height}")], 0)
            masks, merr = read_frames(mpath, indices, minfo, gray=True)
        frames, err = read_frames(path, indices, info)
        crops, rejects = [], []
        truncated = info.demux_error or info.declared_frames > info.n_frames
        for idx in indices:
            if idx not in frames:
                detail = err or "frame not decoded"
                if truncated:
                    detail += f"; header declares {info.declared_frames} frames, {info.n_frames} readable"
                rejects.append(Reject(rel, idx, "truncated" if truncated else "decode_failed", detail))
                continue
            mask = None
            if masks is not None:
                mask = masks.get(idx)
                if mask is None:
                    rejects.append(Reject(rel, idx, "mask_decode_failed", merr or "mask frame not decoded"))
                    continue
            crop, rej = self._face(frames[idx], rel, idx, info.n_frames, mask)
            if crop is not None:
                crops.append(crop)
            else:
                rejects.append(rej)
        return ItemResult(crops, rejects, len(indices))


_WORKER: Worker | None = None
_INIT_ERROR: str = ""


def _init_worker(cfg: PreprocessConfig, spec: SourceConfig, root: Path) -> None:
    global _WORKER, _INIT_ERROR
    cv2.setNumThreads(1)  # one process per core already
    try:
        _WORKER = Worker(cfg, spec, root)
    except Exception as exc:  # noqa: BLE001 - a failing initializer makes Pool respawn forever
        _INIT_ERROR = f"{type(exc).__name__}: {exc}"
        return
    # Pool workers leave through os._exit: atexit does not run, multiprocessing finalizers do.
    multiprocessing.util.Finalize(_WORKER, _WORKER.close, exitpriority=10)


def _work(item: Item) -> ItemResult:
    if _WORKER is None:
        raise RuntimeError(f"preprocess worker could not start: {_INIT_ERROR}")
    return _WORKER.process(item)


# ---------------------------------------------------------------------------------------------
# the stage


def _clear_outputs(out_dir: Path) -> None:
    """Remove shards and manifests of a previous run (a smaller run must not leave stale shards)."""
    for pattern in ("images-*.npy", "masks-*.npy", "manifest.parquet", "rejects.parquet"):
        for p in sorted(out_dir.glob(pattern)):
            p.unlink()


def run_source(
    name: str, spec: SourceConfig, cfg: PreprocessConfig, out_dir: str | Path,
    metrics_path: str | Path | None = None, root: str | Path | None = None,
) -> dict:
    """Preprocess source ``name`` into ``out_dir``; return (and write) its metrics dict.

    ``root`` overrides ``spec.path`` (tests). Raises ``RuntimeError`` naming the source when it
    yields no face at all (rejects.parquet is written first, to see why).
    """
    t0 = time.perf_counter()
    root = Path(root if root is not None else spec.path)
    for model in (cfg.detector_model, cfg.segmenter_model):
        if not Path(model).is_file():
            raise FileNotFoundError(f"{model}: MediaPipe model missing (run `python -m dfpipe.core.assets`)")
    out_dir = Path(out_dir)
    items, rejects = list_items(name, spec, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out_dir)
    rows: list[dict] = []
    frames_sampled = 0
    images = ShardWriter(out_dir, "images", cfg.shard_size)
    masks = ShardWriter(out_dir, "masks", cfg.shard_size) if spec.masks else None
    workers = max(1, min(cfg.workers, len(items)))
    bar = dict(total=len(items), desc=f"preprocess {name}", unit="item", dynamic_ncols=True)
    if workers == 1:
        worker = Worker(cfg, spec, root)
        try:
            results = (worker.process(it) for it in items)
            for item, res in tqdm(zip(items, results), **bar):
                frames_sampled += _collect(name, spec, item, res, images, masks, rows, rejects)
        finally:
            worker.close()
    else:
        ctx = mpr.get_context("spawn")  # no fork of a process that may hold MediaPipe threads
        with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, spec, root)) as pool:
            # imap keeps item order: output bytes do not depend on the worker count
            for item, res in tqdm(zip(items, pool.imap(_work, items, chunksize=1)), **bar):
                frames_sampled += _collect(name, spec, item, res, images, masks, rows, rejects)
    images.close()
    if masks is not None:
        masks.close()

    rej_df = pd.DataFrame(
        [{"source": name, "path": r.path, "frame_index": r.frame_index, "reason": r.reason, "detail": r.detail}
         for r in rejects],
        columns=REJECT_SCHEMA.names,
    ).sort_values(["path", "frame_index", "reason"], kind="stable").reset_index(drop=True)
    write_rejects(rej_df, out_dir / "rejects.parquet")
    by_reason = dict(sorted(Counter(r.reason for r in rejects).items()))
    if not rows:
        raise RuntimeError(
            f"source {name} ({root}) yielded no face crops from {len(items)} items; "
            f"rejects by reason: {by_reason} (see {out_dir / 'rejects.parquet'})"
        )
    df = pd.DataFrame(rows, columns=FACE_SCHEMA.names).sort_values("id", kind="stable").reset_index(drop=True)
    if df["id"].duplicated().any():
        raise RuntimeError(f"source {name}: duplicate ids {df['id'][df['id'].duplicated()].tolist()[:5]}")
    write_faces(df, out_dir / "manifest.parquet")
    metrics = {
        "source": name,
        "items": len(items),
        "videos": sum(it.is_video for it in items),
        "frames_sampled": frames_sampled,
        "faces": len(df),
        "with_mask": int(df["has_mask"].sum()),
        "rejects": len(rejects),
        "rejects_by_reason": by_reason,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    return metrics


def _collect(name: str, spec: SourceConfig, item: Item, res: ItemResult, images: ShardWriter,
             masks: ShardWriter | None, rows: list[dict], rejects: list[Reject]) -> int:
    """Append one item's crops to the shards and manifest rows (in item order)."""
    rejects.extend(res.rejects)
    for c in res.crops:
        shard, offset = images.add(c.image)
        mask_shard = ""
        if masks is not None:
            mask_shard, moffset = masks.add(c.mask)
            assert moffset == offset, "mask shard out of lock-step with image shard"
        suffix = f"#f{c.frame_index:05d}" if c.frame_index >= 0 else ""
        rows.append({
            "id": f"{name}/{item.path}{suffix}",
            "source": name,
            "label": spec.label,
            "method": spec.method,
            "video_id": item.video_id,
            "group_keys": list(item.group_keys),
            "path": item.path,
            "frame_index": c.frame_index,
            "n_frames": c.n_frames,
            "box_x": c.box.x, "box_y": c.box.y, "box_w": c.box.side, "box_h": c.box.side,
            "det_score": c.det_score,
            "content_hash": array_hash(c.image),
            "has_mask": c.mask is not None,
            "shard": shard,
            "offset": offset,
            "mask_shard": mask_shard,
        })
    return res.frames_sampled
