"""Demo FaceForensics++ videos: talking-head originals, manipulated versions and their masks.

Encoding is H.264 (libx264 through PyAV), single-threaded with fixed options, in an MP4 container
written with ``+bitexact`` (no muxer version string or creation time), from YUV frames converted
by OpenCV, so the same frames give byte-identical files on every run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Literal, get_args

import av
import cv2
import numpy as np
from av.codec.context import Flags

from dfpipe.core.io import atomic_path
from dfpipe.ingest.codec import rgb_to_yuv420, x264_options

from .faces import Identity, Pose, add_sensor_noise, render_face, with_expression

Method = Literal["Face2Face", "FaceSwap", "DeepFakeDetection"]
METHODS: tuple[Method, ...] = get_args(Method)


def encode_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, crf: int) -> int:
    """Encode RGB uint8 frames (H, W, 3), H and W even, to an H.264 MP4 at ``path`` atomically.

    Returns the number of frames written. Single-threaded x264 with a fixed preset is deterministic.
    """
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", container_options={"fflags": "+bitexact"}) as container:
            stream = None
            for frame in frames:
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = container.add_stream("libx264", rate=fps, options=x264_options(crf))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.time_base = Fraction(1, fps)
                    stream.codec_context.time_base = Fraction(1, fps)
                    stream.codec_context.flags |= Flags.bitexact
                vf = rgb_to_yuv420(frame)
                vf.pts = n
                vf.time_base = Fraction(1, fps)
                for packet in stream.encode(vf):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to encode")
            for packet in stream.encode(None):
                container.mux(packet)
    return n


def head_motion(rng: np.random.Generator, n_frames: int, fps: float) -> list[Pose]:
    """A talking-head trajectory: smooth head motion, speech-like mouth, blinks and a lighting
    change over the clip. Positions in fractions of the frame (see :class:`Pose`)."""
    t = np.arange(n_frames, dtype=np.float64) / fps

    def wave(amp: float, lo: float = 0.15, hi: float = 0.6) -> np.ndarray:
        f, ph = rng.uniform(lo, hi), rng.uniform(0, 2 * math.pi)
        return amp * np.sin(2 * math.pi * f * t + ph)

    cx0, cy0, scale = rng.uniform(0.42, 0.58), rng.uniform(0.45, 0.55), rng.uniform(0.24, 0.30)
    cx, cy = cx0 + wave(0.04), cy0 + wave(0.025)
    yaw, pitch, roll = wave(0.3), wave(0.1), wave(0.1)
    talk_f = rng.uniform(2.0, 4.0)
    mouth = np.clip(
        0.5 + 0.5 * np.sin(2 * math.pi * talk_f * t + rng.uniform(0, 6)) * np.abs(wave(1.0, 0.2, 0.5)), 0, 1
    )
    smile = 0.3 + wave(0.4)
    brow = wave(0.5, 0.3, 0.8)
    blink_at = rng.uniform(0, t[-1] + 1e-6, size=max(1, int(t[-1] / 2.5) + 1))
    eye = np.ones(n_frames)
    for b in blink_at:
        eye = np.minimum(eye, np.clip(np.abs(t - b) / 0.1, 0.05, 1.0))
    # Lighting change: the light swings across and brightens or dims over the clip.
    lx0, lx1 = rng.uniform(-0.8, 0.8, 2)
    lx = lx0 + (lx1 - lx0) * t / max(t[-1], 1e-6)
    ly = rng.uniform(-0.7, 0.0) + wave(0.1)
    light = rng.uniform(0.85, 1.1) + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-6)
    warmth = rng.uniform(-0.5, 0.5)
    return [
        Pose(
            cx=float(cx[i]),
            cy=float(cy[i]),
            scale=float(scale),
            yaw=float(yaw[i]),
            pitch=float(pitch[i]),
            roll=float(roll[i]),
            mouth_open=float(mouth[i]),
            smile=float(smile[i]),
            brow_raise=float(brow[i]),
            eye_open=float(eye[i]),
            light_x=float(lx[i]),
            light_y=float(ly[i]),
            light=float(light[i]),
            warmth=float(warmth),
        )
        for i in range(n_frames)
    ]


@dataclasses.dataclass
class OriginalClip:
    """Rendered original: noisy frames (T, H, W, 3) uint8, per-frame masks (T, H, W) float32 of the
    face and mouth regions, the poses and the static background (supersampled, float32)."""

    identity: Identity
    poses: list[Pose]
    background: np.ndarray
    frames: np.ndarray
    face_masks: np.ndarray
    mouth_masks: np.ndarray


def scene_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static room-like backdrop: gradient wall, a couple of furniture rectangles; float32
    (height, width, 3) in [0, 255], blurred like an out-of-focus background."""
    a, b = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(a * (1 - t) + b * t, (height, width, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2))
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(v) for v in rng.uniform(20, 235, 3)), -1)
    return cv2.GaussianBlur(img, (0, 0), 2.0)


def render_original(
    ident: Identity,
    rng: np.random.Generator,
    n_frames: int,
    fps: float,
    height: int,
    width: int,
    noise_sigma: float,
    supersample: int = 2,
    bystander: tuple[Identity, Pose] | None = None,
) -> OriginalClip:
    """Render one original clip of ``ident``; all randomness comes from ``rng``.

    ``bystander``: a second, static person drawn into the scene's background (DFDC has
    multi-person videos; a face swap replaces only the main face, as the background is reused).
    """
    poses = head_motion(rng, n_frames, fps)
    bg = scene_background(rng, height * supersample, width * supersample)
    if bystander is not None:
        bg = render_face(bystander[0], bystander[1], height * supersample, width * supersample, 1, background=bg)[0]
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    face_m = np.empty((n_frames, height, width), np.float32)
    mouth_m = np.empty((n_frames, height, width), np.float32)
    for i, pose in enumerate(poses):
        img, face_m[i], mouth_m[i] = render_face(ident, pose, height, width, supersample, background=bg)
        frames[i] = add_sensor_noise(img, rng, noise_sigma)
    return OriginalClip(ident, poses, bg, frames, face_m, mouth_m)


def _soft(mask: np.ndarray, sigma: float, erode: int = 0) -> np.ndarray:
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return cv2.GaussianBlur(mask, (0, 0), sigma) if sigma > 0 else mask


def manipulate(
    method: str,
    target: OriginalClip,
    source: OriginalClip,
    rng: np.random.Generator,
    noise_sigma: float,
    supersample: int = 2,
    swapped: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Make the ``method`` fake of ``target`` driven by ``source``.

    Returns ``(frames, masks)``: (T, H, W, 3) uint8 and (T, H, W) uint8 with 255 where the blend
    weight exceeds 0.1 (the manipulated pixels) and 0 elsewhere.

    - FaceSwap: the source identity rendered in the target's pose, pasted over the target's inner
      face with a narrow feather (a graphics-based swap; no colour correction).
    - DeepFakeDetection: the same swap, colour-matched to the target's face (per-channel mean and
      std inside the mask) and blended with a wide, eroded feather (smoother, like an autoencoder
      swap with Poisson-like blending).
    - Face2Face: the target identity re-rendered with the source's expression (mouth, smile, brows,
      eyes) at the same frame index, pasted over the target's mouth/jaw region.

    ``swapped`` may pass precomputed swap renders (float32 (H, W, 3) per frame) shared by FaceSwap and
    DeepFakeDetection.
    """
    if method not in METHODS:
        raise ValueError(f"unknown manipulation method {method!r}; expected one of {METHODS}")
    n, h, w = target.frames.shape[:3]
    m = min(n, len(source.poses))
    frames = np.empty((m, h, w, 3), np.uint8)
    masks = np.empty((m, h, w), np.uint8)
    base_scale = h / 144.0  # feather widths are tuned for 144-px-high frames
    for i in range(m):
        base = target.frames[i].astype(np.float32)
        if method == "Face2Face":
            pose = with_expression(target.poses[i], source.poses[i])
            fake, _, mouth = render_face(target.identity, pose, h, w, supersample, background=target.background)
            alpha = _soft(np.maximum(mouth, target.mouth_masks[i]), 1.5 * base_scale)
        else:
            fake = (
                swapped[i]
                if swapped is not None
                else render_face(source.identity, target.poses[i], h, w, supersample, background=target.background)[0]
            )
            if method == "FaceSwap":
                alpha = _soft(target.face_masks[i], 1.0 * base_scale)
            else:
                inside = target.face_masks[i] > 0.5
                if inside.any():
                    mu_t, sd_t = base[inside].mean(0), base[inside].std(0) + 1e-3
                    mu_s, sd_s = fake[inside].mean(0), fake[inside].std(0) + 1e-3
                    fake = (fake - mu_s) * (sd_t / sd_s) + mu_t
                alpha = _soft(target.face_masks[i], 3.0 * base_scale, erode=max(1, int(2 * base_scale)))
        noisy = add_sensor_noise(fake, rng, noise_sigma).astype(np.float32)
        out = base * (1 - alpha[..., None]) + noisy * alpha[..., None]
        frames[i] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        masks[i] = np.where(alpha > 0.1, 255, 0).astype(np.uint8)
    return frames, masks


def swap_renders(target: OriginalClip, source: OriginalClip, supersample: int = 2) -> list[np.ndarray]:
    """The source identity rendered in each of the target's poses on the target's background."""
    h, w = target.frames.shape[1:3]
    m = min(len(target.poses), len(source.poses))
    return [
        render_face(source.identity, target.poses[i], h, w, supersample, background=target.background)[0]
        for i in range(m)
    ]
