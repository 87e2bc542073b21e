"""Synthetic inputs for tests and benchmarks: a detectable cartoon face and small H.264 videos.

Test-only code (benchmarks/ import it too); the pipeline's own deterministic demo data is
``dfpipe.demo``. ``write_video`` is not bit-exact across encoder builds, unlike ``dfpipe.demo.video``.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np


def draw_synthetic_face(height: int, width: int, cx: int, cy: int, r: int,
                        background: tuple[int, int, int] = (200, 210, 220)) -> np.ndarray:
    """A cartoon head and shoulders that BlazeFace detects and the selfie segmenter sees as a person.

    Returns ``(H, W, 3)`` uint8 RGB. For tests and benchmarks (real components need a detectable
    input; nothing is downloaded). ``(cx, cy)`` is the face centre, ``r`` its half
    height in pixels.
    """
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    t = lambda f: max(1, int(round(f * r)))  # noqa: E731 - size proportional to the face
    cv2.ellipse(img, (cx, cy + t(3.0)), (t(2.2), t(2.0)), 0, 180, 360, (50, 70, 140), -1)  # shoulders
    cv2.rectangle(img, (cx - t(0.4), cy + t(0.6)), (cx + t(0.4), cy + t(1.3)), (230, 190, 160), -1)  # neck
    cv2.ellipse(img, (cx, cy - t(0.25)), (t(0.95), t(1.05)), 0, 180, 360, (10, 20, 30), -1)  # hair
    cv2.ellipse(img, (cx, cy), (t(0.8), r), 0, 0, 360, (240, 200, 170), -1)
    for s in (-1, 1):
        ex, ey = cx + s * t(0.33), cy - t(0.2)
        cv2.ellipse(img, (ex, ey), (t(0.16), t(0.08)), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, (ex, ey), t(0.06), (20, 30, 40), -1)
        cv2.line(img, (ex - t(0.17), ey - t(0.17)), (ex + t(0.17), ey - t(0.2)), (20, 30, 40), t(0.04))
    cv2.line(img, (cx, cy - t(0.1)), (cx - t(0.06), cy + t(0.22)), (190, 140, 120), t(0.03))
    cv2.ellipse(img, (cx, cy + t(0.45)), (t(0.25), t(0.08)), 0, 0, 360, (180, 60, 60), -1)
    return img


def write_video(path: str | Path, frames, fps: int = 25, gop: int = 12, crf: int = 18,
                gray: bool = False) -> int:
    """Encode ``frames`` (iterable of ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` when ``gray``) as H.264 mp4.

    ``gop`` is the key-frame interval. Used by tests and benchmarks to build small videos; mask
    videos (``gray``) are stored as RGB of the grey level, like FaceForensics++'s mask videos.
    Returns the number of frames written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            frame = np.asarray(frame, dtype=np.uint8)
            if gray:
                frame = np.repeat(frame[:, :, None], 3, axis=2)
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(gop),
                                  "sc_threshold": "0", "threads": "1"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return n
