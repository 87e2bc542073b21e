"""Log-magnitude frequency spectra of face crops: cache, normalisation statistics, plots, torch module.

The spectrum follows Frank et al. 2020, "Leveraging Frequency Analysis for Deep Fake Image
Recognition" (arXiv 2003.08685): a type-II orthonormal 2-D DCT of each colour channel of the crop
(pixel values 0-255), then ``log(|coefficient| + eps)``, then a per-coefficient standardisation with
mean and standard deviation computed on the training split only. A DFT variant (``log |fftshift(
fft2(x, norm="ortho"))| + eps``) exists so that "why DCT, not DFT?" can be answered by an experiment.

Two implementations of the same map, which must agree (``tests/test_spectra.py``):

- :func:`log_spectrum_np` (numpy/scipy, float64): builds the float16 cache on disk.
- :class:`SpectrumTransform` (torch, float32 even under autocast): computes the spectrum on the
  device inside a model; the DCT is the matrix product ``D @ X @ D.T`` with the cached orthonormal
  DCT-II matrix of :func:`dct_matrix` (F3Net's FAD/LFS branches reuse it).

Layout. Spectra are channel-first ``(N, C, H, W)`` with ``C = 3`` (``per_channel``) or ``C = 1``
(``gray``); the DCT puts the DC term at ``[0, 0]``, the DFT (fft-shifted) at ``[H//2, W//2]``.
The cache of a variant split is ``data/spectra/<name>/<split>/spectra-NNNNN.npy`` (float16, row
``i`` of the split's manifest is global row ``i`` of the concatenated shards) plus ``index.json``
(row count, shard names, hash of the manifest ids, transform settings). The cache holds the
configured ``kind`` only, but the train-split statistics are computed for both transforms (same
colour and eps): ``data/spectra/<name>/stats_dct.npz`` and ``stats_dft.npz`` (``mean``/``std``
float32 ``(C, H, W)``, ``count``, settings; :func:`stats_path`), so a model with either input kind
finds the statistics of its transform; ``stats.npz`` is the copy for the cached kind (it
normalises the cache).
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import scipy.fft
import torch
from torch import nn
from pydantic import Field, model_validator
from tqdm import tqdm

from dfpipe.core.config import Config, RepoPath, SafeName
from dfpipe.core.figures import pyplot, save_figure
from dfpipe.core.io import atomic_path, read_json, sha256_bytes, write_json
from dfpipe.core.manifest import LABELS, SPLITS, VARIANT_SCHEMA, read_table
from dfpipe.core.shards import ShardReader, ShardWriter

Kind = Literal["dct", "dft"]
Color = Literal["per_channel", "gray"]

#: ITU-R BT.601 luma weights (the ones PIL's ``convert("L")`` and OpenCV's ``COLOR_RGB2GRAY`` use).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
#: Floor on the per-coefficient standard deviation, so a coefficient that is constant over the
#: training split (e.g. exactly-zero DFT bins of a flat demo background) normalises to 0, not inf.
STD_FLOOR = 1e-6
STATS_FILE = "stats.npz"  # statistics of the cached kind (normalise the cache with these)
#: Transforms whose train-split statistics every variant gets: ``stats_<kind>.npz`` (stats_path).
KINDS: tuple[Kind, ...] = ("dct", "dft")
INDEX_FILE = "index.json"
SHARD_PREFIX = "spectra"


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


class SpectraConfig(Config):
    """The ``spectra:`` section of ``params.yaml``."""

    variants: tuple[SafeName, ...] = Field(min_length=1)  # variant names (foreach keys of ``spectra@<name>``)
    variants_dir: RepoPath      # input: <variants_dir>/<name>/<split>/manifest.parquet
    out_dir: RepoPath           # output: <out_dir>/<name>/{<split>/spectra-NNNNN.npy, stats*.npz}
    metrics_dir: RepoPath       # output: <metrics_dir>/<name>.json
    plots_dir: RepoPath         # output: <plots_dir>/<name>/*.png, profiles/*.csv
    kind: Kind                  # cached kind: "dct" (Frank et al.) or "dft" (stats: both kinds)
    color: Color                # "per_channel" (C=3) or "gray" (C=1, BT.601 luma)
    eps: float = Field(gt=0, allow_inf_nan=False)  # log(|c| + eps)
    batch_size: int = Field(ge=1)   # images per transform batch (also the statistics merge order)
    shard_size: int = Field(ge=1)   # spectra per cache shard

    @model_validator(mode="after")
    def _unique(self) -> "SpectraConfig":
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants has duplicates: {list(self.variants)}")
        return self


def stats_path(variant_dir: str | Path, kind: str) -> Path:
    """``<variant_dir>/stats_<kind>.npz``: train-split statistics of one transform (any cached kind)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return Path(variant_dir) / f"stats_{kind}.npz"


def num_channels(color: Color) -> int:
    return 3 if color == "per_channel" else 1


def _check_kind_color(kind: str, color: str) -> None:
    if kind not in ("dct", "dft"):
        raise ValueError(f"kind must be 'dct' or 'dft', got {kind!r}")
    if color not in ("per_channel", "gray"):
        raise ValueError(f"color must be 'per_channel' or 'gray', got {color!r}")


# ------------------------------------------------------------------------------------------------
# Reference implementation (numpy / scipy, float64): builds the cache
# ------------------------------------------------------------------------------------------------


def log_spectrum_np(images: np.ndarray, kind: Kind, color: Color, eps: float) -> np.ndarray:
    """Log-magnitude spectra of a batch of RGB crops, in float64.

    Args:
        images: ``(N, H, W, 3)`` uint8 RGB (values 0-255; any real dtype is accepted as 0-255).
    Returns:
        ``(N, C, H, W)`` float64, ``C = 3`` for ``per_channel`` and ``1`` for ``gray``.
    """
    _check_kind_color(kind, color)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
    x = np.moveaxis(np.asarray(images, dtype=np.float64), -1, 1)  # (N, 3, H, W)
    if color == "gray":
        x = np.tensordot(np.asarray(GRAY_WEIGHTS), x, axes=([0], [1]))[:, None]  # (N, 1, H, W)
    if kind == "dct":
        spec = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1), workers=1)
    else:
        spec = np.fft.fftshift(np.fft.fft2(x, norm="ortho", axes=(-2, -1)), axes=(-2, -1))
    return np.log(np.abs(spec) + eps)


# ------------------------------------------------------------------------------------------------
# Torch implementation: on the device, inside models
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _dct_matrix_np(n: int) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2.0 * i + 1.0) * k / (2.0 * n))
    d[0, :] = np.sqrt(1.0 / n)
    d.setflags(write=False)
    return d


_DCT_CACHE: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def dct_matrix(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` of size ``(n, n)``: ``D @ x`` = ``scipy.fft.dct(x, norm="ortho")``.

    ``D[k, i] = s_k cos(pi (2i + 1) k / (2n))`` with ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)``;
    ``D @ D.T = I``, so the inverse 2-D DCT of ``Y`` is ``D.T @ Y @ D``. Built in float64 and cast,
    cached per ``(n, device, dtype)``; treat the returned tensor as read-only.
    """
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    device = torch.device(device if device is not None else "cpu")
    key = (int(n), str(device), dtype)
    mat = _DCT_CACHE.get(key)
    if mat is None:
        mat = torch.from_numpy(_dct_matrix_np(int(n)).copy()).to(device=device, dtype=dtype)
        _DCT_CACHE[key] = mat
    return mat


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions, ``D_H @ x @ D_W.T``, in ``x``'s dtype."""
    dh = dct_matrix(x.shape[-2], x.device, x.dtype)
    dw = dct_matrix(x.shape[-1], x.device, x.dtype)
    return dh @ x @ dw.T


def idct2(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`: ``D_H.T @ y @ D_W``."""
    dh = dct_matrix(y.shape[-2], y.device, y.dtype)
    dw = dct_matrix(y.shape[-1], y.device, y.dtype)
    return dh.T @ y @ dw


@contextlib.contextmanager
def ieee_fp32_matmul():
    """Run float32 matmuls in full IEEE precision inside the block, whatever the global setting.

    A training script that calls ``torch.set_float32_matmul_precision("high")`` turns on TF32
    (10-bit mantissa) on CUDA; a DCT of 0-255 pixels in TF32 has absolute errors of ~1, which
    swamps every high-frequency coefficient of the log-spectrum. Not thread-safe (global flag).
    """
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class SpectrumTransform(nn.Module):
    """Normalised log-spectrum of a batch of images, on the images' device.

    Input ``(B, 3, H, W)`` float in [0, 1] (uint8 / 255); output ``(B, C, H, W)`` float32,
    ``C = 3`` (``per_channel``) or ``1`` (``gray``): ``(log(|T(255 x)| + eps) - mean) / std`` with
    ``T`` the orthonormal 2-D DCT-II (``kind="dct"``) or the fft-shifted orthonormal DFT
    (``kind="dft"``). Without ``mean``/``std`` the log-spectrum is returned unnormalised.
    ``mean``/``std`` are ``(C, H, W)`` (from :func:`load_stats`) and are saved in the state dict.
    The math runs in float32 with autocast disabled: the log of small coefficients is ill-
    conditioned and half precision would destroy the high frequencies this input exists for.
    """

    def __init__(
        self,
        kind: Kind = "dct",
        color: Color = "per_channel",
        eps: float = 1e-12,
        mean: torch.Tensor | np.ndarray | None = None,
        std: torch.Tensor | np.ndarray | None = None,
    ):
        super().__init__()
        _check_kind_color(kind, color)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.kind, self.color, self.eps = kind, color, float(eps)
        self.channels = num_channels(color)
        self.normalize = mean is not None
        if mean is not None:
            mean_t = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
            std_t = torch.as_tensor(np.asarray(std), dtype=torch.float32)
            if mean_t.ndim != 3 or mean_t.shape != std_t.shape or mean_t.shape[0] != self.channels:
                raise ValueError(
                    f"mean/std must both be ({self.channels}, H, W) for color={color!r}, "
                    f"got {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
                )
            self.register_buffer("mean", mean_t)
            self.register_buffer("std", std_t.clamp_min(STD_FLOOR))
        gray = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("gray_weights", gray, persistent=False)

    @classmethod
    def from_stats(cls, path: str | Path) -> "SpectrumTransform":
        """Build the transform that matches a cache: kind, color, eps, mean, std from ``stats.npz``."""
        meta = read_stats_meta(path)
        mean, std = load_stats(path)
        return cls(kind=meta["kind"], color=meta["color"], eps=meta["eps"], mean=mean, std=std)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, color={self.color}, eps={self.eps:g}, normalize={self.normalize}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SpectrumTransform expects (B, 3, H, W), got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False), ieee_fp32_matmul():
            x = x.float() * 255.0
            if self.color == "gray":
                x = (x * self.gray_weights).sum(dim=1, keepdim=True)
            if self.kind == "dct":
                spec = dct2(x).abs()
            else:
                spec = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1)).abs()
            out = torch.log(spec + self.eps)
            if self.normalize:
                if out.shape[1:] != self.mean.shape:
                    raise ValueError(
                        f"input spectrum {tuple(out.shape[1:])} does not match the statistics "
                        f"{tuple(self.mean.shape)}: resize inputs to the cached image size"
                    )
                out = (out - self.mean) / self.std
        return out


# ------------------------------------------------------------------------------------------------
# Streaming statistics
# ------------------------------------------------------------------------------------------------


class RunningMoments:
    """Per-element mean and (population) variance of a stream of batches, in float64.

    Merges each batch's exact mean and centred sum of squares with Chan et al.'s parallel update
    (Chan, Golub & LeVeque 1979), which, unlike sum / sum-of-squares, does not cancel
    catastrophically when the mean is large against the spread (log-spectra: DC ~ 9, spread ~ 0.1).
    The result depends on the batch boundaries only at rounding level; callers feed fixed batches.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, batch: np.ndarray) -> None:
        """Add ``batch`` of shape ``(n, *shape)``."""
        batch = np.asarray(batch, dtype=np.float64)
        n_b = batch.shape[0]
        if n_b == 0:
            return
        mean_b = batch.mean(axis=0)
        m2_b = ((batch - mean_b) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError(f"batch item shape {mean_b.shape} differs from {self.mean.shape}")
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / n)
        self.count = n

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` float64, population standard deviation (ddof = 0)."""
        if self.mean is None:
            raise ValueError("no data: statistics of an empty stream")
        return self.mean, np.sqrt(self.m2 / self.count)


def save_stats(path: str | Path, mean: np.ndarray, std: np.ndarray, count: int, kind: str, color: str, eps: float, variant: str) -> None:
    """Write ``stats.npz`` (uncompressed, fixed key order: byte-deterministic)."""
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                mean=np.asarray(mean, dtype=np.float32),
                std=np.asarray(std, dtype=np.float32),
                count=np.int64(count),
                kind=np.str_(kind),
                color=np.str_(color),
                eps=np.float64(eps),
                split=np.str_("train"),
                variant=np.str_(variant),
            )


def _open_stats(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: spectrum statistics not found (run the spectra stage)")
    return np.load(path, allow_pickle=False)


def load_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` float32 tensors ``(C, H, W)`` from ``stats.npz`` (train split only)."""
    with _open_stats(path) as z:
        mean, std = z["mean"], z["std"]
    if mean.shape != std.shape or mean.ndim != 3 or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError(f"{path}: malformed statistics (shapes {mean.shape}, {std.shape} or non-finite)")
    return torch.from_numpy(mean.copy()), torch.from_numpy(std.copy())


def read_stats_meta(path: str | Path) -> dict:
    """Transform settings and sample count saved beside the statistics."""
    with _open_stats(path) as z:
        return {
            "kind": str(z["kind"]),
            "color": str(z["color"]),
            "eps": float(z["eps"]),
            "count": int(z["count"]),
            "variant": str(z["variant"]),
            "split": str(z["split"]),
        }


# ------------------------------------------------------------------------------------------------
# Cache building and reading
# ------------------------------------------------------------------------------------------------


def ids_digest(ids: Sequence[str]) -> str:
    """Hash of the ordered manifest ids: ties a cache to the exact manifest rows it mirrors."""
    return sha256_bytes("\n".join(ids).encode("utf-8"))


def _read_split_manifest(split_dir: Path) -> pd.DataFrame:
    df = read_table(split_dir / "manifest.parquet", VARIANT_SCHEMA)
    bad = sorted(set(df["split"]) - {split_dir.name})
    if bad:
        raise ValueError(f"{split_dir / 'manifest.parquet'}: rows with split {bad} in the {split_dir.name} manifest")
    return df


def iter_image_batches(split_dir: Path, df: pd.DataFrame, batch_size: int, desc: str):
    """Yield ``(start, images)`` in manifest order; ``images`` ``(n, S, S, 3)`` uint8.

    A shard that is missing, not uint8 RGB, or too short is an error naming the file.
    """
    reader = ShardReader(split_dir)
    shape = None
    for start in tqdm(range(0, len(df), batch_size), desc=desc, unit="batch", leave=False):
        rows = df.iloc[start : start + batch_size]
        for name in sorted(set(rows["shard"])):
            try:
                arr = reader.shard(name)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{split_dir / name}: cannot read image shard: {exc}") from exc
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(f"{split_dir / name}: expected uint8 (N, S, S, 3) RGB, got {arr.dtype} {arr.shape}")
            top = int(rows.loc[rows["shard"] == name, "offset"].max())
            if top >= arr.shape[0]:
                raise ValueError(f"{split_dir / name}: offset {top} out of range ({arr.shape[0]} items)")
            if shape is None:
                shape = arr.shape[1:]
            elif arr.shape[1:] != shape:
                raise ValueError(f"{split_dir / name}: crop shape {arr.shape[1:]} differs from {shape}")
        yield start, reader.gather(list(rows["shard"]), rows["offset"].to_numpy())


def build_split(split_dir: Path, out_dir: Path, cfg: SpectraConfig,
                moments: RunningMoments | dict[str, RunningMoments] | None = None, desc: str = "") -> dict:
    """Cache the spectra of one variant split; optionally feed float64 spectra to ``moments``.

    ``moments``: one ``RunningMoments`` (fed the cached ``cfg.kind``), or ``{kind: RunningMoments}``
    (each fed that transform of the same images, with ``cfg.color`` and ``cfg.eps``).
    Writes ``out_dir/spectra-NNNNN.npy`` (float16 ``(n, C, S, S)``) and ``out_dir/index.json``.
    Returns the index dict.
    """
    if isinstance(moments, RunningMoments):
        moments = {cfg.kind: moments}
    moments = moments or {}
    for kind in moments:
        _check_kind_color(kind, cfg.color)
    df = _read_split_manifest(split_dir)
    ids = df["id"].tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"{split_dir / 'manifest.parquet'}: duplicate ids")
    for old in sorted(out_dir.glob(f"{SHARD_PREFIX}-*.npy")):  # a smaller rebuild must not leave stale shards
        old.unlink()
    writer = ShardWriter(out_dir, prefix=SHARD_PREFIX, shard_size=cfg.shard_size)
    shape = None
    f16_max = float(np.finfo(np.float16).max)
    for start, images in iter_image_batches(split_dir, df, cfg.batch_size, desc or str(split_dir)):
        spec = log_spectrum_np(images, cfg.kind, cfg.color, cfg.eps)
        if np.abs(spec).max() > f16_max:  # cannot happen for eps >= 1e-30 and 8-bit input
            raise ValueError(f"{split_dir}: log-spectrum exceeds the float16 range (eps={cfg.eps})")
        for kind, acc in moments.items():
            acc.update(spec if kind == cfg.kind else log_spectrum_np(images, kind, cfg.color, cfg.eps))
        shape = list(spec.shape[1:])
        for row in spec.astype(np.float16):
            writer.add(row)
    shards = writer.close()
    index = {
        "count": len(ids),
        "shape": shape,
        "dtype": "float16",
        "shard_size": cfg.shard_size,
        "shards": shards,
        "ids_sha256": ids_digest(ids),
        "kind": cfg.kind,
        "color": cfg.color,
        "eps": cfg.eps,
    }
    write_json(out_dir / INDEX_FILE, index)
    return index


class SpectraCache:
    """Read access to one cached split: row ``i`` is the spectrum of manifest row ``i``.

    ``gather(rows)`` returns float16 ``(len(rows), C, S, S)`` unnormalised log-spectra; normalise
    with :func:`normalize` and the variant's ``stats.npz``.
    """

    def __init__(self, split_dir: str | Path):
        self.root = Path(split_dir)
        self.index = read_json(self.root / INDEX_FILE)
        self.count = int(self.index["count"])
        self.shard_size = int(self.index["shard_size"])
        self._reader = ShardReader(self.root)

    def __len__(self) -> int:
        return self.count

    def check_aligned(self, manifest: pd.DataFrame) -> None:
        """Raise if the cache was not built from exactly these manifest rows, in this order."""
        if len(manifest) != self.count or ids_digest(manifest["id"].tolist()) != self.index["ids_sha256"]:
            raise ValueError(f"{self.root}: spectrum cache is stale; it does not match the manifest rows (rerun the spectra stage)")

    def gather(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.count):
            raise IndexError(f"{self.root}: rows out of range [0, {self.count})")
        shards = [self.index["shards"][r] for r in rows // self.shard_size]
        return self._reader.gather(shards, rows % self.shard_size)


def normalize(spectra: np.ndarray | torch.Tensor, mean, std):
    """``(spectra - mean) / max(std, STD_FLOOR)``; float32; numpy or torch like the input."""
    if isinstance(spectra, torch.Tensor):
        mean = torch.as_tensor(mean, dtype=torch.float32, device=spectra.device)
        std = torch.as_tensor(std, dtype=torch.float32, device=spectra.device).clamp_min(STD_FLOOR)
        return (spectra.float() - mean) / std
    return (np.asarray(spectra, np.float32) - np.asarray(mean, np.float32)) / np.maximum(np.asarray(std, np.float32), STD_FLOOR)


def build_variant(name: str, cfg: SpectraConfig) -> dict:
    """Cache all splits of variant ``name``, save train-only statistics; return the metrics dict.

    The cache holds ``cfg.kind``; statistics are saved for every kind of :data:`KINDS`
    (``stats_<kind>.npz``) plus ``stats.npz`` for the cached kind.
    """
    src = cfg.variants_dir / name
    dst = cfg.out_dir / name
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: variant not found (run variant@{name} first)")
    moments = {kind: RunningMoments() for kind in KINDS}
    metrics: dict = {"variant": name, "kind": cfg.kind, "color": cfg.color, "eps": cfg.eps, "splits": {}}
    total_bytes = total_rows = 0
    for split in SPLITS:
        index = build_split(src / split, dst / split, cfg, moments if split == "train" else None, desc=f"spectra {name}/{split}")
        nbytes = sum((dst / split / s).stat().st_size for s in index["shards"])
        metrics["splits"][split] = {"count": index["count"], "bytes": nbytes}
        total_bytes += nbytes
        total_rows += index["count"]
        if index["shape"] is not None:
            metrics["shape"] = index["shape"]
    count = moments[cfg.kind].count
    if count == 0:
        raise ValueError(f"{src / 'train'}: empty train split; normalisation statistics need training images")
    floored = {}
    for kind, acc in moments.items():
        k_mean, k_std = acc.result()
        save_stats(stats_path(dst, kind), k_mean, k_std, acc.count, kind, cfg.color, cfg.eps, name)
        floored[kind] = int((k_std < STD_FLOOR).sum())
        if kind == cfg.kind:
            mean, std = k_mean, k_std
    save_stats(dst / STATS_FILE, mean, std, count, cfg.kind, cfg.color, cfg.eps, name)
    metrics["bytes_per_image"] = total_bytes / max(total_rows, 1)
    c, h, w = metrics["shape"]
    metrics["raw_bytes_per_image"] = h * w * 3  # the uint8 RGB crop the spectrum replaces
    metrics["train_count"] = count
    metrics["std_floored_coefficients"] = floored[cfg.kind]
    metrics["std_floored_coefficients_by_kind"] = floored
    return metrics


# ------------------------------------------------------------------------------------------------
# Plots: mean spectra per class / generator, their difference to real, radial profiles
# ------------------------------------------------------------------------------------------------


def group_means(cache: SpectraCache, labels: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
    """Mean cached log-spectrum ``(C, H, W)`` float64 of each group; ``labels[i]`` names row ``i``."""
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(cache):
        raise ValueError(f"{cache.root}: {len(labels)} labels for {len(cache)} cached rows")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(cache), batch_size):
        rows = np.arange(start, min(start + batch_size, len(cache)))
        block = cache.gather(rows).astype(np.float64)
        for key in sorted(set(labels[rows])):
            sel = labels[rows] == key
            sums[key] = sums.get(key, 0.0) + block[sel].sum(axis=0)
            counts[key] = counts.get(key, 0) + int(sel.sum())
    return {k: sums[k] / counts[k] for k in sorted(sums)}


def radial_profile(spec: np.ndarray, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a ``(H, W)`` spectrum over rings of equal spatial frequency.

    Returns ``(frequency, value)``: frequency in cycles per pixel (0 to 0.5) so DCT and DFT
    profiles share an axis. DCT coefficient ``(u, v)`` has frequency ``sqrt(u^2 + v^2) / (2n)``
    (origin at ``[0, 0]``); fft-shifted DFT bin ``(u, v)`` has ``|(u, v) - centre| / n``. Rings are
    one coefficient wide; only complete rings (inside the inscribed quarter/full circle) are kept.
    """
    h, w = spec.shape
    n = min(h, w)
    u, v = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if kind == "dct":
        r, nbins, scale = np.hypot(u, v), n, 2.0 * n
    else:
        r, nbins, scale = np.hypot(u - h // 2, v - w // 2), n // 2 + 1, float(n)
    ring = np.rint(r).astype(np.int64).ravel()
    keep = ring < nbins
    sums = np.bincount(ring[keep], weights=spec.ravel()[keep], minlength=nbins)
    counts = np.bincount(ring[keep], minlength=nbins)
    return np.arange(nbins) / scale, sums / np.maximum(counts, 1)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "unnamed"


def plot_mean_spectra(means: dict[str, np.ndarray], real: np.ndarray, kind: Kind, title: str, path: Path) -> None:
    """Grid: top row each group's mean log-spectrum (channel mean), bottom row minus real's.

    The difference row uses one symmetric colour range across panels, so up-sampling peaks (the
    periodic bright points/lines of Frank et al. Fig. 2) compare between generators.
    """
    plt = pyplot()
    keys = list(means)
    imgs = {k: means[k].mean(axis=0) for k in keys}
    diffs = {k: imgs[k] - real.mean(axis=0) for k in keys}
    lo = min(float(np.percentile(i, 1)) for i in imgs.values())
    hi = max(float(np.percentile(i, 99.9)) for i in imgs.values())
    dmax = max(float(np.percentile(np.abs(d), 99.5)) for d in diffs.values()) or 1.0
    fig, axes = plt.subplots(2, len(keys), figsize=(2.6 * len(keys) + 1.0, 5.6), squeeze=False)
    for j, k in enumerate(keys):
        a = axes[0, j].imshow(imgs[k], cmap="viridis", vmin=lo, vmax=hi)
        axes[0, j].set_title(k, fontsize=9)
        b = axes[1, j].imshow(diffs[k], cmap="RdBu_r", vmin=-dmax, vmax=dmax)
        axes[1, j].set_title(f"{k} - real", fontsize=9)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(a, ax=axes[0, :].tolist(), shrink=0.8, label=f"mean log|{kind.upper()}|")
    fig.colorbar(b, ax=axes[1, :].tolist(), shrink=0.8, label="difference to real")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_profiles(profiles: dict[str, tuple[np.ndarray, np.ndarray]], real: np.ndarray, kind: Kind, title: str, path: Path) -> None:
    """Radial profiles (left) and their difference to real (right), one line per group."""
    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (freq, val) in profiles.items():
        ax0.plot(freq, val, label=k, lw=1.2)
        ax1.plot(freq, val - real, label=k, lw=1.2)
    for ax, ylab in ((ax0, f"mean log|{kind.upper()}|"), (ax1, "difference to real")):
        ax.set_xlabel("spatial frequency (cycles / pixel)")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
    ax1.axhline(0.0, color="k", lw=0.6)
    ax0.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_plots(name: str, cfg: SpectraConfig) -> list[Path]:
    """Plots of the cached train split of variant ``name`` under ``<plots_dir>/<name>/``.

    Writes ``class_mean.png`` (per class), ``method_mean.png`` (per source method: generator /
    manipulation / real source), ``profiles.png`` and ``profiles/<class|method>-<name>.csv``
    (``frequency, log_magnitude, diff_to_real``; real = mean over all label-0 rows).
    """
    split_dir = cfg.variants_dir / name / "train"
    df = _read_split_manifest(split_dir)
    cache = SpectraCache(cfg.out_dir / name / "train")
    cache.check_aligned(df)
    out = cfg.plots_dir / name
    if (df["label"] == 0).sum() == 0:
        raise ValueError(f"{split_dir}: no real (label 0) training images to compare against")
    class_names = [LABELS[int(v)] for v in df["label"]]
    by_class = group_means(cache, class_names, cfg.batch_size)
    by_class = {LABELS[i]: by_class[LABELS[i]] for i in sorted(LABELS) if LABELS[i] in by_class}
    methods = [f"{LABELS[int(l)]}:{m}" for l, m in zip(df["label"], df["method"])]
    by_method = group_means(cache, methods, cfg.batch_size)
    by_method = dict(sorted(by_method.items(), key=lambda kv: (list(LABELS.values()).index(kv[0].split(":")[0]), kv[0])))
    real = by_class["real"]
    written = []
    what = f"{cfg.kind.upper()} {cfg.color}, variant {name}, train split"
    for fname, means in (("class_mean.png", by_class), ("method_mean.png", by_method)):
        plot_mean_spectra(means, real, cfg.kind, f"Mean log-spectrum per {fname.split('_')[0]} ({what})", out / fname)
        written.append(out / fname)
    _, real_profile = radial_profile(real.mean(axis=0), cfg.kind)
    profiles = {}
    files: dict[str, str] = {}
    for old in sorted((out / "profiles").glob("*.csv")):  # groups that no longer exist
        old.unlink()
    for prefix, means in (("class", by_class), ("method", by_method)):
        for key, m in means.items():
            freq, val = radial_profile(m.mean(axis=0), cfg.kind)
            profiles[f"{prefix} {key}"] = (freq, val)
            fname = f"{prefix}-{_safe_name(key.replace(':', '-'))}.csv"
            if fname in files:
                raise ValueError(f"groups {files[fname]!r} and {key!r} map to the same file name {fname}")
            files[fname] = key
            table = pd.DataFrame({"frequency": freq, "log_magnitude": val, "diff_to_real": val - real_profile})
            with atomic_path(out / "profiles" / fname) as tmp:
                table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
            written.append(out / "profiles" / fname)
    plot_profiles({k: v for k, v in profiles.items() if k.startswith("method")}, real_profile, cfg.kind,
                  f"Radial log-spectrum profile per method ({what})", out / "profiles.png")
    written.append(out / "profiles.png")
    return written
