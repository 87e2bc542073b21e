"""Frozen-encoder feature caches: CLIP image embeddings (UniversalFakeDetect) and LGrad gradient maps.

``features@<cache>`` runs one frozen encoder once over every split of one variant and writes
``<out_dir>/<encoder>/<variant>/<split>/``:

- ``features-NNNNN.npy``: float16 ``(n, D)`` CLIP embeddings or ``(n, 3, S, S)`` gradient maps,
  row ``i`` = manifest row ``i`` (few large shards, :class:`dfpipe.core.shards.ShardWriter`);
- ``ids.parquet``: the manifest ids in that order (column ``id``);
- ``index.json``: count, shape, dtype, shards, ``ids_sha256`` and the encoder config.

A run with ``model.input: clip`` / ``lgrad`` then trains on these arrays in place of images
(:class:`dfpipe.training.data.FeatureDataset`) and never loads the encoder. Same images + same
encoder config => byte-identical files (CPU float32 inference, fixed batch order, seeded random
encoders).

Encoders
- ``clip``: open_clip's image tower. With ``weights`` (the standard OpenAI ViT-L/14 checkpoint,
  obtained at the user's site as a tracked input and checked against ``sha256``) the embedding is
  ``model.encode_image`` (768-d), as Ojha et al. use. Without weights (offline CI, the demo) a small
  ViT of the same open_clip class is initialised from ``seed``: every code path runs, and the tables
  label such rows "random features (demo)".
- ``lgrad``: ``d sum(f(x)) / d x`` for a fixed transformation model ``f`` (Tan et al. CVPR 2023 use
  a pretrained StyleGAN discriminator: ``arch: torchscript`` = such a model exported by the user with
  ``torch.jit.trace``/``script``, fed [-1, 1] images as StyleGAN's discriminators expect;
  ``arch: resnet50`` = an ImageNet ResNet-50 from ``weights``, its 1000 logits summed;
  ``arch: random_cnn`` = a seeded random small CNN, the demo), min-max scaled to [0, 1] per image as
  the authors store gradients as 8-bit images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from dfpipe.core.config import Config, PlainName, RepoPath, SafeName
from dfpipe.core.io import read_json, sha256_file, write_json
from dfpipe.core.manifest import SPLITS, read_table, write_table
from dfpipe.core.shards import ShardWriter
from dfpipe.features.batches import ids_digest, iter_image_batches, read_split_manifest

#: Model inputs served from a feature cache instead of image shards (``ModelConfig.input``).
FEATURE_INPUTS = ("clip", "lgrad")
INDEX_FILE = "index.json"
IDS_FILE = "ids.parquet"
SHARD_PREFIX = "features"
IDS_SCHEMA = pa.schema([pa.field("id", pa.string())])

# open_clip.constants.OPENAI_DATASET_MEAN / STD (CLIP's preprocessing, Radford et al. 2021).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _PinnedEncoder(Config):
    """Keys every frozen encoder shares: ``weights`` is used only with its pinned ``sha256``;
    ``weights`` null means a random encoder from ``seed`` (labelled as such in the tables).
    ``image_size``: the encoder's input side."""

    weights: RepoPath | None
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    seed: int
    image_size: int = Field(ge=8)

    @model_validator(mode="after")
    def _pinned(self) -> _PinnedEncoder:
        if (self.weights is None) != (self.sha256 is None):
            raise ValueError("weights and sha256 go together (a checkpoint is used only with its pinned hash)")
        return self

    @property
    def random(self) -> bool:
        return self.weights is None


class ClipEncoder(_PinnedEncoder):
    """``features.encoders.clip``. ``arch``: open_clip model name (ViT-L-14 = Ojha et al.'s encoder).

    ``weights`` null: a random ViT (``width``, ``layers``, ``heads``, ``patch_size``,
    ``embed_dim``, ``image_size``) from ``seed``; these keys are ignored with weights, where the
    architecture is ``arch`` at its own ``image_size`` (224 for ViT-L-14).
    """

    arch: str
    width: int = Field(ge=8)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    patch_size: int = Field(ge=1)
    embed_dim: int = Field(ge=1)


class LGradEncoder(_PinnedEncoder):
    """``features.encoders.lgrad``: the transformation model whose input gradients are cached.

    ``arch``: ``random_cnn`` (seeded, ``width`` channels; the demo), ``resnet50`` (torchvision
    ImageNet state_dict at ``weights``) or ``torchscript`` (a TorchScript module at ``weights``,
    e.g. the paper's StyleGAN discriminator exported at the user's site: (B, 3, S, S) in [-1, 1] ->
    (B, K) scores); ``weights`` always checked against ``sha256``. ``image_size``: side of the
    gradient maps (the model input).
    """

    arch: Literal["random_cnn", "resnet50", "torchscript"]
    width: int = Field(ge=1)

    @model_validator(mode="after")
    def _arch_weights(self) -> LGradEncoder:
        if (self.arch != "random_cnn") != (self.weights is not None):
            raise ValueError(
                f"arch {self.arch} needs weights + sha256"
                if self.arch != "random_cnn"
                else "arch random_cnn takes no weights"
            )
        return self


class Encoders(Config):
    clip: ClipEncoder
    lgrad: LGradEncoder


class CacheEntry(Config):
    """``features.caches.<name>``: one ``features@<name>`` stage = one encoder over one variant."""

    encoder: Literal["clip", "lgrad"]
    variant: PlainName


class FeaturesConfig(Config):
    out_dir: RepoPath
    variants_dir: RepoPath
    batch_size: int = Field(ge=1)
    shard_size: int = Field(ge=1)
    encoders: Encoders
    caches: dict[SafeName, CacheEntry]  # keys name features@<cache> stages


def cache_dir(out_dir: str | Path, encoder: str, variant: str) -> Path:
    """``<out_dir>/<encoder>/<variant>``: where ``features@`` writes and runs read."""
    return Path(out_dir) / encoder / variant


# ------------------------------------------------------------------------------------------------
# Encoders


def verify_weights(path: Path, sha256: str) -> None:
    """A pinned checkpoint must exist and hash to its pin (else a clear error naming the file)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: encoder weights missing; obtain the pinned checkpoint at your site "
            "(or set weights/sha256 to null for random demo features)"
        )
    digest = sha256_file(path)
    if digest != sha256:
        raise ValueError(f"{path}: sha256 {digest} does not match the pinned {sha256}")


class _Normalised(nn.Module):
    """(B, 3, S, S) in [0, 1] -> resized to ``size`` (bilinear, antialiased) -> (x - mean) / std -> net."""

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor

    def __init__(self, net: nn.Module, size: int, mean, std):
        super().__init__()
        self.net, self.size = net, size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > self.size
            )
        return self.net((x - self.mean) / self.std)


def build_clip(cfg: ClipEncoder) -> nn.Module:
    """Frozen CLIP image tower: (B, 3, S, S) in [0, 1] -> (B, D) embeddings (D = 768 for ViT-L-14)."""
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    if cfg.random:
        torch.manual_seed(cfg.seed)
        vision = CLIPVisionCfg(
            layers=cfg.layers,
            width=cfg.width,
            head_width=cfg.width // cfg.heads,
            patch_size=cfg.patch_size,
            image_size=cfg.image_size,
        )
        tower, size = _build_vision_tower(cfg.embed_dim, vision), cfg.image_size
    else:
        assert cfg.weights is not None and cfg.sha256 is not None  # not random; _pinned pairs them
        verify_weights(cfg.weights, cfg.sha256)
        model = open_clip.create_model(cfg.arch, pretrained=str(cfg.weights))
        tower, size = (
            model.visual,
            model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size,
        )
    return _Normalised(tower, size, CLIP_MEAN, CLIP_STD).eval().requires_grad_(False)


def build_lgrad_transform(cfg: LGradEncoder) -> _Normalised:
    """The fixed transformation model f: (B, 3, S, S) in [0, 1] -> (B, K) outputs."""
    torch.manual_seed(cfg.seed)
    if cfg.arch == "random_cnn":
        w = cfg.width
        net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * w, 1),
        )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif cfg.arch == "torchscript":
        assert cfg.weights is not None and cfg.sha256 is not None  # _arch_weights and _pinned
        verify_weights(cfg.weights, cfg.sha256)
        net = torch.jit.load(str(cfg.weights), map_location="cpu")
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # StyleGAN discriminators take [-1, 1]
    else:
        import torchvision

        assert cfg.weights is not None and cfg.sha256 is not None  # _arch_weights and _pinned
        verify_weights(cfg.weights, cfg.sha256)
        net = torchvision.models.resnet50(weights=None)
        net.load_state_dict(torch.load(cfg.weights, map_location="cpu", weights_only=True))
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return _Normalised(net, cfg.image_size, mean, std).eval().requires_grad_(False)


def gradient_maps(f: _Normalised, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (B, 3, s, s) gradients ``d sum(f(x)) / d x`` at f's input size s,
    min-max scaled to [0, 1] per image (LGrad's images of gradients); a constant map becomes 0."""
    x = (
        F.interpolate(x, size=(f.size, f.size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > f.size)
        if x.shape[-1] != f.size
        else x
    )
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    lo = grad.amin(dim=(1, 2, 3), keepdim=True)
    span = grad.amax(dim=(1, 2, 3), keepdim=True) - lo
    return torch.where(span > 0, (grad - lo) / span.clamp_min(1e-30), torch.zeros_like(grad))


def build_encoder(name: str, cfg: FeaturesConfig):
    """``images (B, 3, S, S) float [0, 1] -> features`` for encoder ``name`` (no grad kept)."""
    if name == "clip":
        tower = build_clip(cfg.encoders.clip)

        def encode(x):
            with torch.no_grad():
                return tower(x)
    else:
        f = build_lgrad_transform(cfg.encoders.lgrad)

        def encode(x):
            return gradient_maps(f, x).detach()

    return encode


# ------------------------------------------------------------------------------------------------
# Cache


def build_split(split_dir: Path, out_dir: Path, encode, batch_size: int, shard_size: int, meta: dict) -> dict:
    """Encode one variant split in manifest order; write shards, ``ids.parquet``, ``index.json``."""
    df = read_split_manifest(split_dir)
    ids = df["id"].tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"{split_dir / 'manifest.parquet'}: duplicate ids")
    for old in sorted(out_dir.glob(f"{SHARD_PREFIX}-*.npy")):  # a smaller rebuild must not leave stale shards
        old.unlink()
    writer = ShardWriter(out_dir, prefix=SHARD_PREFIX, shard_size=shard_size)
    shape = None
    for _, images in iter_image_batches(split_dir, df, batch_size, str(split_dir)):
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)
        feats = encode(x).float().numpy()
        if not np.isfinite(feats).all() or np.abs(feats).max() > np.finfo(np.float16).max:
            raise ValueError(f"{split_dir}: encoder output is not finite in float16")
        shape = list(feats.shape[1:])
        for row in feats.astype(np.float16):
            writer.add(row)
    shards = writer.close()
    import pandas as pd  # here, not at the top: training imports this module and never needs pandas

    write_table(pd.DataFrame({"id": ids}), out_dir / IDS_FILE, IDS_SCHEMA)
    index = {
        "count": len(ids),
        "shape": shape,
        "dtype": "float16",
        "shard_size": shard_size,
        "shards": shards,
        "ids_sha256": ids_digest(ids),
        **meta,
    }
    write_json(out_dir / INDEX_FILE, index)
    return index


def build_cache(name: str, cfg: FeaturesConfig) -> dict:
    """Run ``features.caches.<name>`` over every split; returns ``{split: index}``."""
    from dfpipe.core.config import ConfigError, to_dict

    if name not in cfg.caches:
        raise ConfigError(f"features.caches: no entry {name!r} (have {sorted(cfg.caches)})")
    entry = cfg.caches[name]
    enc_cfg = getattr(cfg.encoders, entry.encoder)
    encode = build_encoder(entry.encoder, cfg)
    meta = {"encoder": entry.encoder, "variant": entry.variant, "random": enc_cfg.random, "config": to_dict(enc_cfg)}
    out = cache_dir(cfg.out_dir, entry.encoder, entry.variant)
    return {
        split: build_split(
            cfg.variants_dir / entry.variant / split, out / split, encode, cfg.batch_size, cfg.shard_size, meta
        )
        for split in SPLITS
    }


class FeatureCache:
    """Read access to one cached split: ``array(i)`` is the feature of manifest row ``i``."""

    def __init__(self, split_dir: str | Path):
        self.root = Path(split_dir)
        self.index = read_json(self.root / INDEX_FILE)
        self._shards: dict[str, np.ndarray] = {}
        size = self.index["shard_size"]
        self._names = self.index["shards"]
        self._size = size

    @property
    def random(self) -> bool:
        return bool(self.index["random"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.index["shape"])

    def check_aligned(self, ids) -> None:
        """The cache must hold exactly these ids in this order (else: rerun features@)."""
        if self.index["count"] != len(ids) or self.index["ids_sha256"] != ids_digest(list(ids)):
            raise ValueError(f"{self.root}: cached ids differ from the variant manifest; rerun features@ for it")

    def get(self, i: int) -> np.ndarray:
        name = self._names[i // self._size]
        if name not in self._shards:
            self._shards[name] = np.load(self.root / name, mmap_mode="r")
        return self._shards[name][i % self._size]


def read_ids(split_dir: str | Path) -> list[str]:
    return read_table(Path(split_dir) / IDS_FILE, IDS_SCHEMA)["id"].tolist()
