"""The ``preprocess:`` section of params.yaml: face detection, crop, segmentation, sharding and
executor settings shared by every source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dfpipe.core.config import Config, RepoPath
from dfpipe.ingest.executor import Executor

#: ``preprocess.detector``: how BlazeFace is run over a frame (dfpipe.ingest.faces.FaceDetector).
#: ``whole``: short-range model on the whole frame (faces that fill a good part of it);
#: ``tiled``: the same plus overlapping windows at native resolution; ``full_range`` /
#: ``full_range_tiled``: the full-range model, whole frame / whole frame plus windows.
DetectorPolicy = Literal["whole", "tiled", "full_range", "full_range_tiled"]
#: each policy's model input side in pixels: BlazeFace short-range 128, full-range 192
#: (Bazarevsky et al., "BlazeFace", arXiv:1907.05047; MediaPipe's face detection model card)
POLICY_INPUT = {"whole": 128, "tiled": 128, "full_range": 192, "full_range_tiled": 192}


class PreprocessConfig(Config):
    """The ``preprocess:`` section of params.yaml (shared by every source)."""

    detector: DetectorPolicy = "whole"
    # the .tflite the policy runs: BlazeFace short-range (whole, tiled) or full-range (full_range*)
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
    # tiled policies: window side (a multiple of the model input: 128 short-range, 192 full-range)
    # and least overlap of neighbouring windows, source pixels
    tile_size: int = Field(default=768, ge=128)
    tile_overlap: int = Field(default=128, ge=0)
    # tiled policies: the model of the whole-frame pass (close-ups wider than the windows); null:
    # detector_model. The short-range model finds those at a third of the full-range's cost
    whole_model: RepoPath | None = None

    @model_validator(mode="after")
    def _detector(self) -> PreprocessConfig:
        full = self.detector.startswith("full_range")
        if full != ("full_range" in self.detector_model.name):
            want = "face_detection_full_range_sparse" if full else "face_detection_short_range"
            raise ValueError(
                f"detector {self.detector} runs the {'full' if full else 'short'}-range BlazeFace model "
                f"({want}.tflite), but detector_model is {self.detector_model.as_posix()}"
            )
        if self.whole_model is not None and not self.whole_model.name.startswith("face_detection_"):
            raise ValueError(f"whole_model {self.whole_model.as_posix()}: expected a BlazeFace face_detection_*.tflite")
        if self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap {self.tile_overlap} must be smaller than tile_size {self.tile_size}")
        side = POLICY_INPUT[self.detector]
        if self.detector.endswith("tiled") and self.tile_size % side:
            raise ValueError(f"tile_size {self.tile_size} must be a multiple of the {side} px model input")
        return self
