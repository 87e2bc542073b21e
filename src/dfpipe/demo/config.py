"""The ``demo:`` section of params.yaml: sizes, counts and seeds of the embedded demo data."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from dfpipe.core.config import Config, PlainName, RepoPath
from dfpipe.demo.gan import Operator
from dfpipe.demo.video import Method

Count = Annotated[int, Field(ge=1)]


class DemoConfig(Config):
    """``demo:`` section of params.yaml (every key required). Sizes in pixels; counts per folder."""

    seed: int = Field(ge=0)
    out_dir: RepoPath
    workers: Count  # processes; the output bytes do not depend on it
    image_size: Count  # FFHQ and GAN images (square)
    noise_sigma: float = Field(ge=0)  # sensor read noise, in 8-bit levels
    ffhq_identities: int = Field(ge=1, le=9999)  # file names idNNNN_KK.png
    ffhq_images_per_identity: int = Field(ge=1, le=99)
    gan_images: Count  # per generator
    gan_base_size: Count  # the coarse band that goes through the 2x up-sampling chain
    gan_generators: dict[PlainName, Operator] = Field(min_length=1)  # folder -> operator (dfpipe.demo.gan)
    ffpp_videos: int = Field(ge=2, le=1000, multiple_of=2)  # originals 000 .. N-1 (paired)
    ffpp_frames: Count
    ffpp_fps: Count
    ffpp_width: int = Field(ge=2, multiple_of=2)  # even: yuv420p
    ffpp_height: int = Field(ge=2, multiple_of=2)
    ffpp_compression: PlainName  # folder name of the quality level, as in FF++
    ffpp_crf: int = Field(ge=0, le=51)  # x264 constant rate factor (FF++ c23 = crf 23)
    ffpp_methods: tuple[Method, ...]
    split_fractions: tuple[float, float, float]  # FF++: 720/140/140 videos
    cross_videos: int = Field(ge=1)  # Celeb-DF / DFDC demo trees: identities (= real test videos) per dataset
    cross_frames: int = Field(ge=1)  # frames per Celeb-DF / DFDC demo video
    # planted-leak control (dfpipe.demo.leakctl): videos (half per class, each its own identity) and
    # frames per video
    leak_videos: int = Field(ge=2, le=1000, multiple_of=2)
    leak_frames: Count

    @model_validator(mode="after")
    def _consistent(self) -> DemoConfig:
        ratio = self.image_size / self.gan_base_size
        stages = int(round(ratio)).bit_length() - 1
        if ratio != 2**stages or stages < 2:
            raise ValueError(
                f"image_size / gan_base_size must be a power of two >= 4 (two or more 2x up-sampling "
                f"stages, so the fingerprint survives a resized face crop); got {self.image_size}/{self.gan_base_size}"
            )
        if len(set(self.ffpp_methods)) != len(self.ffpp_methods):
            raise ValueError("ffpp_methods has duplicates")
        if any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be >= 0 and sum to 1, got {self.split_fractions}")
        if self.split_fractions[0] <= 0:
            raise ValueError("split_fractions: the train fraction must be > 0")
        return self
