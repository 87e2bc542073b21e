"""The ``preprocess:`` section of params.yaml: face detection, crop, segmentation, sharding and
executor settings shared by every source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dfpipe.core.config import Config, RepoPath
from dfpipe.ingest.executor import Executor


class PreprocessConfig(Config):
    """The ``preprocess:`` section of params.yaml (shared by every source)."""

    detector_model: RepoPath
    segmenter_model: RepoPath
    margin: float = Field(ge=1.0, le=4.0)  # crop side = max(w, h) * margin; 1.3 as FaceForensics++ / DeepfakeBench
    size: int = Field(ge=8, le=1024)  # stored crop side in pixels
    min_score: float = Field(ge=0, le=1)  # face detector confidence threshold
    min_face: int = Field(ge=1)  # smallest accepted face box side, source pixels
    every_n: int = Field(ge=1)  # every_nth policy: frames 0, N, 2N, ...
    frames_per_video: int = Field(ge=1)  # per_video policy: K evenly spaced frames
    seg_threshold: float = Field(ge=0, le=1)  # person probability above which a pixel is foreground
    seg_background: Literal["blank", "keep"]  # crop_seg: zero the background, or keep it
    min_person: float = Field(ge=0, le=1)  # crop_seg (blank or keep): reject crops with less foreground than this
    max_pixels: int = Field(ge=1)  # larger images are rejected before decoding (decompression bombs)
    shard_size: int = Field(ge=1)
    workers: int = Field(ge=1)  # processes (executor local) or Ray actors (ray), one CPU each
    executor: Executor = "local"  # local | ray: where items run; output bytes do not depend on it
    ray_address: str | None = None  # executor ray: "host:port"; null = RAY_ADDRESS, else a local Ray
    # A face region smaller than `size`: "cubic" enlarges it (recorded as resize_kernel "cubic"),
    # "reject" drops it as small_face, so every stored crop is area-downsampled
    # (one resampling kernel for all classes: a kernel that differs by class is a shortcut).
    upscale: Literal["cubic", "reject"] = "cubic"
