"""The preprocess stage: one raw source -> face crops in shards + manifest + rejects + metrics.

Per item (an image, or the sampled frames of a video): decode (still images: EXIF orientation
applied, optional codec control round trip), detect faces and choose one (the mask-overlapping
face when the source has masks, else the largest: :func:`dfpipe.ingest.faces.choose_face`), crop
a square around it (``mode: crop``), optionally blank the background with the selfie segmenter
(``crop_seg``), or keep the whole image padded to a square (``raw``); crop the manipulation mask
with the same box. Every crop is resized by one kernel policy (area down; cubic up or reject, by
``upscale``) and records its native size, scale and kernel.

:meth:`Worker.process` is the pure per-item function (an :class:`~dfpipe.ingest.sources.Item` in,
an :class:`ItemResult` of crops and rejects out; no file is written): it can run in a pool process
or a Ray task. Results are re-ordered by item before anything is written, so the output bytes do
not depend on the number of workers.

Outputs in ``out_dir``: ``images-NNNNN.npy`` ``(N, size, size, 3)`` uint8, ``masks-NNNNN.npy``
``(N, size, size)`` uint8 0/255 (sources with masks), ``manifest.parquet`` (``FACE_SCHEMA``, sorted
by id), ``rejects.parquet`` (``REJECT_SCHEMA``, sorted); a metrics JSON (no timings: it is a
tracked output) and, beside it, ``<name>/face_size.csv`` + ``face_size.png`` (native face side and
scale histogram, a DVC plot). Nothing stored holds an absolute path: reject details are relative
to the source root (third-party messages included), so outputs are the same in any checkout.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mpr
import multiprocessing.util
import sys
import time
import warnings
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
from dfpipe.core.io import (
    array_hash, clean_stale_temps, relative_message, resolve_inside, write_bytes, write_json,
)
from dfpipe.core.manifest import FACE_SCHEMA, REJECT_SCHEMA, write_faces, write_rejects
from dfpipe.core.shards import ShardWriter
from dfpipe.ingest.codec import apply_codec
from dfpipe.ingest.faces import (
    Box, FaceDetector, PersonSegmenter, blank_background, choose_face, crop_image, crop_mask, cut_box,
    resize_kernel, resize_square, square_box, whole_image_box,
)
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
    # A face region smaller than `size`: "cubic" enlarges it (recorded as resize_kernel "cubic"),
    # "reject" drops it as small_face, so every stored crop is area-downsampled (issue 13).
    upscale: Literal["cubic", "reject"] = "cubic"


@dataclass
class Crop:
    """One stored face: manifest fields plus pixels (``image`` (S, S, 3), ``mask`` (S, S) or None)."""

    frame_index: int
    n_frames: int
    box: Box
    det_score: float
    image: np.ndarray
    mask: np.ndarray | None
    resize_kernel: str = "none"   # see dfpipe.ingest.faces.resize_kernel
    face_rule: str = "none"       # only / largest / mask_overlap; "none" in raw mode


@dataclass
class ItemResult:
    """What one item gave: crops and rejects (``frame_index`` -1: the whole file), the number of
    video frames sampled (0 for a still image or a file rejected before sampling) and the item's
    provenance (``file_format``, ``codec`` applied, ``exif_transposed``)."""

    crops: list[Crop]
    rejects: list[Reject]
    frames_sampled: int
    file_format: str = ""
    codec: str = ""
    exif_transposed: bool = False


@dataclass
class Decoded:
    """A decoded still image: ``rgb`` ``(H, W, 3)`` uint8 upright, and how it was stored."""

    rgb: np.ndarray
    file_format: str
    exif_transposed: bool


# ---------------------------------------------------------------------------------------------
# image loading


#: numpy versions of Pillow's ``ImageOps.exif_transpose`` per EXIF orientation (2..8).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}


def read_image(path: Path, max_pixels: int, rel: str | None = None,
               root: Path | None = None) -> tuple[Decoded | None, Reject | None]:
    """Decode a still image upright, or return a reject (``rel``: the name stored in it; ``root``:
    the source root that messages are made relative to, default the file's folder).

    Rules (one each, so that no class differs from another by format): grayscale images are
    rejected whether or not they carry an alpha channel (``grayscale``; converting them would give
    a class of grey faces); 16-bit images (``bit_depth``) and translucent RGBA (``alpha``) are
    rejected; a fully opaque alpha channel is dropped. The EXIF orientation is applied (a phone
    JPEG is stored sideways) and reported. Images over ``max_pixels``, and those Pillow flags as
    decompression bombs, are ``too_large`` before any pixel is decoded. Messages carry no
    absolute path.
    """
    rel = rel or path.name
    root = root if root is not None else path.parent
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, Reject(rel, -1, "unreadable", relative_message(str(exc), root))
    if size == 0:
        return None, Reject(rel, -1, "empty_file", "zero-byte file")
    from PIL import Image  # header only: the size is known before any pixel is decoded

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                mode, fmt = im.mode, (im.format or "").lower()
                orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, Reject(rel, -1, "too_large", relative_message(f"decompression bomb: {exc}", root))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject with its text
        return None, Reject(rel, -1, "unreadable", relative_message(f"not a readable image: {exc}", root))
    if w * h > max_pixels:
        return None, Reject(rel, -1, "too_large", f"{w}x{h} exceeds max_pixels {max_pixels}")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF rotation, no conversion
    if img is None:
        return None, Reject(rel, -1, "unreadable", "OpenCV could not decode the image (truncated?)")
    if img.dtype != np.uint8:
        return None, Reject(rel, -1, "bit_depth", f"{img.dtype} pixels, expected 8-bit")
    if mode in _GRAY_MODES or img.ndim == 2 or img.shape[2] in (1, 2):
        return None, Reject(rel, -1, "grayscale", f"single-channel image (mode {mode}, with or without alpha)")
    if img.shape[2] == 4:
        if int(img[:, :, 3].min()) < 255:
            return None, Reject(rel, -1, "alpha", "translucent RGBA image")
        img = img[:, :, :3]
    if img.shape[2] != 3:
        return None, Reject(rel, -1, "channels", f"{img.shape[2]} channels")
    rgb = img[:, :, ::-1]
    transposed = orientation in _ORIENT
    if transposed:
        rgb = _ORIENT[orientation](rgb)
    return Decoded(np.ascontiguousarray(rgb), fmt or path.suffix.lower().lstrip("."), transposed), None


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
        """Item in, crops and rejects out (pure: reads the item's files, writes nothing)."""
        try:
            return self._video(item) if item.is_video else self._image(item)
        except (VideoError, OSError, ValueError) as exc:
            detail = relative_message(str(exc), self.root)
            return ItemResult([], [Reject(item.path, -1, "unreadable", detail)], 0)

    def _face(self, rgb: np.ndarray, rel: str, frame: int, n_frames: int, mask: np.ndarray | None):
        """Crop one frame/image; returns ``(Crop, None)`` or ``(None, Reject)``."""
        cfg = self.cfg
        if self.spec.mode == "raw":
            box, score, rule = whole_image_box(*rgb.shape[:2]), math.nan, "none"
        else:
            faces = self.detector.detect_all(rgb)
            if not faces:
                return None, Reject(rel, frame, "no_face", f"no face with score >= {cfg.min_score}")
            face, rule = choose_face(faces, mask)
            if max(face.w, face.h) < cfg.min_face:
                return None, Reject(rel, frame, "small_face", f"face {face.w}x{face.h} < min_face {cfg.min_face}")
            box, score = square_box(face, cfg.margin), face.score
        kernel = resize_kernel(box.side, cfg.size, cfg.upscale)
        if kernel is None:
            return None, Reject(rel, frame, "small_face",
                                f"crop region {box.side} px < size {cfg.size} (upscale: reject)")
        image = crop_image(rgb, box, cfg.size, kernel)
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
        return Crop(frame, n_frames, box, score, image, m, kernel, rule), None

    def _image(self, item: Item) -> ItemResult:
        path = resolve_inside(self.root, item.path)
        dec, rej = read_image(path, self.cfg.max_pixels, item.path, self.root)
        if rej is not None:
            return ItemResult([], [rej], 0)
        rgb, codec = dec.rgb, ""
        if self.spec.codec is not None:
            c = self.spec.codec
            rgb, codec = apply_codec(rgb, c.kind, c.crf, c.quality), c.tag
        crop, rej = self._face(rgb, item.path, -1, -1, None)
        return ItemResult([crop] if crop else [], [rej] if rej else [], 0, dec.file_format, codec, dec.exif_transposed)

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
                return ItemResult([], [Reject(rel, -1, "mask_unreadable", relative_message(str(exc), self.root))], 0)
            if minfo.n_frames < info.n_frames:
                return ItemResult([], [Reject(rel, -1, "mask_short",
                                              f"mask {minfo.n_frames} frames < video {info.n_frames}")], 0)
            if (minfo.width, minfo.height) != (info.width, info.height):
                return ItemResult([], [Reject(rel, -1, "mask_size",
                                              f"mask {minfo.width}x{minfo.height} != video {info.width}x{info.height}")], 0)
            masks, merr = read_frames(mpath, indices, minfo, gray=True)
        frames, err = read_frames(path, indices, info)
        err = relative_message(err, self.root)
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
                    rejects.append(Reject(rel, idx, "mask_decode_failed",
                                          relative_message(merr, self.root) or "mask frame not decoded"))
                    continue
            crop, rej = self._face(frames[idx], rel, idx, info.n_frames, mask)
            if crop is not None:
                crops.append(crop)
            else:
                rejects.append(rej)
        return ItemResult(crops, rejects, len(indices), info.codec)


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
    yields no face at all (rejects.parquet is written first, to see why), or when the accounting
    check fails (:func:`account`). File names that cannot be stored are listed on stderr first
    (preflight warning) and become ``bad_name`` rejects.
    """
    t0 = time.perf_counter()
    root = Path(root if root is not None else spec.path)
    for model in (cfg.detector_model, cfg.segmenter_model):
        if not Path(model).is_file():
            raise FileNotFoundError(f"{model}: MediaPipe model missing (run `python -m dfpipe.core.assets`)")
    out_dir = Path(out_dir)
    items, listed_rejects = list_items(name, spec, root)
    bad = [r.path for r in listed_rejects if r.reason == "bad_name"]
    if bad:
        print(f"WARNING: source {name}: {len(bad)} file name(s) are not valid UTF-8 or hold control "
              f"characters; they are rejected as bad_name (and `dvc add` cannot track such a folder, "
              f"see docs/raw_data.md): {', '.join(bad[:20])}{' ...' if len(bad) > 20 else ''}",
              file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    plot_dir = Path(metrics_path).with_suffix("") if metrics_path is not None else None
    if metrics_path is not None:
        clean_stale_temps(Path(metrics_path).parent, recursive=False, prefix=Path(metrics_path).name)
        clean_stale_temps(plot_dir)
    _clear_outputs(out_dir)
    rows: list[dict] = []
    rejects: list[Reject] = list(listed_rejects)
    per_item: list[tuple[Item, ItemResult]] = []
    images = ShardWriter(out_dir, "images", cfg.shard_size)
    masks = ShardWriter(out_dir, "masks", cfg.shard_size) if spec.masks else None
    workers = max(1, min(cfg.workers, len(items)))
    bar = dict(total=len(items), desc=f"preprocess {name}", unit="item", dynamic_ncols=True)

    def collect(item: Item, res: ItemResult) -> None:
        _collect(name, spec, cfg, item, res, images, masks, rows, rejects)
        per_item.append((item, dataclasses.replace(res, crops=[None] * len(res.crops))))  # pixels freed

    if workers == 1:
        worker = Worker(cfg, spec, root)
        try:
            results = (worker.process(it) for it in items)
            for item, res in tqdm(zip(items, results), **bar):
                collect(item, res)
        finally:
            worker.close()
    else:
        ctx = mpr.get_context("spawn")  # no fork of a process that may hold MediaPipe threads
        with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, spec, root)) as pool:
            # imap keeps item order: output bytes do not depend on the worker count
            for item, res in tqdm(zip(items, pool.imap(_work, items, chunksize=1)), **bar):
                collect(item, res)
    images.close()
    if masks is not None:
        masks.close()

    rej_df = pd.DataFrame(
        [{"source": name, "path": r.path, "frame_index": r.frame_index, "reason": r.reason, "detail": r.detail}
         for r in rejects],
        columns=REJECT_SCHEMA.names,
    ).sort_values(["path", "frame_index", "reason"], kind="stable").reset_index(drop=True)
    write_rejects(rej_df, out_dir / "rejects.parquet")
    counts = account(name, listed_rejects, per_item)
    if not rows:
        raise RuntimeError(
            f"source {name} ({root}) yielded no face crops from {len(items)} items; "
            f"rejects by reason: {counts['files']['rejected_by_reason']} (files), "
            f"{counts['frames']['rejected_by_reason']} (frames) (see {out_dir / 'rejects.parquet'})"
        )
    df = pd.DataFrame(rows, columns=FACE_SCHEMA.names).sort_values("id", kind="stable").reset_index(drop=True)
    if df["id"].duplicated().any():
        raise RuntimeError(f"source {name}: duplicate ids {df['id'][df['id'].duplicated()].tolist()[:5]}")
    write_faces(df, out_dir / "manifest.parquet")
    metrics = {
        "source": name,
        "items": len(items),
        "videos": sum(it.is_video for it in items),
        "faces": len(df),
        "with_mask": int(df["has_mask"].sum()),
        **counts,
        "resize_kernels": dict(sorted(Counter(df["resize_kernel"]).items())),
        "face_rules": dict(sorted(Counter(df["face_rule"]).items())),
        "native_face": {q: round(float(df["native_face"].quantile(v)), 2)
                        for q, v in (("min", 0.0), ("median", 0.5), ("max", 1.0))},
    }
    if metrics_path is not None:
        write_json(metrics_path, metrics)
        write_face_size_plot(df, cfg.size, plot_dir, name)
    # timings go to stderr only: a tracked output must not change from run to run (issue 11)
    print(f"preprocess {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return metrics


def account(name: str, listed_rejects: list[Reject], per_item: list[tuple[Item, "ItemResult"]]) -> dict:
    """File-level and frame-level counts, checked: every offered file is kept or rejected (once),
    and every sampled frame of a video is kept or rejected (once).

    ``offered`` = files the listing saw (items + files rejected by the listing). A file is
    ``kept`` when it gave at least one crop; ``rejected`` when the file itself was rejected
    (``frame_index`` -1, reason in ``rejected_by_reason``) or when every sampled frame was
    (``all_frames_rejected``). Raises ``RuntimeError`` naming the source and the item on a
    violation (a bug that would otherwise lose items silently).
    """
    file_reasons: Counter = Counter(r.reason for r in listed_rejects)
    frame_reasons: Counter = Counter()
    kept = sampled = frames_kept = 0
    for item, res in per_item:
        whole = [r for r in res.rejects if r.frame_index < 0]
        frame = [r for r in res.rejects if r.frame_index >= 0]
        if whole:
            if len(whole) != 1 or res.crops or frame:
                raise RuntimeError(f"source {name}: accounting: {item.path} rejected as a file and also "
                                   f"has {len(res.crops)} crops / {len(frame)} frame rejects / {len(whole)} file rejects")
            file_reasons[whole[0].reason] += 1
            continue
        units = res.frames_sampled if item.is_video else 1
        if len(res.crops) + len(frame) != units or units == 0:
            raise RuntimeError(f"source {name}: accounting: {item.path}: {units} frames sampled != "
                               f"{len(res.crops)} kept + {len(frame)} rejected")
        if item.is_video:
            sampled += units
            frames_kept += len(res.crops)
            frame_reasons.update(r.reason for r in frame)
        if res.crops:
            kept += 1
        else:
            file_reasons["all_frames_rejected"] += 1
    offered = len(per_item) + len(listed_rejects)
    rejected = sum(file_reasons.values())
    if offered != kept + rejected:
        raise RuntimeError(f"source {name}: accounting: {offered} files offered != {kept} kept + {rejected} rejected")
    frames_rejected = sum(frame_reasons.values())
    if sampled != frames_kept + frames_rejected:
        raise RuntimeError(f"source {name}: accounting: {sampled} frames sampled != "
                           f"{frames_kept} kept + {frames_rejected} rejected")
    return {
        "files": {"offered": offered, "kept": kept, "rejected": rejected,
                  "rejected_by_reason": dict(sorted(file_reasons.items()))},
        "frames": {"sampled": sampled, "kept": frames_kept, "rejected": frames_rejected,
                   "rejected_by_reason": dict(sorted(frame_reasons.items()))},
    }


def write_face_size_plot(df: pd.DataFrame, size: int, out: Path, name: str) -> None:
    """``out/face_size.csv`` (histogram of ``native_face``, with the scale range of each bin) and
    ``out/face_size.png`` (the same as a bar chart), for ``dvc plots``. Bins are
    ``ceil(max / 64)`` px wide: about 64 bins up to the largest face, whatever the source."""
    native = df["native_face"].to_numpy(np.float64)
    width = max(1, int(np.ceil(native.max() / 64)))
    edges = np.arange(0, (int(native.max()) // width + 2) * width, width)
    counts, _ = np.histogram(native, bins=edges)
    keep = counts > 0
    lo, hi = edges[:-1][keep], edges[1:][keep]
    table = pd.DataFrame({"native_face_lo": lo, "native_face_hi": hi,
                          "scale_max": np.round(size / np.maximum(lo, 1), 4), "scale_min": np.round(size / hi, 4),
                          "count": counts[keep]})
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "face_size.csv", table.to_csv(index=False, lineterminator="\n").encode())
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.bar(lo, counts[keep], width=width, align="edge", color="#4477aa")
    ax.axvline(size, color="#cc3311", lw=1, label=f"stored size {size} px (scale 1)")
    ax.set_xlabel("native face region side (source px)")
    ax.set_ylabel("crops")
    ax.set_title(f"{name}: native face size (scale = {size} / side)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: same bytes
    plt.close(fig)
    write_bytes(out / "face_size.png", buf.getvalue())


def _collect(name: str, spec: SourceConfig, cfg: PreprocessConfig, item: Item, res: ItemResult,
             images: ShardWriter, masks: ShardWriter | None, rows: list[dict], rejects: list[Reject]) -> None:
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
            "file_format": res.file_format,
            "native_face": float(c.box.side),
            "scale": cfg.size / c.box.side,
            "resize_kernel": c.resize_kernel,
            "codec": res.codec,
            "exif_transposed": res.exif_transposed,
            "face_rule": c.face_rule,
        })
