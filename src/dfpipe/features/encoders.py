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
  ``model.encode_image`` (768-d), as Ojha et al. use. OpenAI's CLIP was trained with QuickGELU
  (``x * sigmoid(1.702 x)``); open_clip sets it for its ``openai`` tag but not for a file path, so
  ``openai: true`` builds the tower with QuickGELU. Weights load from a state dict (``torch.load``
  with ``weights_only``) or from OpenAI's TorchScript archive as released (``ViT-L-14.pt``, pinned
  by the sha256 in OpenAI's download URL), whose tensors are read once per stage by
  ``torch.jit.load`` (a pickle-free reader: ``weights_only`` cannot open such archives);
  ``python -m dfpipe.features.encoders convert <archive> <out.pt>`` writes them as a state dict and
  prints its sha256 for sites that pin that instead. Without weights (offline CI, the demo) a small
  ViT of the same open_clip class is initialised from ``seed``: every code path runs, and the tables
  label such rows "random features (demo)".
- ``lgrad``: ``d sum(f(x)) / d x`` for a fixed transformation model ``f`` (Tan et al. CVPR 2023 use
  a pretrained StyleGAN discriminator: ``arch: torchscript`` = such a model exported by the user with
  ``torch.jit.trace``/``script``, fed [-1, 1] images as StyleGAN's discriminators expect;
  ``arch: resnet50`` = an ImageNet ResNet-50 from ``weights``, its 1000 logits summed;
  ``arch: random_cnn`` = a seeded random small CNN, the demo; ``arch: stylegan_discriminator`` = the
  paper's choice, a TorchScript export of a StyleGAN discriminator at ``image_size`` 256), min-max
  scaled to [0, 1] per image as the authors store gradients as 8-bit images. StyleGAN's
  discriminator has a minibatch-standard-deviation layer, so an image's score (and gradient)
  depends on the other images of its batch; the authors run one image at a time, and
  ``per_image: true`` does the same (required for ``stylegan_discriminator``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from dfpipe.core.config import Config, PlainName, RepoPath, SafeName
from dfpipe.core.io import read_json, sha256_file, write_bytes, write_json
from dfpipe.core.manifest import SPLITS, read_table, write_table
from dfpipe.core.seeding import mix_seed
from dfpipe.features.augment import augmented_view
from dfpipe.features.batches import ids_digest, iter_image_batches, open_cache
from dfpipe.features.landmarks import LandmarkEncoder, build_landmark_cache

#: Model inputs served from a feature cache instead of image shards (``ModelConfig.input``).
FEATURE_INPUTS = ("clip", "lgrad")
INDEX_FILE = "index.json"
VIEWS_DIR = "views"  # <cache>/train/views/<k>/: augmented view k of the training split
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
    ``image_size``: the encoder's input side. ``train_views``: augmented views cached per training
    image besides the clean one (:func:`dfpipe.features.augment.augmented_view`, view ``k`` of
    batch ``b`` drawn from ``mix_seed(seed, k, b)``); training reads view ``epoch % train_views``."""

    weights: RepoPath | None
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    seed: int
    image_size: int = Field(ge=8)
    # left out of the dumped config (index.json) when 0, so caches written before it keep their bytes
    train_views: int = Field(0, ge=0, le=1000, exclude_if=lambda v: v == 0)

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
    architecture is ``arch`` at its own ``image_size`` (224 for ViT-L-14). ``openai``: the weights
    are OpenAI's CLIP release (QuickGELU). ``center_crop``: the encoder sees the central window of a
    larger stored crop rather than the whole crop resized.
    """

    arch: str
    width: int = Field(ge=8)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    patch_size: int = Field(ge=1)
    embed_dim: int = Field(ge=1)
    # OpenAI's CLIP weights (QuickGELU). Left out of the dumped config (index.json) when false, so
    # caches written before the key existed keep their bytes.
    openai: bool = Field(False, exclude_if=lambda v: v is False)
    # the central image_size window of a larger stored crop instead of a resize (Ojha et al. test on
    # the centre crop 224 of 256 px images); left out of the dumped config when false
    center_crop: bool = Field(False, exclude_if=lambda v: v is False)

    @property
    def quick_gelu(self) -> bool:
        """QuickGELU whenever OpenAI's weights are loaded (the activation they were trained with)."""
        return self.openai and not self.random


class LGradEncoder(_PinnedEncoder):
    """``features.encoders.lgrad``: the transformation model whose input gradients are cached.

    ``arch``: ``random_cnn`` (seeded, ``width`` channels; the demo), ``resnet50`` (torchvision
    ImageNet state_dict at ``weights``) or ``torchscript`` (a TorchScript module at ``weights``,
    e.g. the paper's StyleGAN discriminator exported at the user's site: (B, 3, S, S) in [-1, 1] ->
    (B, K) scores); ``weights`` always checked against ``sha256``. ``image_size``: side of the
    gradient maps (the model input).
    """

    arch: Literal["random_cnn", "resnet50", "torchscript", "stylegan_discriminator"]
    width: int = Field(ge=1)
    # gradients one image at a time (no batch coupling); left out of the dumped config when false
    per_image: bool = Field(False, exclude_if=lambda v: v is False)

    @model_validator(mode="after")
    def _arch_weights(self) -> LGradEncoder:
        if (self.arch != "random_cnn") != (self.weights is not None):
            raise ValueError(
                f"arch {self.arch} needs weights + sha256"
                if self.arch != "random_cnn"
                else "arch random_cnn takes no weights"
            )
        if self.arch == "stylegan_discriminator" and not self.per_image:
            raise ValueError(
                "arch stylegan_discriminator needs per_image: true (its minibatch-std layer couples "
                "the images of a batch; Tan et al. compute each image's gradient alone)"
            )
        return self


class Encoders(Config):
    clip: ClipEncoder
    lgrad: LGradEncoder
    # MediaPipe's face landmarks (dfpipe.features.landmarks): read by two_stream runs beside the crops;
    # absent: no landmark cache can be built
    landmarks: LandmarkEncoder | None = None


class CacheEntry(Config):
    """``features.caches.<name>``: one ``features@<name>`` stage = one encoder over one variant."""

    encoder: Literal["clip", "lgrad", "landmarks"]
    variant: PlainName


class FeaturesConfig(Config):
    out_dir: RepoPath
    threads: int = Field(ge=1)  # torch CPU threads, fixed (gradients reduce per thread: dfpipe.core.numerics)
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
        unpinned = " (a placeholder: pin this file's digest in params.yaml)" if set(sha256) == {"0"} else ""
        raise ValueError(f"{path}: sha256 {digest} does not match the pinned {sha256}{unpinned}")


class _Normalised(nn.Module):
    """(B, 3, S, S) in [0, 1] -> resized to ``size`` (bilinear, antialiased), or with ``crop`` its
    central ``size`` window when S >= size -> (x - mean) / std -> net."""

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor

    def __init__(self, net: nn.Module, size: int, mean, std, crop: bool = False):
        super().__init__()
        self.net, self.size, self.crop = net, size, crop
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop and x.shape[-1] > self.size:
            top = int(round((x.shape[-1] - self.size) / 2.0))  # torchvision's CenterCrop offset
            x = x[..., top : top + self.size, top : top + self.size]
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
        # built without weights, then loaded by load_clip_state_dict: open_clip's own loader would
        # torch.load a TorchScript archive and chooses QuickGELU only for its "openai" tag
        model = open_clip.create_model(cfg.arch, pretrained=None, force_quick_gelu=cfg.quick_gelu)
        visual = {
            k[len("visual.") :]: v for k, v in load_clip_state_dict(cfg.weights).items() if k.startswith("visual.")
        }
        model.visual.load_state_dict(visual, strict=True)
        tower, size = (
            model.visual,
            model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size,
        )
    return _Normalised(tower, size, CLIP_MEAN, CLIP_STD, cfg.center_crop).eval().requires_grad_(False)


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with a ``code/`` folder or ``constants.pkl``)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())


#: Entries of OpenAI's CLIP state dict that are model hyper-parameters, not weights.
OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")


def load_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A CLIP checkpoint's tensors by open_clip / OpenAI name: a state dict (optionally under
    ``state_dict``, ``module.`` prefixes dropped) read with ``weights_only``, or OpenAI's TorchScript
    archive as released, read with ``torch.jit.load`` (its parameters and buffers)."""
    if is_torchscript(path):
        state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a state dict or TorchScript archive ({type(state).__name__})")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in OPENAI_META_KEYS}


def convert_torchscript(src: str | Path, dst: str | Path) -> str:
    """Write the tensors of TorchScript archive ``src`` as a plain state dict at ``dst`` (loadable
    with ``weights_only``); returns its sha256, the pin for ``features.encoders.<encoder>.sha256``."""
    import io

    if not is_torchscript(src):
        raise ValueError(f"{src}: not a TorchScript archive")
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in load_clip_state_dict(src).items()}, buffer)
    write_bytes(dst, buffer.getvalue())
    return sha256_file(Path(dst))


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
    elif cfg.arch in ("torchscript", "stylegan_discriminator"):
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


def gradient_maps(f: _Normalised, x: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (B, 3, s, s) gradients ``d sum(f(x)) / d x`` at f's input size s,
    min-max scaled to [0, 1] per image (LGrad's images of gradients); a constant map becomes 0.

    ``per_image``: each image through ``f`` alone (batch of one), so a layer that mixes the batch
    (StyleGAN's minibatch standard deviation) cannot make one image's map depend on another's.
    """
    x = (
        F.interpolate(x, size=(f.size, f.size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > f.size)
        if x.shape[-1] != f.size
        else x
    )
    if per_image:
        grads = []
        for xi in x.detach().split(1):
            xi = xi.requires_grad_(True)
            grads.append(torch.autograd.grad(f(xi).sum(), xi)[0])
        grad = torch.cat(grads)
    else:
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
        per_image = cfg.encoders.lgrad.per_image

        def encode(x):
            return gradient_maps(f, x, per_image).detach()

    return encode


# ------------------------------------------------------------------------------------------------
# Cache


def build_split(
    split_dir: Path, out_dir: Path, encode, batch_size: int, shard_size: int, meta: dict, transform=None
) -> dict:
    """Encode one variant split in manifest order; write shards, ``ids.parquet``, ``index.json``.
    ``transform(images, batch_number)``: uint8 ``(B, 3, S, S)`` -> uint8 batch the encoder sees
    instead (an augmented view); None: the stored crops."""
    df, ids, writer = open_cache(split_dir, out_dir, SHARD_PREFIX, shard_size)
    shape = None
    for number, (_, images) in enumerate(iter_image_batches(split_dir, df, batch_size, str(split_dir))):
        u8 = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        x = (u8 if transform is None else transform(u8, number)).float().div_(255.0)
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
    if entry.encoder == "landmarks":
        if cfg.encoders.landmarks is None:
            raise ConfigError(f"features.caches.{name}: encoder landmarks needs features.encoders.landmarks")
        out = cache_dir(cfg.out_dir, entry.encoder, entry.variant)
        return build_landmark_cache(
            cfg.encoders.landmarks, cfg.variants_dir, entry.variant, out, cfg.batch_size, cfg.shard_size
        )
    enc_cfg = getattr(cfg.encoders, entry.encoder)
    encode = build_encoder(entry.encoder, cfg)
    meta = {"encoder": entry.encoder, "variant": entry.variant, "random": enc_cfg.random, "config": to_dict(enc_cfg)}
    out = cache_dir(cfg.out_dir, entry.encoder, entry.variant)
    written = {}
    for split in SPLITS:
        split_meta = {**meta, "views": enc_cfg.train_views} if split == "train" and enc_cfg.train_views else meta
        written[split] = build_split(
            cfg.variants_dir / entry.variant / split, out / split, encode, cfg.batch_size, cfg.shard_size, split_meta
        )
    views_dir = out / "train" / VIEWS_DIR
    for k in range(1, enc_cfg.train_views + 1):
        written[f"train/{VIEWS_DIR}/{k}"] = build_split(
            cfg.variants_dir / entry.variant / "train",
            views_dir / str(k),
            encode,
            cfg.batch_size,
            cfg.shard_size,
            {**meta, "view": k},
            view_transform(enc_cfg, k),
        )
    for stale in sorted(views_dir.glob("*")) if views_dir.is_dir() else []:  # fewer views than before
        if not stale.name.isdigit() or not 1 <= int(stale.name) <= enc_cfg.train_views:
            shutil.rmtree(stale)
    return written


def view_transform(enc_cfg: _PinnedEncoder, view: int):
    """Augmented view ``view`` (1-based) of each batch: :func:`~dfpipe.features.augment.augmented_view`
    at the encoder's input side, batch ``b`` drawn from ``mix_seed(seed, view, b)``."""

    def transform(images: torch.Tensor, number: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(mix_seed(enc_cfg.seed, view, number))
        return augmented_view(images, enc_cfg.image_size, generator)

    return transform


class FeatureCache:
    """Read access to one cached split: ``array(i)`` is the feature of manifest row ``i``."""

    def __init__(self, split_dir: str | Path):
        self.root = Path(split_dir)
        self.index = read_json(self.root / INDEX_FILE)
        self.views = int(self.index.get("views", 0))  # augmented views cached under views/<k>/
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


def main(argv: list[str] | None = None) -> int:
    """``python -m dfpipe.features.encoders convert <archive.pt> <out.pt>``: a TorchScript archive
    (OpenAI's CLIP release, an exported discriminator) as a state dict; prints the sha256 to pin."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dfpipe.features.encoders", description=main.__doc__)
    parser.add_argument("command", choices=["convert"])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    print(f"{args.dst}: sha256 {convert_torchscript(args.src, args.dst)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
