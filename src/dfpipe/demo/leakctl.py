"""Planted-leak control videos: a per-video signature a network can memorise, and labels nothing else predicts.

Under ``<out_dir>/ctl_leak/``, ``leak_videos`` short clips ``{real,fake}/NNN.mp4`` (``NNN`` a global
index, so every video id is unique across both folders), each of its own new identity, of
``leak_frames`` frames at the FF++ demo's size, frame rate and CRF. Both folders are drawn by the
same renderer with the same distributions: the folder (the class) is assigned per video by a
seeded permutation (exactly half each), independently of everything drawn for the video. So no
feature of a frame tells the classes apart, and a detector scores unseen videos at chance; what it
can do is memorise the videos it trained on, since every frame of a video carries that video's
signature:

- a static backdrop of coloured cells (:func:`signature_background`), a colour code the face crop
  shows around the head, plus the identity itself (face shape, skin, hair, clothes);
- consecutive frames of a talking head (:func:`dfpipe.demo.video.head_motion`: the head moves,
  blinks and talks, with fresh sensor noise per frame) under the clip's one fixed light, so the
  frames of a clip differ as the frames of one shot do, and no two are copies.

A split that puts frames of one video on both sides (``level: frame``) lets a model score the test
frames of its training videos above chance, and only those: the planted leak of the report's
``controls`` table (:mod:`dfpipe.evaluation.controls`). Each clip is one task of the demo's pool;
its bytes depend only on the config and its index.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from dfpipe.demo.config import DemoConfig

from .faces import add_sensor_noise, render_face, sample_identity
from .video import encode_video, head_motion

_STREAM = 9  # after build.py's streams 1..7 and datasets.py's 8
_LABELS, _VIDEO = 0, 1
ROOT = "ctl_leak"  # folder under demo.out_dir
CLASSES = ("real", "fake")  # sub-folders: label 0 and 1 of the two control sources
_CELLS = (4, 3)  # columns x rows of the backdrop's colour code


def _rng(cfg: DemoConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, _STREAM, *keys])


def plan(cfg: DemoConfig) -> list[str]:
    """Relative path (``ctl_leak/<class>/NNN.mp4``) of every control video, by index: a seeded
    permutation sends exactly half of the indices to each class."""
    n = cfg.leak_videos
    fake = set(_rng(cfg, _LABELS).permutation(n)[: n // 2].tolist())
    return [f"{ROOT}/{CLASSES[int(k in fake)]}/{k:03d}.mp4" for k in range(n)]


def signature_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static backdrop of ``_CELLS`` saturated colour cells (hue, saturation and value drawn per
    cell), slightly blurred so the encoder keeps it: float32 ``(height, width, 3)`` in [0, 255]."""
    cols, rows = _CELLS
    hsv = np.stack(
        [rng.uniform(0, 180, (rows, cols)), rng.uniform(140, 255, (rows, cols)), rng.uniform(110, 255, (rows, cols))],
        axis=-1,
    )
    rgb = cv2.cvtColor(np.rint(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    img = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(img, (0, 0), max(1.0, height / 144.0))


def render_clip(cfg: DemoConfig, k: int, supersample: int = 2) -> np.ndarray:
    """Frames ``(leak_frames, H, W, 3)`` uint8 of control video ``k``; every draw comes from ``k``'s
    own generator, never from its class."""
    rng = _rng(cfg, _VIDEO, k)
    ident = sample_identity(rng)
    h, w = cfg.ffpp_height, cfg.ffpp_width
    background = signature_background(rng, h * supersample, w * supersample)
    # head_motion sweeps the light across the whole clip however short it is; one shot keeps it
    poses = head_motion(rng, cfg.leak_frames, cfg.ffpp_fps)
    lit = poses[0]
    poses = [dataclasses.replace(p, light_x=lit.light_x, light_y=lit.light_y, light=lit.light) for p in poses]
    frames = np.empty((cfg.leak_frames, h, w, 3), np.uint8)
    for i, pose in enumerate(poses):
        img = render_face(ident, pose, h, w, supersample, background=background)[0]
        frames[i] = add_sensor_noise(img, rng, cfg.noise_sigma)
    return frames


def make_video(cfg: DemoConfig, root: Path, k: int) -> str:
    """Write control video ``k`` under ``root``; return its class folder (for the counts)."""
    rel = plan(cfg)[k]
    encode_video(root / rel, render_clip(cfg, k), cfg.ffpp_fps, cfg.ffpp_crf)
    return rel.split("/")[1]
