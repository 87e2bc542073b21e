"""Procedurally drawn faces: the stand-in for real portraits in the embedded demo data.

A face is an :class:`Identity` (what stays fixed for a person: head shape, skin tone, eyes, brows,
nose, mouth, hair, ears, clothes, background) seen in a :class:`Pose` (what changes from shot to
shot or frame to frame: head rotation, position, size, expression, lighting). Features sit on a
head ellipsoid, are rotated in 3-D and projected orthographically, so a yawed head shows its
features shifted and fore-shortened. The head is Lambert-shaded from the pose's light direction.

Everything is drawn with OpenCV at ``supersample`` times the output size and area-averaged down
(anti-aliasing), all in float32 numpy; the result depends only on the arguments (no global RNG).

The faces are crude but face-like enough for Google's BlazeFace short-range detector
(``models/mediapipe/face_detection_short_range.tflite``): ``tests/demo/test_demo.py`` checks a
detection rate >= 95 % at ``min_detection_confidence`` 0.5.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

# Skin tones from light to dark (RGB, 0-255): an identity's tone is a random blend of two neighbours.
_SKIN_TONES = np.array(
    [[241, 206, 182], [226, 182, 150], [204, 150, 115], [170, 118, 84], [128, 84, 58], [92, 60, 44]],
    dtype=np.float32,
)
_HAIR_COLOURS = np.array(
    [[25, 20, 18], [60, 40, 28], [110, 75, 45], [190, 150, 95], [150, 70, 35], [150, 150, 150]],
    dtype=np.float32,
)
_EYE_COLOURS = np.array([[60, 40, 25], [95, 65, 35], [60, 100, 140], [80, 110, 70], [40, 30, 25]], dtype=np.float32)


@dataclass(frozen=True)
class Identity:
    """Fixed appearance of one person. Lengths are fractions of the head half-width (``1.0``)."""

    aspect: float  # head half-height / half-width
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long (hair falls behind the head to the shoulders), 2 very short
    hairline: float  # y of the hairline (negative = above the centre)
    eye: tuple[float, float, float]
    eye_dx: float  # half distance between eye centres
    eye_y: float
    eye_w: float
    brow_thick: float
    brow_gap: float  # brow height above the eye
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: tuple[float, float, float]
    bg_a: tuple[float, float, float]
    bg_b: tuple[float, float, float]
    clothes: tuple[float, float, float]
    texture_seed: int  # seeds the fixed low-frequency background / skin blotch pattern


@dataclass(frozen=True)
class Pose:
    """One shot of a face. Angles in radians; ``cx`` is a fraction of the canvas width, ``cy`` and
    ``scale`` (head half-height) fractions of its height; light is an image-plane direction."""

    cx: float = 0.5
    cy: float = 0.52
    scale: float = 0.30
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    smile: float = 0.0  # -0.5 frown .. 1 broad smile
    brow_raise: float = 0.0  # -1 .. 1
    eye_open: float = 1.0  # 0 shut .. 1 open
    light_x: float = -0.4
    light_y: float = -0.5
    light: float = 1.0  # overall brightness multiplier
    warmth: float = 0.0  # colour temperature shift, -1 cool .. 1 warm


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    """The three entries of an RGB colour array as Python floats."""
    r, g, b = (float(v) for v in values)
    return r, g, b


def _tone(table: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    i = int(rng.integers(0, len(table) - 1))
    t = float(rng.uniform())
    c = (1 - t) * table[i] + t * table[i + 1] + rng.normal(0, 6, 3)
    return _rgb(np.clip(c, 0, 255))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random identity; the same generator state always gives the same identity."""
    bg_a = rng.uniform(30, 230, 3)
    bg_b = np.clip(bg_a + rng.normal(0, 45, 3), 0, 255)
    return Identity(
        aspect=float(rng.uniform(1.22, 1.42)),
        skin=_tone(_SKIN_TONES, rng),
        hair=_tone(_HAIR_COLOURS, rng),
        hair_style=int(rng.integers(0, 3)),
        hairline=float(rng.uniform(-0.62, -0.45)),
        eye=_tone(_EYE_COLOURS, rng),
        eye_dx=float(rng.uniform(0.36, 0.44)),
        eye_y=float(rng.uniform(-0.16, -0.06)),
        eye_w=float(rng.uniform(0.19, 0.25)),
        brow_thick=float(rng.uniform(0.045, 0.08)),
        brow_gap=float(rng.uniform(0.15, 0.22)),
        nose_len=float(rng.uniform(0.30, 0.40)),
        nose_w=float(rng.uniform(0.11, 0.17)),
        mouth_y=float(rng.uniform(0.50, 0.60)),
        mouth_w=float(rng.uniform(0.28, 0.38)),
        lip=_rgb(np.clip(np.array([180, 85, 85]) + rng.normal(0, 18, 3), 0, 255)),
        bg_a=_rgb(bg_a),
        bg_b=_rgb(bg_b),
        clothes=_rgb(rng.uniform(20, 235, 3)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_pose(rng: np.random.Generator, aligned: bool = True) -> Pose:
    """A random pose. ``aligned`` = FFHQ-like (centred, large, near-frontal); otherwise a wider
    range of positions and rotations."""
    spread = 1.0 if aligned else 1.6
    return Pose(
        cx=float(0.5 + rng.normal(0, 0.015 * spread)),
        cy=float(0.52 + rng.normal(0, 0.015 * spread)),
        scale=float(rng.uniform(0.27, 0.33)),
        yaw=float(np.clip(rng.normal(0, 0.18 * spread), -0.5, 0.5)),
        pitch=float(np.clip(rng.normal(0, 0.08 * spread), -0.25, 0.25)),
        roll=float(np.clip(rng.normal(0, 0.07 * spread), -0.25, 0.25)),
        mouth_open=float(rng.uniform(0, 1) ** 2),
        smile=float(rng.uniform(-0.3, 1.0)),
        brow_raise=float(rng.uniform(-0.6, 0.8)),
        eye_open=float(rng.uniform(0.7, 1.0)),
        light_x=float(rng.uniform(-0.8, 0.8)),
        light_y=float(rng.uniform(-0.8, 0.2)),
        light=float(rng.uniform(0.8, 1.15)),
        warmth=float(rng.uniform(-0.6, 0.6)),
    )


def with_expression(pose: Pose, driver: Pose) -> Pose:
    """``pose`` with the expression (mouth, smile, brows, eyes) of ``driver`` (Face2Face re-enactment)."""
    return dataclasses.replace(
        pose,
        mouth_open=driver.mouth_open,
        smile=driver.smile,
        brow_raise=driver.brow_raise,
        eye_open=driver.eye_open,
    )


class _Projector:
    """Maps face coordinates (head half-width = 1, y down, on the head ellipsoid) to canvas pixels."""

    def __init__(self, ident: Identity, pose: Pose, height: int, width: int):
        self.a = pose.scale * height / ident.aspect  # head half-width in pixels
        self.b = pose.scale * height  # head half-height in pixels
        self.cx = pose.cx * width
        self.cy = pose.cy * height
        self.aspect = ident.aspect
        cy_, sy_ = math.cos(pose.yaw), math.sin(pose.yaw)
        cp, sp = math.cos(pose.pitch), math.sin(pose.pitch)
        cr, sr = math.cos(pose.roll), math.sin(pose.roll)
        yaw = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
        pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        # Only the two image-plane rows are needed (orthographic projection); plain floats are
        # much faster than numpy for the ~100 single points of a face.
        self.r0, self.r1 = (tuple(float(v) for v in row) for row in (roll @ pitch @ yaw)[:2])
        self.fore = cy_  # horizontal fore-shortening of frontal features
        self.roll_deg = math.degrees(pose.roll)

    def point(self, x: float, y: float, depth: float = 1.0) -> tuple[float, float]:
        """Project face point (x, y); ``depth`` scales its height above the ellipsoid's back plane."""
        yy = y / self.aspect
        z = math.sqrt(max(0.0, 1.0 - x * x - yy * yy)) * 0.9 * depth
        r0, r1 = self.r0, self.r1
        return (
            self.cx + (r0[0] * x + r0[1] * yy + r0[2] * z) * self.a,
            self.cy + (r1[0] * x + r1[1] * yy + r1[2] * z) * self.a,
        )

    def length(self, s: float) -> float:
        return s * self.a


def _pt(p: tuple[float, float], ss: int) -> tuple[int, int]:
    # cv2 fixed-point coordinates (shift=4 bits) keep sub-pixel precision when supersampling.
    return int(round(p[0] * ss * 16)), int(round(p[1] * ss * 16))


def _ellipse(img: np.ndarray, centre, axes, angle: float, colour, ss: int, start=0, end=360) -> None:
    ax = (max(1, int(round(axes[0] * ss * 16))), max(1, int(round(axes[1] * ss * 16))))
    cv2.ellipse(img, _pt(centre, ss), ax, angle, start, end, tuple(float(c) for c in colour), -1, cv2.LINE_8, 4)


def _poly(img: np.ndarray, pts, colour, ss: int, thickness: int = -1) -> None:
    # (1, N, 2): OpenCV takes the array as its list of one polygon
    arr = cast(Sequence[np.ndarray], np.array([_pt(p, ss) for p in pts], dtype=np.int32)[None])
    colour = tuple(float(c) for c in colour)
    if thickness < 0:
        cv2.fillPoly(img, arr, colour, cv2.LINE_8, 4)
    else:
        cv2.polylines(img, arr, False, colour, max(1, thickness), cv2.LINE_8, 4)


def background_for(ident: Identity, height: int, width: int) -> np.ndarray:
    """The identity's backdrop: a smooth two-colour gradient with a fixed low-frequency pattern,
    float32 (height, width, 3) in [0, 255]. Computed at 1/4 size and up-sampled (it is smooth)."""
    rng = np.random.default_rng(ident.texture_seed)
    h, w = max(4, height // 4), max(4, width // 4)
    blobs = cv2.resize(rng.uniform(0, 1, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None] * 0.6 + blobs * 0.4
    a = np.array(ident.bg_a, np.float32)
    b = np.array(ident.bg_b, np.float32)
    small = a * (1 - t[..., None]) + b * t[..., None]
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def render_face(
    ident: Identity, pose: Pose, height: int, width: int, supersample: int = 2, background: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``ident`` in ``pose`` on a ``height x width`` canvas, without sensor noise.

    Returns ``(image, face_mask, mouth_mask)``: ``image`` float32 (H, W, 3) RGB in [0, 255];
    ``face_mask`` float32 (H, W) in [0, 1], the inner face (brows to chin, cheek to cheek) that a
    face swap replaces; ``mouth_mask`` float32 (H, W) in [0, 1], the mouth/jaw region that an
    expression re-enactment (Face2Face) changes. ``background`` (float32 (h, w, 3), ideally at the
    supersampled size ``(height * supersample, width * supersample)``) replaces the identity's own
    backdrop, e.g. to draw faces into a fixed video scene.
    """
    ss = supersample
    H, W = height * ss, width * ss
    pj = _Projector(ident, pose, height, width)
    if background is None:
        img = background_for(ident, H, W)
    elif background.shape[:2] == (H, W):
        img = background.astype(np.float32, copy=True)
    else:
        img = cv2.resize(background.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    skin = np.array(ident.skin, np.float32)
    hair = np.array(ident.hair, np.float32)
    rdeg = pj.roll_deg
    centre = (pj.cx, pj.cy)

    # Shoulders and neck, below the head.
    neck_c = pj.point(0.0, ident.aspect * 0.9, depth=0.0)
    _ellipse(img, (neck_c[0], neck_c[1] + pj.length(1.9)), (pj.length(2.3), pj.length(1.3)), rdeg, ident.clothes, ss)
    _ellipse(img, (neck_c[0], neck_c[1] + pj.length(0.35)), (pj.length(0.5), pj.length(0.7)), rdeg, skin * 0.8, ss)
    # Long hair falls behind the head.
    if ident.hair_style == 1:
        _ellipse(
            img,
            (pj.cx, pj.cy + pj.length(0.35)),
            (pj.length(1.3), pj.length(ident.aspect * 1.2)),
            rdeg,
            hair * 0.85,
            ss,
        )
    # Ears.
    for side in (-1, 1):
        e = pj.point(side * 0.98, -0.02, depth=0.0)
        _ellipse(img, e, (pj.length(0.14), pj.length(0.25)), rdeg, skin * 0.9, ss)
    # Head.
    _ellipse(img, centre, (pj.a, pj.b), rdeg, skin, ss)
    # Hair cap: the top arc of the head down to the hairline.
    cap = []
    for t in np.linspace(math.pi, 2 * math.pi, 25):
        cap.append(pj.point(1.06 * math.cos(t), ident.aspect * 1.07 * math.sin(t) - 0.02, depth=0.0))
    for x in np.linspace(1.0, -1.0, 13):
        wave = 0.05 * math.sin(6 * x + ident.texture_seed % 7)
        y = ident.hairline + 0.25 * x * x + wave
        if ident.hair_style == 2:
            y = ident.hairline - 0.15 + 0.2 * x * x
        cap.append(pj.point(x * 0.98, y, depth=1.0 if abs(x) < 0.9 else 0.3))
    _poly(img, cap, hair, ss)

    # Lambert shading of the head ellipsoid (applied to everything drawn so far inside the head).
    shading = _head_shading(pj, pose, H, W, ss)
    img *= shading[..., None]

    # Eyes and brows.
    eye_h = ident.eye_w * 0.5 * (0.25 + 0.75 * pose.eye_open)
    for side in (-1, 1):
        ex, ey = side * ident.eye_dx, ident.eye_y
        c = pj.point(ex, ey)
        # Far-side eye is more fore-shortened under yaw.
        fore = max(0.3, pj.fore - 0.4 * side * math.sin(pose.yaw))
        _ellipse(
            img, c, (pj.length(ident.eye_w * 0.75 * fore), pj.length(eye_h * 1.1)), rdeg, skin * 0.6, ss
        )  # eye socket shadow
        _ellipse(img, c, (pj.length(ident.eye_w * 0.5 * fore), pj.length(eye_h * 0.55)), rdeg, (235, 232, 225), ss)
        _ellipse(img, c, (pj.length(0.085 * fore), pj.length(min(0.085, eye_h * 0.55))), rdeg, ident.eye, ss)
        _ellipse(img, c, (pj.length(0.04 * fore), pj.length(min(0.04, eye_h * 0.4))), rdeg, (10, 10, 10), ss)
        # Upper lid line.
        lid = [
            pj.point(ex + ident.eye_w * 0.5 * t, ey - eye_h * 0.55 * math.sqrt(max(0, 1 - t * t)))
            for t in np.linspace(-1, 1, 9)
        ]
        _poly(img, lid, (30, 20, 20), ss, thickness=max(1, int(round(pj.length(0.035) * ss))))
        # Brow: thick arc above the eye, raised with the expression.
        by = ey - ident.brow_gap - 0.05 * pose.brow_raise
        brow = [pj.point(ex + side * 0.2 * t, by - 0.04 * (1 - t * t)) for t in np.linspace(-1.1, 1.1, 9)]
        _poly(img, brow, hair * 0.8, ss, thickness=max(1, int(round(pj.length(ident.brow_thick) * ss))))

    # Nose: shaded bridge, tip highlight, nostrils (protrudes: depth > 1).
    side = 1 if pose.light_x > 0 else -1
    bridge = [
        pj.point(-side * ident.nose_w * 0.6, ident.eye_y + 0.05, 1.0),
        pj.point(-side * ident.nose_w * 0.9, ident.eye_y + ident.nose_len, 1.15),
    ]
    _poly(img, bridge, skin * 0.7 * pose.light, ss, thickness=max(1, int(round(pj.length(0.05) * ss))))
    tip_y = ident.eye_y + ident.nose_len + 0.05
    _ellipse(
        img,
        pj.point(0, tip_y, 1.2),
        (pj.length(ident.nose_w * pj.fore), pj.length(0.08)),
        rdeg,
        skin * 0.85 * pose.light,
        ss,
    )
    for s in (-1, 1):
        _ellipse(
            img,
            pj.point(s * ident.nose_w * 0.6, tip_y + 0.04, 1.15),
            (pj.length(0.04 * pj.fore), pj.length(0.025)),
            rdeg,
            skin * 0.3,
            ss,
        )

    # Mouth: lips, open interior, smile curve.
    my = ident.mouth_y
    mw = ident.mouth_w * (1 + 0.15 * pose.smile)
    open_h = 0.02 + 0.16 * pose.mouth_open
    curve = 0.08 * pose.smile
    top = [
        pj.point(mw * t, my - open_h * 0.5 - 0.05 * math.sqrt(max(0, 1 - t * t)) - curve * t * t)
        for t in np.linspace(-1, 1, 11)
    ]
    bottom = [
        pj.point(mw * t, my + open_h * 0.5 + 0.07 * math.sqrt(max(0, 1 - t * t)) - curve * t * t)
        for t in np.linspace(1, -1, 11)
    ]
    _poly(img, top + bottom, np.array(ident.lip) * pose.light, ss)
    inner_top = [pj.point(mw * 0.85 * t, my - open_h * 0.5 - curve * t * t) for t in np.linspace(-1, 1, 9)]
    inner_bot = [pj.point(mw * 0.85 * t, my + open_h * 0.5 - curve * t * t) for t in np.linspace(1, -1, 9)]
    _poly(img, inner_top + inner_bot, (45, 15, 20), ss)
    if pose.mouth_open > 0.3:  # teeth
        teeth = [pj.point(mw * 0.6 * t, my - open_h * 0.5 - curve * t * t + 0.005) for t in np.linspace(-1, 1, 7)]
        teeth += [pj.point(mw * 0.6 * t, my - open_h * 0.1 - curve * t * t) for t in np.linspace(1, -1, 7)]
        _poly(img, teeth, (225, 220, 205), ss)

    # Global light: brightness, warmth and a soft gradient across the frame.
    gain = pose.light * np.array([1 + 0.08 * pose.warmth, 1.0, 1 - 0.08 * pose.warmth], np.float32)
    img *= gain
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)

    # Region masks (drawn at output resolution directly; they are soft after blur below).
    face_mask = np.zeros((height, width), np.float32)
    fc = pj.point(0, 0.12, depth=0.3)
    _ellipse(face_mask, fc, (pj.a * 0.86, pj.b * 0.82), rdeg, (1.0,), 1)
    mouth_mask = np.zeros((height, width), np.float32)
    _ellipse(
        mouth_mask,
        pj.point(0, ident.mouth_y + 0.1, depth=0.8),
        (pj.length(ident.mouth_w + 0.22), pj.length(0.38)),
        rdeg,
        (1.0,),
        1,
    )
    return np.clip(img, 0, 255), face_mask, mouth_mask


def _head_shading(pj: _Projector, pose: Pose, H: int, W: int, ss: int) -> np.ndarray:
    """Per-pixel Lambert factor (float32 (H, W)): ambient + diffuse on the head ellipsoid, and a
    mild directional gradient elsewhere. Only the head's bounding box gets the per-pixel model."""
    lx, ly = pose.light_x, pose.light_y
    lz = math.sqrt(max(0.05, 1.0 - min(0.95, lx * lx + ly * ly)))
    norm = math.sqrt(lx * lx + ly * ly + lz * lz)
    # Outside the head: a soft gradient towards the light (separable, cheap).
    gx = (np.arange(W, dtype=np.float32) / ss - pj.cx) * lx
    gy = (np.arange(H, dtype=np.float32) / ss - pj.cy) * ly
    out = 0.9 + 0.1 * np.clip((gy[:, None] + gx[None, :]) / (pj.b * 3.0), -1.0, 1.0)
    r = 1.1 * max(pj.a, pj.b)
    x0, x1 = max(0, int((pj.cx - r) * ss)), min(W, int((pj.cx + r) * ss) + 1)
    y0, y1 = max(0, int((pj.cy - r) * ss)), min(H, int((pj.cy + r) * ss) + 1)
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    x = xs / ss - pj.cx
    y = ys / ss - pj.cy
    cr, sr = math.cos(-math.radians(pj.roll_deg)), math.sin(-math.radians(pj.roll_deg))
    u = (cr * x - sr * y) / pj.a
    v = (sr * x + cr * y) / pj.b
    r2 = u * u + v * v
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    lambert = np.clip((u * lx + v * ly + nz * lz) / norm, 0.0, 1.0)
    inside = r2 <= 1.15
    box = out[y0:y1, x0:x1]
    box[inside] = 0.55 + 0.5 * lambert[inside]
    return out


def add_sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian read noise plus signal-dependent shot noise (variance ~ level, a Poisson
    approximation), quantised: float (H, W, 3) in [0, 255] -> uint8 (H, W, 3)."""
    img = np.clip(img, 0, 255).astype(np.float32, copy=False)
    std = np.sqrt(img)
    std *= 0.02
    std += sigma
    noisy = rng.standard_normal(img.shape, dtype=np.float32)
    noisy *= std
    noisy += img
    np.rint(noisy, out=noisy)
    np.clip(noisy, 0, 255, out=noisy)
    return noisy.astype(np.uint8)


def draw_face(
    ident: Identity,
    pose: Pose,
    rng: np.random.Generator,
    height: int,
    width: int | None = None,
    noise_sigma: float = 2.0,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Draw a face and add sensor noise: uint8 (height, width, 3) RGB.

    ``width`` defaults to ``height``. ``rng`` only drives the noise, so the same identity and pose
    with the same rng state give the same bytes. Use e.g. ``Pose(cx=..., cy=..., scale=...)`` (in
    fractions of the canvas height) to place a face in a larger frame (720p video).
    """
    img, _, _ = render_face(ident, pose, height, width or height, background=background)
    return add_sensor_noise(img, rng, noise_sigma)
