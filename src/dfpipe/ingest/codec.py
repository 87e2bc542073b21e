"""Codec control for still images: one lossy round trip (H.264 intra or JPEG) before detection.

Why: in the notes' data every edited face is an H.264 video frame and every real face a PNG, so
"lossy codec trace or not" separates the classes without looking at a face. A codec-controlled
source sends each still through the same codec family as the videos. The round trip is applied
to the whole image, before face detection and cropping, because that is the order the videos
went through (frames encoded at native resolution, then decoded, detected, cropped and resized):
the codec's 16x16 block grid and quantisation then sit at the native scale and pass through the
same resampling as in video frames.

H.264 uses the demo video writer's bit-exact libx264 settings (:func:`x264_options`), so the same
pixels give the same bytes on every run. A single frame is always an IDR (intra) frame.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, cast

import av
import cv2
import numpy as np
from av.codec.context import Flags


def x264_options(crf: int) -> dict[str, str]:
    """libx264 options that make encoding deterministic (shared with the demo video writer).

    Single-threaded, fixed preset; mbtree off: with it, this x264 build gave different bytes in
    about one run of ten on identical input (measured, 12-40 repeats); without it, none.
    """
    return {
        "crf": str(crf),
        "preset": "veryfast",
        "threads": "1",
        "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0",
    }


def rgb_to_yuv420(rgb: np.ndarray) -> av.VideoFrame:
    """``(H, W, 3)`` uint8 RGB, H and W even -> a yuv420p frame (BT.601 limited range, OpenCV):
    PyAV's swscale conversion from rgb24 gave different bytes from run to run."""
    # uint8 in, uint8 out (OpenCV's stubs type the result as any integer/float array)
    yuv = cast("np.ndarray[Any, np.dtype[np.uint8]]", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420))
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def h264_intra(rgb: np.ndarray, crf: int) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` uint8 through one intra-coded H.264 frame at ``crf``; same shape back.

    Odd sides are padded by edge replication to even (4:2:0 needs them) and cut off again. The
    frame is decoded with ``to_ndarray("rgb24")``, as :func:`dfpipe.ingest.video.read_frames`
    decodes video frames.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = padded.shape[1], padded.shape[0], "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = x264_options(crf)
    enc.flags |= Flags.bitexact
    frame = rgb_to_yuv420(padded)
    frame.pts = 0
    packets = list(enc.encode(frame)) + list(enc.encode(None))
    dec = av.CodecContext.create("h264", "r")
    decoded = []
    for packet in packets:
        decoded += dec.decode(packet)
    decoded += dec.decode(None)
    if len(decoded) != 1:
        raise ValueError(f"H.264 round trip gave {len(decoded)} frames, expected 1")
    return np.ascontiguousarray(decoded[0].to_ndarray(format="rgb24")[:h, :w])


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` through a baseline JPEG at ``quality`` (OpenCV's libjpeg, 4:2:0), decoded again."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    decoded = cast(np.ndarray, cv2.imdecode(buf, cv2.IMREAD_COLOR))  # None only for undecodable bytes
    return np.ascontiguousarray(decoded[:, :, ::-1])


def apply_codec(rgb: np.ndarray, kind: str, crf: int | None = None, quality: int | None = None) -> np.ndarray:
    """Dispatch on ``kind`` (``h264`` / ``jpeg``), see :class:`dfpipe.ingest.sources.CodecConfig`."""
    if kind == "h264":
        if crf is None:
            raise ValueError("codec h264 needs crf")
        return h264_intra(rgb, int(crf))
    if kind == "jpeg":
        if quality is None:
            raise ValueError("codec jpeg needs quality")
        return jpeg(rgb, int(quality))
    raise ValueError(f"unknown codec {kind!r}")
