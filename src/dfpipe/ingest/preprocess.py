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

import functools
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

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
from dfpipe.core.manifest import FACE_SCHEMA, REJECT_SCHEMA, read_table, write_faces, write_rejects
from dfpipe.core.shards import ShardWriter
from dfpipe.ingest.executor import Executor, ordered_map
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
    workers: int = Field(ge=1)             # processes (executor local) or Ray actors (ray), one CPU each
    executor: Executor = "local"           # local | ray: where items run; output bytes do not depend on it
    ray_address: Optional[str] = None      # executor ray: "host:port"; null = RAY_ADDRESS, else a local Ray


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

    def process_multi(self, item: Item, samplings: tuple[str, ...]) -> list[ItemResult]:
        """One result per sampling policy; a video is decoded (and each frame cropped) once.

        Same results as :meth:`process` with a source whose ``sampling`` is each policy in turn:
        the frames are decoded forward in one pass over the union of the wanted indices.
        """
        if not item.is_video:
            return [self.process(item)] * len(samplings)
        try:
            return self._video(item, samplings)
        except (VideoError, OSError, ValueError) as exc:
            return [ItemResult([], [Reject(item.path, -1, "unreadable", str(exc))], 0)] * len(samplings)

    def _video(self, item: Item, samplings: tuple[str, ...] | None = None) -> ItemResult | list[ItemResult]:
        """The item's :class:`ItemResult` (``samplings`` None: the source's policy), or one per policy."""
        single = samplings is None
        samplings = (self.spec.sampling,) if single else samplings
        results = self._video_multi(item, samplings)
        return results[0] if single else results

    def _video_multi(self, item: Item, samplings: tuple[str, ...]) -> list[ItemResult]:
        cfg, rel = self.cfg, item.path
        path = resolve_inside(self.root, rel)
        info = probe(path)

        def whole(rej: Reject) -> list[ItemResult]:
            return [ItemResult([], [rej], 0) for _ in samplings]

        if info.width * info.height > self.cfg.max_pixels:
            return whole(Reject(rel, -1, "too_large", f"{info.width}x{info.height} frames"))
        per_policy = [sample_indices(info.n_frames, s, cfg.every_n, cfg.frames_per_video) for s in samplings]
        indices = sorted(set().union(*per_policy))
        masks: dict[int, np.ndarray] | None = None
        if item.mask_path is not None:
            mpath = resolve_inside(self.root, item.mask_path)
            if not mpath.is_file():
                return whole(Reject(rel, -1, "mask_missing", f"{item.mask_path} not found"))
            try:
                minfo = probe(mpath)
            except VideoError as exc:
                return whole(Reject(rel, -1, "mask_unreadable", str(exc)))
            if minfo.n_frames < info.n_frames:
                return whole(Reject(rel, -1, "mask_short", f"mask {minfo.n_frames} frames < video {info.n_frames}"))
            if (minfo.width, minfo.height) != (info.width, info.height):
                return whole(Reject(rel, -1, "mask_size",
                                    f"mask {minfo.width}x{minfo.height} != video {info.width}x{info.height}"))
            masks, merr = read_frames(mpath, indices, minfo, gray=True)
        frames, err = read_frames(path, indices, info)
        truncated = info.demux_error or info.declared_frames > info.n_frames
        done: dict[int, tuple[Crop | None, Reject | None]] = {}
        for idx in indices:
            if idx not in frames:
                detail = err or "frame not decoded"
                if truncated:
                    detail += f"; header declares {info.declared_frames} frames, {info.n_frames} readable"
                done[idx] = None, Reject(rel, idx, "truncated" if truncated else "decode_failed", detail)
                continue
            mask = None
            if masks is not None:
                mask = masks.get(idx)
                if mask is None:
                    done[idx] = None, Reject(rel, idx, "mask_decode_failed", merr or "mask frame not decoded")
                    continue
            done[idx] = self._face(frames[idx], rel, idx, info.n_frames, mask)
        results = []
        for wanted in per_policy:
            pairs = [done[i] for i in wanted]
            results.append(ItemResult([c for c, _ in pairs if c is not None],
                                      [r for _, r in pairs if r is not None], len(wanted)))
        return results


# ---------------------------------------------------------------------------------------------
# the stage


def _clear_outputs(out_dir: Path) -> None:
    """Remove shards and manifests of a previous run (a smaller run must not leave stale shards)."""
    for pattern in ("images-*.npy", "masks-*.npy", "manifest.parquet", "rejects.parquet"):
        for p in sorted(out_dir.glob(pattern)):
            p.unlink()


IMAGE_CHUNK = 8  # images per executor call: amortises the per-call round trip (Ray, pool)


def _check_models(cfg: PreprocessConfig) -> None:
    for model in (cfg.detector_model, cfg.segmenter_model):
        if not Path(model).is_file():
            raise FileNotFoundError(f"{model}: MediaPipe model missing (run `python -m dfpipe.core.assets`)")


def select_part(items: list[Item], rejects: list[Reject], part: tuple[int, int] | None
                ) -> tuple[list[Item], list[Reject]]:
    """Part ``i`` of ``n`` of a source's listing: a contiguous block of items (sizes differ by at
    most one) so that :func:`merge_parts` restores the one-run order by concatenation. Listing
    rejects go to part 0 only. ``None`` is the whole listing.
    """
    if part is None:
        return items, rejects
    i, n = part
    if not 0 <= i < n:
        raise ValueError(f"part {i} of {n}: need 0 <= i < n")
    lo, hi = (len(items) * i) // n, (len(items) * (i + 1)) // n
    return items[lo:hi], (rejects if i == 0 else [])


class _SourceOutput:
    """Shards, manifest rows and rejects of one source, written in item order."""

    def __init__(self, name: str, spec: SourceConfig, cfg: PreprocessConfig, out_dir: str | Path):
        self.name, self.spec, self.cfg = name, spec, cfg
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _clear_outputs(self.out_dir)
        self.rows: list[dict] = []
        self.rejects: list[Reject] = []
        self.frames_sampled = 0
        self.images = ShardWriter(self.out_dir, "images", cfg.shard_size)
        self.masks = ShardWriter(self.out_dir, "masks", cfg.shard_size) if spec.masks else None

    def collect(self, item: Item, res: ItemResult) -> None:
        self.frames_sampled += _collect(self.name, self.spec, item, res, self.images, self.masks,
                                        self.rows, self.rejects)

    def finish(self, items: list[Item], root: Path, metrics_path: str | Path | None, t0: float,
               allow_empty: bool = False) -> dict:
        self.images.close()
        if self.masks is not None:
            self.masks.close()
        rej_df = _reject_frame(self.name, self.rejects)
        write_rejects(rej_df, self.out_dir / "rejects.parquet")
        by_reason = dict(sorted(Counter(r.reason for r in self.rejects).items()))
        if not self.rows and not allow_empty:
            raise RuntimeError(
                f"source {self.name} ({root}) yielded no face crops from {len(items)} items; "
                f"rejects by reason: {by_reason} (see {self.out_dir / 'rejects.parquet'})"
            )
        df = _face_frame(self.name, self.rows)
        write_faces(df, self.out_dir / "manifest.parquet")
        metrics = {
            "source": self.name,
            "items": len(items),
            "videos": sum(it.is_video for it in items),
            "frames_sampled": self.frames_sampled,
            "faces": len(df),
            "with_mask": int(df["has_mask"].sum()),
            "rejects": len(self.rejects),
            "rejects_by_reason": by_reason,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if metrics_path is not None:
            write_json(metrics_path, metrics)
        return metrics


def _reject_frame(name: str, rejects: list[Reject]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"source": name, "path": r.path, "frame_index": r.frame_index, "reason": r.reason, "detail": r.detail}
         for r in rejects],
        columns=REJECT_SCHEMA.names,
    ).sort_values(["path", "frame_index", "reason"], kind="stable").reset_index(drop=True)


def _face_frame(name: str, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=FACE_SCHEMA.names).sort_values("id", kind="stable").reset_index(drop=True)
    if df["id"].duplicated().any():
        raise RuntimeError(f"source {name}: duplicate ids {df['id'][df['id'].duplicated()].tolist()[:5]}")
    return df


def run_source(
    name: str, spec: SourceConfig, cfg: PreprocessConfig, out_dir: str | Path,
    metrics_path: str | Path | None = None, root: str | Path | None = None,
    part: tuple[int, int] | None = None,
) -> dict:
    """Preprocess source ``name`` into ``out_dir``; return (and write) its metrics dict.

    ``root`` overrides ``spec.path`` (tests). ``part=(i, n)`` processes only part ``i`` of ``n``
    (:func:`select_part`; merge the parts with :func:`merge_parts`); a part may hold no face.
    Raises ``RuntimeError`` naming the source when a whole source yields no face at all
    (rejects.parquet is written first, to see why).
    """
    return run_sources([name], [spec], cfg, [out_dir], [metrics_path], root, part)[0]


def run_sources(
    names: list[str], specs: list[SourceConfig], cfg: PreprocessConfig, out_dirs: list[str | Path],
    metrics_paths: list[str | Path | None] | None = None, root: str | Path | None = None,
    part: tuple[int, int] | None = None,
) -> list[dict]:
    """Several sources that differ only in ``sampling`` (e.g. FF++ every 20th and K per video of
    the same folder) in one pass: each video is decoded once and each sampled frame cropped once,
    and every source's outputs are byte-identical to its own :func:`run_source`.
    """
    t0 = time.perf_counter()
    if not names or len({len(names), len(specs), len(out_dirs)}) != 1:
        raise ValueError("run_sources needs as many specs and out_dirs as names (at least one)")
    base = specs[0].model_copy(update={"sampling": None})
    for n, s in zip(names[1:], specs[1:]):
        if s.model_copy(update={"sampling": None}) != base:
            raise ValueError(f"sources {names[0]} and {n} differ in more than sampling: they cannot "
                             f"share one decoding pass")
    metrics_paths = list(metrics_paths) if metrics_paths is not None else [None] * len(names)
    root = Path(root if root is not None else specs[0].path)
    _check_models(cfg)
    listing = [list_items(n, s, root) for n, s in zip(names, specs)]
    parts = [select_part(items, rejects, part) for items, rejects in listing]
    items = parts[0][0]
    outs = []
    for n, s, d, (_, rejects) in zip(names, specs, out_dirs, parts):
        out = _SourceOutput(n, s, cfg, d)
        out.rejects.extend(rejects)
        outs.append(out)
    factory = functools.partial(Worker, cfg, specs[0], root)
    # images travel in chunks (fewer round trips to Ray actors / pool workers), videos one by one
    chunk = 1 if specs[0].kind != "image_folder" else IMAGE_CHUNK
    if len(names) == 1:
        results = ((r,) for r in ordered_map(factory, items, cfg.workers, cfg.executor, cfg.ray_address,
                                             chunk=chunk))
    else:
        samplings = tuple(s.sampling for s in specs)
        results = ordered_map(factory, items, cfg.workers, cfg.executor, cfg.ray_address,
                              method="process_multi", args=(samplings,), chunk=chunk)
    bar = dict(total=len(items), desc=f"preprocess {'+'.join(names)}", unit="item", dynamic_ncols=True)
    for item, res in tqdm(zip(items, results), **bar):
        for out, r in zip(outs, res):
            out.collect(item, r)
    return [out.finish(items, root, mp, t0, allow_empty=part is not None)
            for out, mp in zip(outs, metrics_paths)]


def merge_parts(name: str, part_dirs: list[str | Path], out_dir: str | Path, shard_size: int,
                metrics_paths: list[str | Path] | None = None, metrics_path: str | Path | None = None
                ) -> dict:
    """Merge the outputs of ``run_source(part=(i, n))`` for ``i = 0..n-1`` (``part_dirs`` in that
    order) into ``out_dir``, byte-identical to one ``run_source`` over the whole source.

    Crops are concatenated in part order (parts are contiguous blocks of the sorted listing) and
    re-sharded; manifest rows get their new ``(shard, offset)``; rejects are concatenated and
    sorted as :func:`run_source` sorts them. Metrics are summed over ``metrics_paths`` (the parts'
    metrics JSONs) when given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out_dir)
    frames, rejects = [], []
    images = ShardWriter(out_dir, "images", shard_size)
    masks: ShardWriter | None = None
    base = 0
    for d in map(Path, part_dirs):
        df = read_table(d / "manifest.parquet", FACE_SCHEMA)
        rejects.append(read_table(d / "rejects.parquet", REJECT_SCHEMA))
        part_size = _part_shard_size(d)
        count = 0
        for shard in sorted(d.glob("images-*.npy")):
            block = np.load(shard, mmap_mode="r", allow_pickle=False)
            mshard = d / shard.name.replace("images-", "masks-")
            mblock = np.load(mshard, mmap_mode="r", allow_pickle=False) if mshard.is_file() else None
            if mblock is not None and masks is None:
                masks = ShardWriter(out_dir, "masks", shard_size)
            for k in range(len(block)):
                images.add(np.asarray(block[k]))
                if mblock is not None:
                    masks.add(np.asarray(mblock[k]))
            count += len(block)
        if len(df):
            position = base + df["shard"].map(_shard_number).to_numpy(np.int64) * part_size + df["offset"].to_numpy(np.int64)
            df["shard"] = [f"images-{p // shard_size:05d}.npy" for p in position]
            df["offset"] = (position % shard_size).astype(np.int32)
            df["mask_shard"] = [f"masks-{p // shard_size:05d}.npy" if m else ""
                                for p, m in zip(position, df["mask_shard"] != "")]
        frames.append(df)
        base += count
    images.close()
    if masks is not None:
        masks.close()
    rej = pd.concat(rejects, ignore_index=True).sort_values(["path", "frame_index", "reason"], kind="stable")
    write_rejects(rej.reset_index(drop=True), out_dir / "rejects.parquet")
    df = pd.concat(frames, ignore_index=True)
    if len(df) == 0:
        raise RuntimeError(f"source {name}: no face crops in any of {len(part_dirs)} parts")
    write_faces(_face_frame(name, df.to_dict("records")), out_dir / "manifest.parquet")
    metrics: dict = {"source": name}
    if metrics_paths:
        parts = [json.loads(Path(p).read_text()) for p in metrics_paths]
        for key in ("items", "videos", "frames_sampled", "faces", "with_mask", "rejects", "seconds"):
            metrics[key] = sum(m[key] for m in parts)
        metrics["seconds"] = round(metrics["seconds"], 3)
        reasons: Counter = Counter()
        for m in parts:
            reasons.update(m["rejects_by_reason"])
        metrics["rejects_by_reason"] = dict(sorted(reasons.items()))
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    return metrics


def _shard_number(name: str) -> int:
    return int(name.rsplit("-", 1)[1].split(".")[0])


def _part_shard_size(d: Path) -> int:
    """Rows per full shard of a part (its first shard's length; every shard but the last is full)."""
    first = sorted(d.glob("images-*.npy"))
    return len(np.load(first[0], mmap_mode="r")) if first else 1


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
