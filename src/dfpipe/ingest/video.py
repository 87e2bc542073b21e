"""Frame sampling from videos: exact frame indices, decoding only what is needed (PyAV).

Two sampling policies of the research notes (seed 002):

- ``every_nth``: frames ``0, N, 2N, ...`` below the frame count ("20 frames extract 1 image").
- ``per_video``: ``K`` frames evenly spaced over the video, index ``i`` (``0 <= i < K``) is
  ``floor((i + 0.5) * n / K)``: the centre of the ``i``-th of ``K`` equal segments, so the first and
  last frames (fades, black frames) are avoided and indices are strictly increasing for ``n >= K``.
  A video with fewer than ``K`` frames gives all its frames.

The container's frame count is not trusted (truncated files lie about it): :func:`probe` counts
the packets the demuxer can actually read, without decoding. Frame ``i`` is the ``i``-th frame in
presentation order (packets sorted by pts), so a frame index means the same thing in a video and in
its mask video.

:func:`read_frames` decodes forward from the previous key frame and seeks only when the next
wanted frame lies behind a key frame that is ahead of the decoder (that is, when skipping by
decoding would cost more than a key-frame interval); only kept frames are converted to RGB.
:class:`VideoFile` opens a file's container once for its probe and its decoding (the worker's path);
:func:`probe` and :func:`read_frames` open their own.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import av
import numpy as np

Policy = Literal["every_nth", "per_video"]


class VideoError(RuntimeError):
    """A video cannot be opened or demuxed at all (zero-byte, not a video, no video stream)."""


def every_nth_indices(n_frames: int, n: int) -> list[int]:
    """Indices ``0, n, 2n, ...`` below ``n_frames``."""
    if n < 1:
        raise ValueError(f"every_nth step must be >= 1, got {n}")
    return list(range(0, max(n_frames, 0), n))


def per_video_indices(n_frames: int, k: int) -> list[int]:
    """``k`` evenly spaced indices ``floor((i + 0.5) * n_frames / k)``; all frames if ``n_frames < k``."""
    if k < 1:
        raise ValueError(f"frames per video must be >= 1, got {k}")
    if n_frames <= k:
        return list(range(max(n_frames, 0)))
    # integer arithmetic: floor((2i + 1) * n / 2k) == floor((i + 0.5) * n / k), no float rounding
    return [((2 * i + 1) * n_frames) // (2 * k) for i in range(k)]


def sample_indices(n_frames: int, policy: Policy, every_n: int, per_video: int) -> list[int]:
    """Frame indices for ``policy`` (see the module docstring)."""
    if policy == "every_nth":
        return every_nth_indices(n_frames, every_n)
    if policy == "per_video":
        return per_video_indices(n_frames, per_video)
    raise ValueError(f"unknown sampling policy {policy!r}")


@dataclass(frozen=True)
class VideoInfo:
    """What the demuxer could read of a video.

    ``pts``: presentation timestamps of the readable frames, sorted (frame ``i`` has ``pts[i]``);
    ``None`` when the container has no timestamps (then frames are counted in decode order and
    :func:`read_frames` never seeks). ``keyframes``: indices of key frames, sorted.
    ``declared_frames``: the header's count (0 when unknown), kept only for reports.
    """

    n_frames: int
    width: int
    height: int
    pts: tuple[int, ...] | None
    keyframes: tuple[int, ...]
    declared_frames: int
    demux_error: str  # "" when the whole file demuxed cleanly
    codec: str = ""  # decoder name of the video stream ("h264", "mpeg4", ...)


#: FFmpeg decoder threads per container; 0: FFmpeg's default (one per core)
_DECODER_THREADS = 0


def set_decoder_threads(threads: int) -> None:
    """Threads each video decoder may use from now on (0: FFmpeg's default); decoded frames do not
    depend on it (the preprocess workers set their share of the cores)."""
    global _DECODER_THREADS
    _DECODER_THREADS = max(0, int(threads))


def decoder_threads() -> int:
    return _DECODER_THREADS


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: zero-byte file")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    if _DECODER_THREADS:
        container.streams.video[0].codec_context.thread_count = _DECODER_THREADS
    return container


def probe(path: str | Path) -> VideoInfo:
    """Count the frames that can actually be demuxed (no decoding) and locate key frames."""
    with VideoFile(path) as video:
        return video.info


class VideoFile:
    """A video opened once: :attr:`info` (its :func:`probe`) and :meth:`read_frames` share the container.

    Raises :class:`VideoError` as :func:`probe` does; use as a context manager (or call :meth:`close`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._container: av.container.InputContainer | None = _open(self.path)
        try:
            self.info = _probe(self._container, self.path)
        except BaseException:
            self.close()
            raise

    def read_frames(self, indices: list[int], gray: bool = False) -> tuple[dict[int, np.ndarray], str]:
        """:func:`read_frames` of this file with its probe, on the open container."""
        if self._container is None:
            raise ValueError(f"{self.path}: video file is closed")
        if self.info.pts is None:
            # without timestamps decoding must restart at the first packet, which only a fresh
            # container guarantees (the probe left this one at the end and it cannot seek by pts)
            return read_frames(self.path, indices, self.info, gray)
        # the first read seeks (by pts, to the key frame before the first wanted frame) anyway
        return _read_frames(self._container, indices, self.info, gray)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _probe(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    codec = stream.codec_context.name or ""
    entries: list[tuple[int | None, bool]] = []
    error = ""
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet at end of stream
                continue
            entries.append((packet.pts, bool(packet.is_keyframe)))
    except (av.error.FFmpegError, EOFError) as exc:
        error = f"demux stopped after {len(entries)} packets: {exc}"
    declared = int(stream.frames or 0)
    if not entries:
        raise VideoError(f"{path}: no readable video frames ({error or 'empty stream'})")
    if width <= 0 or height <= 0:
        raise VideoError(f"{path}: video stream has no frame size")
    if any(p is None for p, _ in entries):
        pts = None
        keyframes = tuple(i for i, (_, k) in enumerate(entries) if k)
    else:
        # every pts is an int here (a None sends us to the branch above)
        order = sorted(range(len(entries)), key=lambda i: cast(int, entries[i][0]))
        pts = tuple(cast(int, entries[i][0]) for i in order)
        keyframes = tuple(rank for rank, i in enumerate(order) if entries[i][1])
    return VideoInfo(len(entries), width, height, pts, keyframes, declared, error, codec)


def read_frames(
    path: str | Path, indices: list[int], info: VideoInfo | None = None, gray: bool = False
) -> tuple[dict[int, np.ndarray], str]:
    """Decode the frames at ``indices`` (sorted, unique) of ``path``.

    Returns ``({index: frame}, error)``: frames are ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8
    when ``gray`` (mask videos); ``error`` is ``""`` or the decoder error that stopped decoding
    early (frames after it are absent from the dict: the caller records them as rejects).
    """
    path = Path(path)
    if info is None:
        with VideoFile(path) as video:
            return video.read_frames(indices, gray)
    container = _open(path)
    try:
        return _read_frames(container, indices, info, gray)
    finally:
        container.close()


def _read_frames(
    container: av.container.InputContainer, indices: list[int], info: VideoInfo, gray: bool
) -> tuple[dict[int, np.ndarray], str]:
    if list(indices) != sorted(set(indices)):
        raise ValueError("indices must be sorted and unique")
    wanted = [i for i in indices if 0 <= i < info.n_frames]
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out, ""
    fmt = "gray" if gray else "rgb24"
    # looked up with packet / frame pts, which may be None (-> no index)
    pts_index: dict[int | None, int] | None = {p: i for i, p in enumerate(info.pts)} if info.pts is not None else None
    wanted_set = set(wanted)
    error = ""
    stream = container.streams.video[0]
    cc = stream.codec_context
    position = -1  # index of the last frame the decoder delivered
    w = 0
    need_seek = pts_index is not None
    while w < len(wanted):
        if need_seek:
            assert info.pts is not None  # need_seek only with a pts index
            k = bisect.bisect_right(info.keyframes, wanted[w]) - 1
            key = info.keyframes[k] if k >= 0 else 0
            container.seek(info.pts[key], backward=True, any_frame=False, stream=stream)
            need_seek = False
        stop = False
        try:
            for packet in container.demux(stream):
                if pts_index is not None:
                    pidx = pts_index.get(packet.pts) if packet.size else None
                    # A non-reference frame that is not wanted is dropped before decoding
                    # (no later frame depends on it): B-frames cost nothing.
                    cc.skip_frame = "DEFAULT" if pidx is None or pidx in wanted_set else "NONREF"
                for frame in packet.decode():
                    if pts_index is not None:
                        idx = pts_index.get(frame.pts)
                        if idx is None:
                            raise av.error.InvalidDataError(0, f"frame with unknown pts {frame.pts}")
                    else:
                        idx = position + 1
                    position = idx
                    if idx < wanted[w]:
                        continue  # decoded and skipped, never converted
                    if idx == wanted[w]:
                        out[idx] = frame.to_ndarray(format=fmt)
                    else:  # the decoder dropped the wanted frame (corrupt data)
                        error = error or f"frame {wanted[w]} not delivered by the decoder"
                    while w < len(wanted) and wanted[w] <= idx:
                        w += 1
                    if w == len(wanted):
                        stop = True
                        break
                    if pts_index is not None:
                        k = bisect.bisect_right(info.keyframes, wanted[w]) - 1
                        # Seek only when a key frame lies between the decoder and the next
                        # target: decoding from it is cheaper than decoding the whole gap.
                        if k >= 0 and info.keyframes[k] > position + 1:
                            need_seek = stop = True
                            break
                if stop:
                    break
            else:
                error = error or f"decoding ended after frame {position} of {info.n_frames}"
                break
        except (av.error.FFmpegError, EOFError) as exc:
            error = f"decoder error after frame {position}: {exc}"
            break
    return out, error
