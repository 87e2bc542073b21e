"""Log-magnitude frequency spectra of a variant: train-split statistics, plot means, the cache the Frank baseline reads.

The spectrum follows Frank et al. 2020, "Leveraging Frequency Analysis for Deep Fake Image
Recognition" (arXiv 2003.08685): a type-II orthonormal 2-D DCT of each colour channel of the crop
(pixel values 0-255), then ``log(|coefficient| + eps)``, then a per-coefficient standardisation with
mean and standard deviation computed on the training split only. A DFT variant (``log |fftshift(
fft2(x, norm="ortho"))| + eps``) exists so that "why DCT, not DFT?" can be answered by an experiment.

This module is the numpy/scipy (float64) reference, :func:`log_spectrum_np`, which computes the
statistics and the cache; models compute the same map on the device with
``dfpipe.models.spectrum.SpectrumTransform`` (the two must agree: ``tests/features/test_spectra.py``).

Layout. Spectra are channel-first ``(N, C, H, W)`` with ``C = 3`` (``per_channel``) or ``C = 1``
(``gray``); the DCT puts the DC term at ``[0, 0]``, the DFT (fft-shifted) at ``[H//2, W//2]``.
Only variants listed in ``spectra.cache`` are cached (the Frank et al. baseline reads them; a cache
nothing reads is not written). The cache of a variant split is
``data/spectra/<name>/<split>/spectra-NNNNN.npy`` (float16, row
``i`` of the split's manifest is global row ``i`` of the concatenated shards) plus ``index.json``
(row count, shard names, hash of the manifest ids, transform settings). The cache holds the
configured ``kind`` only, but the train-split statistics are computed for both transforms (same
colour and eps): ``data/spectra/<name>/stats_dct.npz`` and ``stats_dft.npz`` (``mean``/``std``
float32 ``(C, H, W)``, ``count``, settings; :func:`stats_path`), so a model with either input kind
finds the statistics of its transform; ``stats.npz`` is the copy for the cached kind (it
normalises the cache).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

import numpy as np
from pydantic import Field, model_validator

from dfpipe.core.config import Config, RepoPath, SafeName, safe_name
from dfpipe.core.io import read_json, write_json
from dfpipe.core.manifest import LABELS, SPLITS
from dfpipe.core.parallel import thread_map
from dfpipe.core.shards import ShardReader
from dfpipe.features.batches import ids_digest, iter_image_batches, read_split_manifest
from dfpipe.features.moments import STD_FLOOR, RunningMoments, add_items, save_stats

if TYPE_CHECKING:  # pandas and scipy load only in the stages that build the cache, not in training
    import pandas as pd

Kind = Literal["dct", "dft"]
Color = Literal["per_channel", "gray"]

#: ITU-R BT.601 luma weights; the same constant as ``dfpipe.models.spectrum.GRAY_WEIGHTS`` (the model
#: package sits above this one and owns the on-device transform; tests check the two agree).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
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
    variants_dir: RepoPath  # input: <variants_dir>/<name>/<split>/manifest.parquet
    out_dir: RepoPath  # output: <out_dir>/<name>/{<split>/spectra-NNNNN.npy, stats*.npz}
    metrics_dir: RepoPath  # output: <metrics_dir>/<name>.json
    plots_dir: RepoPath  # output: <plots_dir>/<name>/*.png, profiles/*.csv
    cache: tuple[SafeName, ...]  # variants whose train/val/eval spectra are cached (the Frank baseline's)
    kind: Kind  # cached kind: "dct" (Frank et al.) or "dft" (stats: both kinds)
    color: Color  # "per_channel" (C=3) or "gray" (C=1, BT.601 luma)
    eps: float = Field(gt=0, allow_inf_nan=False)  # log(|c| + eps)
    batch_size: int = Field(ge=1)  # images per transform batch (also the statistics merge order)
    shard_size: int = Field(ge=1)  # spectra per cache shard
    workers: int = Field(1, ge=1)  # threads computing spectra and batch moments; bytes do not depend on it

    @model_validator(mode="after")
    def _unique(self) -> SpectraConfig:
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants has duplicates: {list(self.variants)}")
        unknown = sorted(set(self.cache) - set(self.variants))
        if unknown:
            raise ValueError(f"cache lists variants not in variants: {unknown}")
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


#: float64 bytes of images per transform call inside :func:`log_spectrum_np` (:func:`chunk_images`):
#: a chunk's planes stay in the core's cache through the transform, abs, log, float16 copy and
#: running sum. Measured best: one 224 px image (1.2 MB; 8 at a time were about 20 % slower) and 4
#: to 8 64 px images (one at a time pays the per-call overhead). Every image is transformed
#: independently, so the values do not depend on it.
CHUNK_BYTES = 800_000


def chunk_images(h: int, w: int) -> int:
    """Images of ``h x w`` per transform call: :data:`CHUNK_BYTES` of 3 float64 planes, at least 1."""
    return max(1, CHUNK_BYTES // (3 * h * w * 8))


#: Reused work arrays (:func:`_scratch`): a fresh 77 MB float64 batch per call costs more in page
#: faults and zeroing than its arithmetic. A thread borrows one set per batch (:func:`_scratch_set`)
#: and returns it, so the sets outlive the worker threads of one ``build_split`` call.
_FREE_SETS: list[dict[str, np.ndarray]] = []
_FREE_LOCK = threading.Lock()
_MAX_FREE_SETS = 4  # sets kept for the next borrower (one per concurrent worker)


@contextmanager
def _scratch_set() -> Iterator[dict[str, np.ndarray]]:
    """Borrow a set of work arrays for :func:`_scratch` (returned on exit)."""
    with _FREE_LOCK:
        bufs = _FREE_SETS.pop() if _FREE_SETS else {}
    try:
        yield bufs
    finally:
        with _FREE_LOCK:
            if len(_FREE_SETS) < _MAX_FREE_SETS:
                _FREE_SETS.append(bufs)


def _scratch(bufs: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """A C-contiguous work array of ``shape`` from the borrowed set ``bufs``, reused across calls
    (its contents are garbage; a smaller leading dimension is a prefix view of the last, larger one)."""
    arr = bufs.get(name)
    if arr is None or arr.dtype != dtype or arr.shape[1:] != shape[1:] or arr.shape[0] < shape[0]:
        arr = np.empty(shape, dtype)
        bufs[name] = arr
    return arr[: shape[0]]


def log_spectrum_np(images: np.ndarray, kind: Kind, color: Color, eps: float) -> np.ndarray:
    """Log-magnitude spectra of a batch of RGB crops, in float64.

    Args:
        images: ``(N, H, W, 3)`` uint8 RGB (values 0-255; any real dtype is accepted as 0-255).
    Returns:
        ``(N, C, H, W)`` float64, ``C = 3`` for ``per_channel`` and ``1`` for ``gray``.

    The DFT of a real image is Hermitian (``F[-u, -v] = conj(F[u, v])``): its magnitude is computed
    from the half spectrum (``rfft2``) and mirrored, at about a third of the full complex FFT's cost.
    """
    _check_kind_color(kind, color)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
    n, h, w, _ = images.shape
    out = np.empty((n, num_channels(color), h, w), dtype=np.float64)
    with _scratch_set() as bufs:
        _log_spectra(bufs, images, kind, color, eps, out)
    return out


def _log_spectra(
    bufs: dict[str, np.ndarray],
    images: np.ndarray,
    kind: Kind | Literal["dft_half"],
    color: Color,
    eps: float,
    out: np.ndarray,
    out16: np.ndarray | None = None,
    total: np.ndarray | None = None,
    half: np.ndarray | None = None,
    half_total: np.ndarray | None = None,
) -> None:
    """:func:`log_spectrum_np` into ``out``, :func:`chunk_images` images at a time, with extras made
    while a chunk is in the CPU cache (on the whole batch afterwards each is a pass over memory).

    ``dft_half``: the DFT's log-magnitude on the ``rfft2`` half plane only, ``(N, C, H, W // 2 + 1)``
    (every full-plane value is one of these: :func:`_dft_gather`). ``out16``: a float16 copy of
    ``out`` (numpy's rounding, the same bytes as ``out.astype(np.float16)``). ``half``: also the
    ``dft_half`` spectra, from the same float64 copy of the images. ``total`` / ``half_total``:
    the sum of the items of ``out`` / ``half``, ``item 0 + item 1 + ...`` in that order (the
    additions :meth:`RunningMoments.batch_moments` makes).
    """
    chunk = chunk_images(*images.shape[1:3])
    for i in range(0, len(images), chunk):
        x = _float_planes(bufs, images[i : i + chunk], color, chunk)
        if half is not None:  # before the DCT, which overwrites x
            part = half[i : i + chunk]
            _log_spectrum_into(x, "dft_half", eps, part)
            if half_total is not None:
                add_items(part, half_total, first=i == 0)
        part = out[i : i + chunk]
        _log_spectrum_into(x, kind, eps, part)
        if out16 is not None:
            out16[i : i + chunk] = part
        if total is not None:
            add_items(part, total, first=i == 0)


def _float_planes(bufs: dict[str, np.ndarray], images: np.ndarray, color: Color, chunk: int) -> np.ndarray:
    """``(n, C, H, W)`` float64 planes of ``(n, H, W, 3)`` crops: the channels, or BT.601 luma."""
    n, h, w = images.shape[:3]
    if color == "gray":
        x = np.moveaxis(np.asarray(images, dtype=np.float64), -1, 1)  # (n, 3, H, W)
        return np.tensordot(np.asarray(GRAY_WEIGHTS), x, axes=([0], [1]))[:, None]  # (n, 1, H, W)
    x = _scratch(bufs, "x", (chunk, 3, h, w))[:n]  # channel-first float64 in one contiguous copy
    x[...] = np.moveaxis(images, -1, 1)
    return x


def _log_spectrum_into(x: np.ndarray, kind: Kind | Literal["dft_half"], eps: float, out: np.ndarray) -> None:
    """``log(|transform(x)| + eps)`` of float64 planes ``x`` into ``out``; the DCT overwrites ``x``."""
    import scipy.fft

    h, w = x.shape[-2:]
    if kind == "dct":
        spec = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1), workers=1, overwrite_x=True)
        np.abs(spec, out=spec)
        spec += eps
        np.log(spec, out=out)
        return
    half = scipy.fft.rfft2(x, norm="ortho", axes=(-2, -1), workers=1)  # (n, C, H, W // 2 + 1)
    if kind == "dft_half":
        np.abs(half, out=out)
        out += eps
        np.log(out, out=out)
        return
    mag = np.abs(half)
    mag += eps
    np.log(mag, out=mag)
    flat = mag.reshape(mag.shape[:2] + (-1,))
    np.take(flat, _dft_gather(h, w), axis=-1, out=out.reshape(out.shape[:2] + (-1,)))


_GATHER: dict[tuple[int, int], np.ndarray] = {}


def _dft_gather(h: int, w: int) -> np.ndarray:
    """Flat indices into an ``(h, w // 2 + 1)`` half spectrum giving the fft-shifted full
    ``(h, w)`` one: ``full[u, v] = half[u, v]`` for ``v <= w // 2``, else ``|half[-u, -v]|``
    (Hermitian symmetry), then ``fftshift`` (DC to ``[h // 2, w // 2]``)."""
    idx = _GATHER.get((h, w))
    if idx is None:
        wh = w // 2 + 1
        u = (np.arange(h) - h // 2) % h  # fftshift: shifted row i holds frequency row u
        v = (np.arange(w) - w // 2) % w
        uu, vv = np.meshgrid(u, v, indexing="ij")
        mirror = vv >= wh
        uu = np.where(mirror, (-uu) % h, uu)
        vv = np.where(mirror, (-vv) % w, vv)
        idx = (uu * wh + vv).ravel()
        _GATHER[(h, w)] = idx
    return idx


# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# Cache building and reading
# ------------------------------------------------------------------------------------------------


class GroupMeans:
    """Per-group running sums of spectra ``(C, H, W)`` (float64) -> per-group means; for the plots."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def update(self, spec: np.ndarray, keys: np.ndarray) -> None:
        self.merge(self.batch_sums(spec, keys))

    @staticmethod
    def batch_sums(
        spec: np.ndarray, keys: np.ndarray, total: np.ndarray | None = None
    ) -> list[tuple[str, np.ndarray, int]]:
        """``(key, sum, count)`` of one batch per key, sorted (the part that can run in parallel;
        :meth:`merge` the results in batch order). ``total``: the batch's item sum in item order
        (:func:`_log_spectra`), the sum of a key that every row has.

        Each sum is ``spec[keys == key].sum(axis=0)``, computed row by row: the same additions in
        the same order (numpy reduces the leading axis of a contiguous array sequentially, as
        ``RunningMoments.batch_moments`` relies on; tests compare the bytes) without copying the
        selected rows (a 77 MB copy per key of a 64-image 224 px batch)."""
        out = []
        rowwise = spec.ndim >= 2 and spec[0].size >= 16 and spec.flags.c_contiguous
        for key in sorted(set(keys)):
            rows = np.flatnonzero(keys == key)
            if not rowwise:
                out.append((key, spec[rows].sum(axis=0), len(rows)))
                continue
            if total is not None and len(rows) == len(spec):
                acc = total.copy()
            else:
                acc = spec[rows[0]].copy()
                for row in rows[1:]:
                    acc += spec[row]
            out.append((key, acc, len(rows)))
        return out

    def merge(self, sums: list[tuple[str, np.ndarray, int]]) -> None:
        for key, total, count in sums:
            self.sums[key] = self.sums.get(key, 0.0) + total
            self.counts[key] = self.counts.get(key, 0) + count

    def result(self) -> dict[str, np.ndarray]:
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}


def plot_groups(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Group keys of each manifest row: ``class`` (real/fake/edited) and ``method`` (``<class>:<method>``)."""
    classes = np.asarray([LABELS[int(v)] for v in df["label"]], dtype=object)
    methods = np.asarray([f"{LABELS[int(lab)]}:{m}" for lab, m in zip(df["label"], df["method"])], dtype=object)
    return {"class": classes, "method": methods}


class _ShardStream:
    """The cache's shards written while the batches arrive, in row order.

    The split's row count is known before the first batch, so each shard's row count is too: its
    ``.npy`` header is written first and each batch's rows are appended as they come, so the
    file writes overlap the transforms of the next batches (a shard written at once when full
    stalls the pipeline for the whole write). The files are byte for byte what
    ``ShardWriter`` (``np.save`` of the stacked rows) writes: ``<prefix>-NNNNN.npy``, ``shard_size``
    rows each, the last one shorter (tests/features/test_spectra.py compares them). Each shard is
    written to a temporary name and renamed when complete; :meth:`abort` removes a partial one.
    """

    def __init__(self, out_dir: Path, count: int, shard_size: int):
        self.out_dir, self.count, self.shard_size = out_dir, count, shard_size
        self.names: list[str] = []
        self.rows = 0  # rows written so far
        self._fh: BinaryIO | None = None
        self._tmp: Path | None = None
        self._left = 0  # rows still to write into the open shard

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        if self.rows + len(rows) > self.count:
            raise ValueError(f"{self.out_dir}: more than the {self.count} rows announced")
        pos = 0
        while pos < len(rows):
            if self._fh is None:
                self._open(rows.shape[1:], rows.dtype)
            assert self._fh is not None  # opened just above
            k = min(self._left, len(rows) - pos)
            self._fh.write(rows[pos : pos + k].data)
            pos += k
            self.rows += k
            self._left -= k
            if self._left == 0:
                self._finish()

    def _open(self, item_shape: tuple[int, ...], dtype: np.dtype) -> None:
        name = f"{SHARD_PREFIX}-{len(self.names):05d}.npy"
        self._left = min(self.shard_size, self.count - self.rows)
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (self._left, *item_shape),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.out_dir)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        np.lib.format.write_array_header_1_0(self._fh, header)  # the header np.save writes
        self.names.append(name)

    def _finish(self) -> None:
        assert self._fh is not None and self._tmp is not None  # a shard is open
        self._fh.close()
        os.chmod(self._tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(self._tmp, self.out_dir / self.names[-1])
        self._fh = self._tmp = None

    def close(self) -> list[str]:
        """The names of all shards written; every announced row must have been written."""
        if self.rows != self.count or self._fh is not None:
            raise ValueError(f"{self.out_dir}: {self.rows} rows written, {self.count} announced")
        return list(self.names)

    def abort(self) -> None:
        """Remove the partial shard (the complete ones stay; a rerun replaces them)."""
        if self._fh is not None:
            self._fh.close()
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self._fh = self._tmp = None


def build_split(
    split_dir: Path,
    out_dir: Path | None,
    cfg: SpectraConfig,
    moments: dict[Kind, RunningMoments] | None = None,
    groups: dict[str, GroupMeans] | None = None,
    desc: str = "",
) -> dict:
    """One streaming pass over a variant split: optional cache, statistics and plot means.

    ``out_dir``: cache ``spectra-NNNNN.npy`` (float16 ``(n, C, S, S)``, ``cfg.kind``) and
    ``index.json`` there, or None (no cache). ``moments``: ``{kind: RunningMoments}``, each fed that
    transform (``cfg.color``, ``cfg.eps``) of the split's images in float64. ``groups``:
    ``{"class" | "method": GroupMeans}`` fed the ``cfg.kind`` spectra (:func:`plot_groups`).
    Returns ``{"count", "shape"}`` plus, when cached, the index fields.
    """
    moments = moments or {}
    groups = groups or {}
    for kind in moments:
        _check_kind_color(kind, cfg.color)
    df = read_split_manifest(split_dir)
    ids = df["id"].tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"{split_dir / 'manifest.parquet'}: duplicate ids")
    keys = plot_groups(df) if groups else {}
    writer = None
    if out_dir is not None:
        for old in sorted(out_dir.glob(f"{SHARD_PREFIX}-*.npy")):  # a smaller rebuild must not leave stale shards
            old.unlink()
        writer = _ShardStream(out_dir, len(ids), cfg.shard_size)
    shape = None

    # The DFT statistics of a DCT cache need no full plane: every full-plane value is one of the
    # rfft2 half plane's (_dft_gather), so the per-coefficient moments of the half plane, gathered,
    # are bit for bit those of the full plane (same values, same additions in the same order) at
    # about half the cost. Below 16 values per item batch_moments takes another code path: there
    # the full plane is used.
    half_moments: dict[Kind, RunningMoments] = {}

    def transform(batch: tuple[int, np.ndarray]):
        """Per batch, in a worker thread (scipy.fft and numpy release the GIL): the batch's start
        row, its log-spectra (float16 when cached), each statistics kind's batch moments (and
        whether they are of the half plane) and the plot groups' batch sums. The caller merges them
        in batch order: this thread does all the arithmetic, so that more workers scale."""
        start, images = batch
        n, h, w = images.shape[:3]
        c = num_channels(cfg.color)
        # No float16 range check: |log(|c| + eps)| <= 745 for any float64 |c| and eps > 0 (log of
        # the smallest subnormal is -744.4, of the largest double 709.8), far inside +-65504.
        with _scratch_set() as bufs:
            spec = _scratch(bufs, "spec", (n, c, h, w))
            half16 = np.empty(spec.shape, np.float16) if writer is not None else None
            on_half = "dft" in moments and cfg.kind != "dft" and c * h * (w // 2 + 1) >= 16
            half = _scratch(bufs, "half", (n, c, h, w // 2 + 1)) if on_half else None
            total = _scratch(bufs, "total", (1, c, h, w))[0] if cfg.kind in moments else None
            half_total = _scratch(bufs, "half_total", (1, c, h, w // 2 + 1))[0] if on_half else None
            # one pass over the images: the cached kind, its float16 rows and item sum, and the
            # DFT half plane and its item sum, from one float64 copy of each image
            _log_spectra(bufs, images, cfg.kind, cfg.color, cfg.eps, spec, half16, total, half, half_total)
            parts = {}
            for kind in moments:
                if kind == cfg.kind:
                    parts[kind] = (False, RunningMoments.batch_moments(spec, total))
                elif half is not None:  # on_half: kind == "dft", cfg.kind == "dct"
                    parts[kind] = (True, RunningMoments.batch_moments(half, half_total))
                else:
                    other = _scratch(bufs, "other", (n, c, h, w))
                    _log_spectra(bufs, images, kind, cfg.color, cfg.eps, other)
                    parts[kind] = (False, RunningMoments.batch_moments(other))
            sums = {name: GroupMeans.batch_sums(spec, keys[name][start : start + n], total) for name in groups}
        return spec.shape, half16, parts, sums

    batches = iter_image_batches(split_dir, df, cfg.batch_size, desc or str(split_dir))
    try:
        for spec_shape, half16, parts, sums in thread_map(transform, batches, cfg.workers):
            for kind, (on_half, part) in parts.items():
                # in batch order: the statistics do not depend on workers
                (half_moments.setdefault(kind, RunningMoments()) if on_half else moments[kind]).merge(*part)
            for name, group in groups.items():
                group.merge(sums[name])
            shape = list(spec_shape[1:])
            if writer is not None:
                writer.write(half16)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    for kind, acc in half_moments.items():
        assert shape is not None and acc.mean is not None and acc.m2 is not None  # fed at least one batch
        c, h, w = shape
        gather = _dft_gather(h, w)
        mean = np.take(acc.mean.reshape(c, -1), gather, axis=-1).reshape(c, h, w)
        m2 = np.take(acc.m2.reshape(c, -1), gather, axis=-1).reshape(c, h, w)
        moments[kind].merge(acc.count, mean, m2)
    index: dict = {"count": len(ids), "shape": shape}
    if writer is not None:
        assert out_dir is not None  # the writer exists only with an out_dir
        index.update(
            {
                "dtype": "float16",
                "shard_size": cfg.shard_size,
                "shards": writer.close(),
                "ids_sha256": ids_digest(ids),
                "kind": cfg.kind,
                "color": cfg.color,
                "eps": cfg.eps,
            }
        )
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
            raise ValueError(
                f"{self.root}: spectrum cache is stale; it does not match the manifest rows (rerun the spectra stage)"
            )

    def gather(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.count):
            raise IndexError(f"{self.root}: rows out of range [0, {self.count})")
        shards = [self.index["shards"][r] for r in rows // self.shard_size]
        return self._reader.gather(shards, rows % self.shard_size)


def build_variant(name: str, cfg: SpectraConfig) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Train-only statistics (both kinds) and plot means of variant ``name`` in one pass over its
    train split; the cache of every split when ``name`` is in ``cfg.cache``.

    Writes ``stats_<kind>.npz`` for every kind of :data:`KINDS` plus ``stats.npz`` (the cached
    kind's). Returns ``(metrics, {"class" | "method": {group: mean spectrum (C, H, W)}})``.
    """
    safe_name(f"spectra.variants.{name}", name)  # it names the output folders
    src = cfg.variants_dir / name
    dst = cfg.out_dir / name
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: variant not found (run variant@{name} first)")
    cached = name in cfg.cache
    moments = {kind: RunningMoments() for kind in KINDS}
    groups = {"class": GroupMeans(), "method": GroupMeans()}
    metrics: dict = {
        "variant": name,
        "kind": cfg.kind,
        "color": cfg.color,
        "eps": cfg.eps,
        "cached": cached,
        "splits": {},
    }
    total_bytes = total_rows = 0
    for split in SPLITS if cached else ("train",):
        train = split == "train"
        index = build_split(
            src / split,
            dst / split if cached else None,
            cfg,
            moments if train else None,
            groups if train else None,
            desc=f"spectra {name}/{split}",
        )
        nbytes = sum((dst / split / s).stat().st_size for s in index.get("shards", []))
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
    if cached:
        metrics["bytes_per_image"] = total_bytes / max(total_rows, 1)
    c, h, w = metrics["shape"]
    metrics["raw_bytes_per_image"] = h * w * 3  # the uint8 RGB crop the spectrum replaces
    metrics["train_count"] = count
    metrics["std_floored_coefficients"] = floored[cfg.kind]
    metrics["std_floored_coefficients_by_kind"] = floored
    return metrics, {k: g.result() for k, g in groups.items()}
