"""Embedded demo data: small, deterministic stand-ins for FFHQ, three GAN families and FaceForensics++.

``make_demo(cfg)`` writes, under ``cfg.out_dir``, the same folder layouts as the real data sets
(see docs/ARCHITECTURE.md, "Raw data layouts"), so every later stage runs unchanged on real data:

- ``ffhq/idNNNN_KK.png``: procedurally drawn portraits, ``ffhq_images_per_identity`` per identity;
- ``gan/<generator>/<generator>_NNNNN.png``: faces drawn at ``gan_base_size`` and up-sampled by the
  generator's fixed chain (:mod:`dfpipe.demo.gan`), leaving its spectral fingerprint;
- ``ffpp/``: FaceForensics++ tree of H.264 originals, manipulated videos, mask videos and the
  official-format ``splits/{train,val,test}.json``;
- ``celebdf/``, ``dfdc/``: Celeb-DF v2 and DFDC trees with their exact names and label files
  (:mod:`dfpipe.demo.datasets`), the cross-dataset test sets of the demo.

Same ``DemoConfig`` => byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .faces import Identity, Pose, draw_face, render_face, sample_identity, sample_pose  # noqa: F401
from .gan import OPERATORS
from .video import METHODS


@dataclass(frozen=True)
class DemoConfig:
    """``demo:`` section of params.yaml (every key required). Sizes in pixels; counts per folder."""

    seed: int
    out_dir: Path
    workers: int   # processes; the output bytes do not depend on it
    image_size: int   # FFHQ and GAN images (square)
    noise_sigma: float   # sensor read noise, in 8-bit levels
    ffhq_identities: int
    ffhq_images_per_identity: int
    gan_images: int   # per generator
    gan_base_size: int   # drawn size before the 2x up-sampling chain
    gan_generators: dict[str, str]   # folder name -> operator (see dfpipe.demo.gan)
    ffpp_videos: int   # originals 000 .. N-1 (even: they are paired)
    ffpp_frames: int
    ffpp_fps: int
    ffpp_width: int
    ffpp_height: int
    ffpp_compression: str   # folder name of the quality level, as in FF++
    ffpp_crf: int   # x264 constant rate factor (FF++ c23 = crf 23)
    ffpp_methods: tuple[str, ...]
    split_fractions: tuple[float, float, float]   # FF++: 720/140/140 videos
    cross_videos: int   # Celeb-DF / DFDC demo trees: identities (= real test videos) per dataset
    cross_frames: int   # frames per Celeb-DF / DFDC demo video

    def validate(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("workers", "image_size", "ffhq_identities", "ffhq_images_per_identity", "gan_images",
                     "gan_base_size", "ffpp_videos", "ffpp_frames", "ffpp_fps", "ffpp_width",
                     "ffpp_height", "cross_videos", "cross_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ffhq_identities > 9999 or self.ffhq_images_per_identity > 99:
            raise ValueError("file names idNNNN_KK.png allow at most 9999 identities x 99 images")
        if self.noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        ratio = self.image_size / self.gan_base_size
        stages = int(round(ratio)).bit_length() - 1
        if ratio != 2 ** stages or stages < 2:
            raise ValueError(
                f"image_size / gan_base_size must be a power of two >= 4 (two or more 2x up-sampling "
                f"stages, so the fingerprint survives a resized face crop); got {self.image_size}/{self.gan_base_size}")
        gens = self.gan_generators
        if not gens:
            raise ValueError("gan_generators must name at least one generator")
        for name, op in gens.items():
            if op not in OPERATORS:
                raise ValueError(f"gan_generators.{name}: operator {op!r} is not one of {list(OPERATORS)}")
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"gan_generators: bad folder name {name!r}")
        if self.ffpp_videos < 2 or self.ffpp_videos % 2 or self.ffpp_videos > 1000:
            raise ValueError(f"ffpp_videos must be even and in 2..1000 (ids 000..999), got {self.ffpp_videos}")
        if self.ffpp_width % 2 or self.ffpp_height % 2:
            raise ValueError("ffpp_width and ffpp_height must be even (yuv420p)")
        if not 0 <= self.ffpp_crf <= 51:
            raise ValueError(f"ffpp_crf must be in 0..51, got {self.ffpp_crf}")
        if not self.ffpp_compression or "/" in self.ffpp_compression:
            raise ValueError(f"bad ffpp_compression folder name {self.ffpp_compression!r}")
        for m in self.ffpp_methods:
            if m not in METHODS:
                raise ValueError(f"ffpp_methods: {m!r} is not one of {list(METHODS)}")
        if len(set(self.ffpp_methods)) != len(self.ffpp_methods):
            raise ValueError("ffpp_methods has duplicates")
        if any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be >= 0 and sum to 1, got {self.split_fractions}")
        if self.split_fractions[0] <= 0:
            raise ValueError("split_fractions: the train fraction must be > 0")


from .build import make_demo  # noqa: E402  (needs DemoConfig defined above)

__all__ = ["DemoConfig", "Identity", "Pose", "draw_face", "make_demo", "render_face",
           "sample_identity", "sample_pose"]
