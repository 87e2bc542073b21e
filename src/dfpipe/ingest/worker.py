"""Per-item processing: one source item (a still image or a video) -> face crops and rejects.

Per item: decode (still images: :func:`dfpipe.ingest.images.read_image`, EXIF orientation
applied, then the optional codec control round trip before detection; videos: the sampled
frames), detect faces and choose one (the mask-overlapping face when the source has masks, else
the largest: :func:`dfpipe.ingest.faces.choose_face`), crop a square around it (``mode: crop``),
optionally blank the background with the selfie segmenter (``crop_seg``), or keep the whole image
padded to a square (``raw``); crop the manipulation mask with the same box. Every crop is resized
by one kernel policy (area down; cubic up or reject, by ``upscale``) and records its native
size, scale and kernel.

A frame of a source with masks is a manipulated frame only where its mask says so: a frame whose
mask is empty (``mask_empty``) or touches no detected face (``mask_face_not_found``) is rejected,
never cropped from another face (that face is unaltered; stored, it would be a near copy of the
original video's crop with the opposite label). A zero-byte video is ``empty_file``, as a
zero-byte image is.

:meth:`Worker.process` is the pure per-item function (an :class:`~dfpipe.ingest.sources.Item`
in, an :class:`ItemResult` out; no file is written), run in this process, a pool process or a
Ray actor by :func:`dfpipe.ingest.executor.ordered_map`. :meth:`Worker.process_multi` gives the
same results for several sampling policies with one decoding pass. Reject details hold no
absolute path (they are made relative to the source root).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfpipe.core.io import relative_message, resolve_inside
from dfpipe.ingest.codec import apply_codec
from dfpipe.ingest.config import PreprocessConfig
from dfpipe.ingest.faces import (
    MASK_THRESHOLD,
    Box,
    FaceDetector,
    PersonSegmenter,
    blank_background,
    choose_face,
    crop_image,
    crop_mask,
    cut_box,
    resize_kernel,
    resize_square,
    square_box,
    whole_image_box,
)
from dfpipe.ingest.images import read_image
from dfpipe.ingest.items import Item, Reject
from dfpipe.ingest.sources import SourceConfig
from dfpipe.ingest.video import Policy, VideoError, VideoFile, sample_indices


@dataclass
class Crop:
    """One stored face: manifest fields plus pixels (``image`` (S, S, 3), ``mask`` (S, S) or None)."""

    frame_index: int
    n_frames: int
    box: Box
    det_score: float
    image: np.ndarray
    mask: np.ndarray | None
    resize_kernel: str = "none"  # see dfpipe.ingest.faces.resize_kernel
    face_rule: str = "none"  # only / largest / mask_overlap; "none" in raw mode


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


class Worker:
    """Holds the MediaPipe tasks of one process; :meth:`process` turns an item into crops."""

    def __init__(self, cfg: PreprocessConfig, spec: SourceConfig, root: Path):
        self.cfg, self.spec, self.root = cfg, spec, Path(root)
        self.detector = (
            FaceDetector(
                cfg.detector_model, cfg.min_score, cfg.detector, cfg.tile_size, cfg.tile_overlap, cfg.whole_model
            )
            if spec.mode != "raw"
            else None
        )
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
            return self._unreadable(item, exc)

    def process_multi(self, item: Item, samplings: tuple[Policy, ...]) -> list[ItemResult]:
        """One result per sampling policy; a video is decoded (and each frame cropped) once.

        Same results as :meth:`process` with a source whose ``sampling`` is each policy in turn:
        the frames are decoded forward in one pass over the union of the wanted indices.
        """
        if not item.is_video:
            return [self.process(item)] * len(samplings)
        try:
            return self._video_multi(item, samplings)
        except (VideoError, OSError, ValueError) as exc:
            return [self._unreadable(item, exc)] * len(samplings)

    def _unreadable(self, item: Item, exc: Exception) -> ItemResult:
        return ItemResult([], [Reject(item.path, -1, "unreadable", relative_message(str(exc), self.root))], 0)

    def _face(self, rgb: np.ndarray, rel: str, frame: int, n_frames: int, mask: np.ndarray | None):
        """Crop one frame/image; returns ``(Crop, None)`` or ``(None, Reject)``.

        ``mask`` (the frame's manipulation mask, sources with masks only): an empty one rejects the
        frame in every mode (``mask_empty``: nothing in it is marked edited), one that no detected
        face box touches rejects it in the crop modes (``mask_face_not_found``).
        """
        cfg = self.cfg
        if mask is not None and not (mask > MASK_THRESHOLD).any():
            return None, Reject(
                rel,
                frame,
                "mask_empty",
                f"manipulation mask has no pixel > {MASK_THRESHOLD}: nothing in the frame is marked edited",
            )
        if self.spec.mode == "raw":
            box, score, rule = whole_image_box(*rgb.shape[:2]), math.nan, "none"
        else:
            assert self.detector is not None  # built for every mode but raw
            faces = self.detector.detect_all(rgb)
            if not faces:
                return None, Reject(rel, frame, "no_face", f"no face with score >= {cfg.min_score}")
            face, rule = choose_face(faces, mask)
            if face is None:
                return None, Reject(
                    rel,
                    frame,
                    rule,
                    f"the manipulation mask overlaps none of the {len(faces)} "
                    "detected face(s); another face would be an unaltered one",
                )
            if max(face.w, face.h) < cfg.min_face:
                return None, Reject(rel, frame, "small_face", f"face {face.w}x{face.h} < min_face {cfg.min_face}")
            box, score = square_box(face, cfg.margin), face.score
        kernel = resize_kernel(box.side, cfg.size, cfg.upscale)
        if kernel is None:
            return None, Reject(
                rel, frame, "small_face", f"crop region {box.side} px < size {cfg.size} (upscale: reject)"
            )
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
        assert dec is not None  # read_image returns a Decoded exactly when there is no Reject
        rgb, codec = dec.rgb, ""
        if self.spec.codec is not None:
            # the codec round trip comes before detection: the detector sees what a model will
            c = self.spec.codec
            rgb, codec = apply_codec(rgb, c.kind, c.crf, c.quality), c.tag
        crop, rej = self._face(rgb, item.path, -1, -1, None)
        return ItemResult([crop] if crop else [], [rej] if rej else [], 0, dec.file_format, codec, dec.exif_transposed)

    def _video(self, item: Item) -> ItemResult:
        """The item's result under the source's own ``sampling`` (one policy of the multi path)."""
        assert self.spec.sampling is not None  # video items come from video sources, which need sampling
        return self._video_multi(item, (self.spec.sampling,))[0]

    def _video_multi(self, item: Item, samplings: tuple[Policy, ...]) -> list[ItemResult]:
        with ExitStack() as files:  # each file's container is opened once: probe and decoding share it
            return self._video_files(item, samplings, files)

    def _video_files(self, item: Item, samplings: tuple[Policy, ...], files: ExitStack) -> list[ItemResult]:
        cfg, rel = self.cfg, item.path
        path = resolve_inside(self.root, rel)

        def whole(rej: Reject) -> list[ItemResult]:
            return [ItemResult([], [rej], 0) for _ in samplings]

        if path.is_file() and path.stat().st_size == 0:  # the still-image reason (images.read_image)
            return whole(Reject(rel, -1, "empty_file", "zero-byte file"))
        video = files.enter_context(VideoFile(path))
        info = video.info

        if info.width * info.height > cfg.max_pixels:
            return whole(Reject(rel, -1, "too_large", f"{info.width}x{info.height} frames"))
        per_policy = [sample_indices(info.n_frames, s, cfg.every_n, cfg.frames_per_video) for s in samplings]
        indices = sorted(set().union(*per_policy))
        masks: dict[int, np.ndarray] | None = None
        if item.mask_path is not None:
            mpath = resolve_inside(self.root, item.mask_path)
            if not mpath.is_file():
                return whole(Reject(rel, -1, "mask_missing", f"{item.mask_path} not found"))
            try:
                mvideo = files.enter_context(VideoFile(mpath))
                minfo = mvideo.info
            except VideoError as exc:
                return whole(Reject(rel, -1, "mask_unreadable", relative_message(str(exc), self.root)))
            if minfo.n_frames < info.n_frames:
                return whole(Reject(rel, -1, "mask_short", f"mask {minfo.n_frames} frames < video {info.n_frames}"))
            if (minfo.width, minfo.height) != (info.width, info.height):
                return whole(
                    Reject(
                        rel, -1, "mask_size", f"mask {minfo.width}x{minfo.height} != video {info.width}x{info.height}"
                    )
                )
            masks, merr = mvideo.read_frames(indices, gray=True)
        frames, err = video.read_frames(indices)
        err = relative_message(err, self.root)
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
                    done[idx] = (
                        None,
                        Reject(
                            rel,
                            idx,
                            "mask_decode_failed",
                            relative_message(merr, self.root) or "mask frame not decoded",
                        ),
                    )
                    continue
            done[idx] = self._face(frames[idx], rel, idx, info.n_frames, mask)
        results = []
        for wanted in per_policy:
            pairs = [done[i] for i in wanted]
            results.append(
                ItemResult(
                    [c for c, _ in pairs if c is not None],
                    [r for _, r in pairs if r is not None],
                    len(wanted),
                    info.codec,
                )
            )
        return results
