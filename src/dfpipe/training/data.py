"""Training data: a map-style dataset over a variant split's memory-mapped shards, and its loader.

The loader moves ``uint8`` bytes, not floats: conversion to ``float / 255``, the random horizontal
flip, resizing to the model's input and (for spectrum models) the DCT/DFT all happen on the device
(``dfpipe.training.engine``, the models). :class:`BatchLoader` reads a whole batch at once from the
memory-mapped shards (one sorted gather per shard) into a batch buffer instead of item by item:
about 3x the item path's rate (benchmarks/bench_loader.py). Batch buffers are reused: on the CPU
from a small pool (:class:`BufferPool`: a buffer is reused only once no batch refers to it, so a
fresh multi-MB allocation does not page-fault on every batch), and when CUDA is present they are
page-locked, from torch's caching host allocator (which reuses a block once its copies are done).

Randomness lives in one place, :class:`EpochSampler`: the order of epoch ``e`` is a pure function of
``(seed, e, rank, world_size)``. It does not depend on the number of workers, on how many epochs ran
in this process (resume) or on any global RNG, which is what makes "1 epoch + resume 1 epoch" equal
"2 epochs".
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dfpipe.core.manifest import SPLITS, VARIANT_SCHEMA, is_fake, read_table
from dfpipe.core.parallel import thread_map
from dfpipe.core.seeding import mix_seed
from dfpipe.core.shards import ShardReader


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """3-class labels (0 real, 1 fake, 2 edited) -> binary (0 real, 1 manipulated)."""
    return is_fake(np.asarray(labels)).astype(np.int64)


class BufferPool:
    """Reusable CPU batch buffers: :meth:`take` returns a held buffer that nothing else refers to,
    or a new one (kept while fewer than ``keep`` are held).

    A buffer is free when the pool's reference is its only one: a batch tensor made with
    ``torch.from_numpy`` (or any view of it) holds a reference, so a batch the caller still holds
    is never overwritten. Thread-safe (read-ahead threads take buffers concurrently).
    """

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._held: list[np.ndarray] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # a copy (a DataLoader worker process) starts empty
        return {"keep": self.keep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keep"])  # type: ignore[misc]

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> np.ndarray:
        dtype = np.dtype(dtype)
        with self._lock:
            for buf in self._held:
                # references: the list, ``buf``, getrefcount's argument; a fourth is a user's
                if buf.shape == shape and buf.dtype == dtype and sys.getrefcount(buf) <= 3:
                    return buf
            buf = np.empty(shape, dtype)
            if len(self._held) < self.keep:
                self._held.append(buf)
            else:  # all held buffers in use or of another shape: replace a free one
                for i, old in enumerate(self._held):
                    if sys.getrefcount(old) <= 3:
                        self._held[i] = buf
                        break
            return buf


class VariantDataset(Dataset):
    """Items of ``<variant_dir>/<split>/manifest.parquet`` (VARIANT_SCHEMA), in manifest (id) order.

    ``ds[i]`` is a dict:

    - ``image``: ``uint8`` tensor ``(3, S, S)`` RGB (channels first; still bytes),
    - ``label``: ``int64`` scalar tensor; 3-class, or 0/1 when ``num_classes == 2`` (1, 2 -> 1),
    - ``index``: ``int64`` scalar, the row number (``ds.ids[index]`` is the item's id),
    - with ``with_masks``: ``mask`` ``uint8`` ``(S, S)`` in {0, 1} (real: all 0, generated: all 1,
      edited: its manipulation mask) and ``mask_weight`` ``float32`` scalar, 0 for an edited item
      without a mask (it then contributes nothing to the segmentation loss), else 1.

    Raises ``ValueError`` naming the manifest for unknown labels, a wrong ``split`` column or a
    mask flag without a mask shard; missing files raise ``FileNotFoundError`` naming the path.
    """

    is_image: ClassVar[bool]  # True; assigned below FeatureDataset, which overrides it

    def __init__(self, variant_dir: str | Path, split: str, num_classes: int = 3, with_masks: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if num_classes not in (2, 3):
            raise ValueError(f"num_classes must be 2 or 3, got {num_classes}")
        self.root = Path(variant_dir) / split
        self.manifest_path = self.root / "manifest.parquet"
        df = read_table(self.manifest_path, VARIANT_SCHEMA)
        if len(df) == 0:
            raise ValueError(f"{self.manifest_path}: no items in split {split!r}")
        bad_split = sorted(set(df["split"]) - {split})
        if bad_split:
            raise ValueError(f"{self.manifest_path}: rows with split {bad_split} in the {split!r} manifest")
        labels = df["label"].to_numpy(np.int64)
        bad = sorted(set(labels.tolist()) - {0, 1, 2})
        if bad:
            raise ValueError(f"{self.manifest_path}: unknown labels {bad} (expected 0 real, 1 fake, 2 edited)")
        has_mask = df["has_mask"].to_numpy(bool)
        no_shard = has_mask & (df["mask_shard"].to_numpy(object) == "")
        if no_shard.any():
            raise ValueError(
                f"{self.manifest_path}: {int(no_shard.sum())} rows have has_mask but no "
                f"mask_shard (first: {df['id'].iloc[int(np.flatnonzero(no_shard)[0])]})"
            )
        self.split = split
        self.num_classes = num_classes
        self.with_masks = with_masks
        self.ids = df["id"].to_numpy(object)
        self.labels3 = labels
        self.labels = labels if num_classes == 3 else binary_labels(labels)
        self.methods = df["method"].to_numpy(object)
        self.has_mask = has_mask
        self._shard = df["shard"].to_numpy(object)
        self._offset = df["offset"].to_numpy(np.int64)
        self._mask_shard = df["mask_shard"].to_numpy(object)
        self._reader: ShardReader | None = None  # opened lazily: once per worker process
        self._buffers = BufferPool()  # CPU batch buffers of get_batch

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def reader(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self.root)
        return self._reader

    def class_counts(self) -> np.ndarray:
        """Items per (possibly binary) class, shape ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.reader.get(self._shard[i], self._offset[i])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"{self.root / self._shard[i]}[{self._offset[i]}]: expected uint8 (S,S,3), "
                f"got {image.dtype} {image.shape}"
            )
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }
        if self.with_masks:
            mask, weight = self._mask_target(i, image.shape[:2])
            item["mask"] = torch.from_numpy(mask)
            item["mask_weight"] = torch.tensor(weight, dtype=torch.float32)
        return item

    def _mask_target(self, i: int, size: tuple[int, int]) -> tuple[np.ndarray, float]:
        label = self.labels3[i]
        if label == 0:  # real: nothing manipulated
            return np.zeros(size, np.uint8), 1.0
        if label == 1:  # generated from nothing: every pixel is synthetic
            return np.ones(size, np.uint8), 1.0
        if not self.has_mask[i]:  # edited without a mask: unknown target, excluded by weight 0
            return np.zeros(size, np.uint8), 0.0
        mask = self.reader.get(self._mask_shard[i], self._offset[i])
        if mask.shape != size:
            raise ValueError(
                f"{self.root / self._mask_shard[i]}[{self._offset[i]}]: mask shape "
                f"{mask.shape} differs from image {size}"
            )
        return (mask > 127).astype(np.uint8), 1.0

    def get_batch(self, rows: np.ndarray, pin: bool = False) -> dict[str, torch.Tensor]:
        """Items ``rows`` (dataset indices, any order) as one batch, equal to collating ``ds[i]``.

        ``image`` is ``uint8`` ``(B, 3, S, S)`` as a channels-last view of the stored
        ``(B, S, S, 3)`` bytes (no transpose copy on the host; :func:`engine.to_device` makes it
        contiguous on the device). ``pin``: buffers in page-locked memory (fast ``non_blocking``
        copies to CUDA). Buffers are reused once no earlier batch refers to them
        (:class:`BufferPool`; pinned ones by torch's caching host allocator).
        """
        rows = np.asarray(rows, dtype=np.int64)
        first = self.reader.shard(self._shard[rows[0]])
        if first.ndim != 4 or first.shape[3] != 3 or first.dtype != np.uint8:
            raise ValueError(
                f"{self.root / self._shard[rows[0]]}: expected uint8 (N,S,S,3) shards, got {first.dtype} {first.shape}"
            )
        size = first.shape[1:3]
        images = self._buffer((len(rows),) + first.shape[1:], pin)
        self.reader.gather(self._shard[rows], self._offset[rows], out=images.numpy())
        batch = {
            "image": images.permute(0, 3, 1, 2),
            "label": torch.from_numpy(self.labels[rows]),
            "index": torch.from_numpy(rows.copy()),
        }
        if self.with_masks:
            masks = self._buffer((len(rows),) + size, pin)
            masks.zero_()
            weight = np.ones(len(rows), np.float32)
            label = self.labels3[rows]
            m = masks.numpy()
            m[label == 1] = 1  # generated from nothing: every pixel is synthetic
            edited = label == 2
            weight[edited & ~self.has_mask[rows]] = 0.0  # edited without a mask: excluded
            with_mask = np.flatnonzero(edited & self.has_mask[rows])
            if len(with_mask):
                got = self.reader.gather(self._mask_shard[rows[with_mask]], self._offset[rows[with_mask]])
                if got.shape[1:] != size:
                    raise ValueError(f"{self.root}: mask shape {got.shape[1:]} differs from image {size}")
                m[with_mask] = got > 127
            batch["mask"] = masks
            batch["mask_weight"] = torch.from_numpy(weight)
        return batch

    def _buffer(self, shape: tuple[int, ...], pin: bool) -> torch.Tensor:
        """An uninitialised ``uint8`` batch buffer: pinned (torch's caching host allocator) or from
        the CPU pool."""
        if pin:
            return torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        return torch.from_numpy(self._buffers.take(shape, np.uint8))


class EpochSampler(Sampler[int]):
    """Seeded index order for one epoch; shards it across DDP ranks.

    - ``shuffle=False``: ``0..n-1`` (evaluation).
    - ``shuffle=True``: a permutation; with ``weights`` (class balancing) ``n`` draws with
      replacement proportional to ``weights`` (what ``WeightedRandomSampler`` does).
    - ``world_size > 1``: the epoch's list is padded by wrap-around to a multiple of
      ``world_size`` and rank ``r`` takes ``list[r::world_size]`` (``DistributedSampler``'s
      scheme, which has no weighted mode; that is why this one class does both).

    The generator is re-seeded from ``(seed, epoch)`` on each ``__iter__``; call
    :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self, n: int, seed: int, shuffle: bool, weights: np.ndarray | None = None, rank: int = 0, world_size: int = 1
    ):
        if weights is not None and len(weights) != n:
            raise ValueError(f"weights has {len(weights)} entries for {n} items")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        if self.world_size > 1:
            total = len(self) * self.world_size
            order = torch.cat([order, order[: total - self.n]])[self.rank : total : self.world_size]
        return iter(order.tolist())

    def __len__(self) -> int:
        return -(-self.n // self.world_size)


def balance_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-item sampling weight ``1 / count(class)``: every class is drawn equally often."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return 1.0 / counts[labels]


class BatchLoader:
    """Batches of a :class:`VariantDataset` in :class:`EpochSampler` order, read whole.

    Yields exactly what ``DataLoader(dataset, batch_size, sampler=sampler, drop_last=...)`` with
    the default collate yields (same items, same order, same values; ``image`` is channels-last
    strided). ``num_workers > 0`` reads that many batches ahead in threads (numpy copies from
    the page cache release the GIL). Interface used by the engine: ``sampler``, ``dataset``,
    ``batch_size``, ``len()``, iteration.

    Buffer contract: a batch's buffers are reused only once nothing refers to the batch any more
    (:class:`BufferPool` on the CPU; on CUDA, torch's caching host allocator, after the batch's
    copies to the device are done). The consumer may keep any number of batches (each keeps its
    own buffer; a list of a whole epoch holds the same values as the item loader's); the training
    loop drops each one once ``to_device`` has copied it, so at most ``num_workers + 2`` buffers
    circulate and none is allocated afresh per batch.
    """

    def __init__(
        self,
        dataset: VariantDataset,
        batch_size: int,
        sampler: EpochSampler,
        drop_last: bool,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.drop_last, self.num_workers, self.pin_memory = drop_last, num_workers, pin_memory
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self) -> list[np.ndarray]:
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:  # cached augmented views: one per epoch
            set_epoch(self.sampler.epoch)
        if self.num_workers > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="dfpipe-loader")
        yield from thread_map(
            lambda rows: self.dataset.get_batch(rows, self.pin_memory), self._batches(), self.num_workers, self._pool
        )


def make_loader(
    dataset: VariantDataset,
    batch_size: int,
    train: bool,
    num_workers: int,
    seed: int,
    balance: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> BatchLoader:
    """:class:`BatchLoader` of uint8 batches: ``image (B,3,S,S)``, ``label (B,)``, ``index (B,)`` [, masks].

    ``train``: seeded shuffle (class-balanced with ``balance``) and ``drop_last`` (a last batch of
    one item breaks BatchNorm), else the manifest order. Memory is pinned when CUDA is present.
    The random flip is not here: it is applied on the device
    (:func:`dfpipe.training.engine.random_hflip`). Call ``loader.sampler.set_epoch(e)`` per epoch.
    """
    if balance and not train:
        raise ValueError("balance applies to the training loader only")
    weights = balance_weights(dataset.labels, dataset.num_classes) if balance else None
    sampler = EpochSampler(len(dataset), seed, shuffle=train, weights=weights, rank=rank, world_size=world_size)
    drop_last = train and len(sampler) > batch_size
    return BatchLoader(dataset, batch_size, sampler, drop_last, num_workers, torch.cuda.is_available())


class FeatureDataset(VariantDataset):
    """A variant split whose ``image`` is its cached encoder feature (``features@``), not its crop.

    Labels, ids and methods come from the variant manifest exactly as in :class:`VariantDataset`;
    ``ds[i]["image"]`` is the float16 feature of row ``i`` (``(D,)`` CLIP embedding or
    ``(3, s, s)`` gradient map) from ``<features_dir>/<input>/<variant>/<split>/``. The cache's ids
    must equal the manifest's, in order (else ``ValueError``: rerun ``features@``). No image shard
    and no encoder is opened. A training split cached with augmented views (``train_views`` of the
    encoder, ``views/<k>/``) serves view ``epoch % views + 1`` in epoch ``epoch``
    (:meth:`set_epoch`, called by :class:`BatchLoader` from its sampler's epoch), as a fresh
    augmentation per epoch would; without views, the clean features every epoch.
    """

    is_image = False

    def __init__(self, variant_dir: str | Path, split: str, cache_split_dir: str | Path, num_classes: int = 3):
        from dfpipe.features.encoders import VIEWS_DIR, FeatureCache

        super().__init__(variant_dir, split, num_classes)
        self.cache = FeatureCache(cache_split_dir)
        self.cache.check_aligned(self.ids)
        self.clean = self.cache
        self.views = [FeatureCache(Path(cache_split_dir) / VIEWS_DIR / str(k)) for k in range(1, self.cache.views + 1)]
        for view in self.views:
            view.check_aligned(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Serve augmented view ``epoch % views + 1`` (the clean cache when there are no views)."""
        self.cache = self.views[epoch % len(self.views)] if self.views else self.clean

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": torch.from_numpy(np.array(self.cache.get(i))),
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def get_batch(self, rows: np.ndarray, pin: bool = False) -> dict[str, torch.Tensor]:
        """Items ``rows`` as one batch for :class:`BatchLoader`: float16 features stacked."""
        rows = np.asarray(rows, dtype=np.int64)
        feats = torch.from_numpy(np.stack([np.asarray(self.cache.get(int(i))) for i in rows]))
        return {
            "image": feats.pin_memory() if pin else feats,
            "label": torch.from_numpy(self.labels[rows]),
            "index": torch.from_numpy(rows.copy()),
        }


class LandmarkDataset(VariantDataset):
    """A variant split's crops with a fourth channel: the item's facial landmarks drawn as a map.

    For models that declare ``landmark_input`` (``two_stream``). ``image`` is ``uint8`` ``(4, S, S)``:
    RGB, then 255 at each of the 468 landmarks of the ``features@`` landmark cache
    (:mod:`dfpipe.features.landmarks`, ``<features_dir>/landmarks/<variant>/<split>/``) and 0
    elsewhere. An item whose landmarks were rejected (status other than ``ok``) keeps every item
    count comparable with the RGB-only runs: it stays in the split with an all-zero map, which the
    model reads as "landmarks missing" (an ``ok`` item always has a drawn point). The map is a
    channel of the image so the device-side flip and the input geometry move it with the pixels.
    ``missing``: the number of items without landmarks. ``is_image`` is False: the evaluation records
    the cache's provenance and skips the RGB Grad-CAM overlay.
    """

    is_image = False

    def __init__(self, variant_dir: str | Path, split: str, cache_split_dir: str | Path, num_classes: int = 3):
        from dfpipe.features.encoders import FeatureCache
        from dfpipe.features.landmarks import STATUS_OK, read_status

        super().__init__(variant_dir, split, num_classes)
        self.cache = FeatureCache(cache_split_dir)
        self.cache.check_aligned(self.ids)
        status = read_status(cache_split_dir)
        if status["id"].tolist() != self.ids.tolist():
            raise ValueError(f"{cache_split_dir}: landmark statuses differ from the variant manifest; rerun features@")
        self.ok = (status["status"] == STATUS_OK).to_numpy(bool)
        self.missing = int((~self.ok).sum())
        self.points = np.stack([np.asarray(self.cache.get(i)) for i in range(len(self.ids))])  # (n, 468, 2) f16

    def _with_maps(self, rgb: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
        from dfpipe.features.landmarks import render_maps

        out[..., :3] = rgb
        maps = self._buffers.take(out.shape[:3], np.uint8)  # render_maps clears it first
        render_maps(self.points[rows], self.ok[rows], out.shape[1], maps)
        out[..., 3] = maps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        out = np.empty((1,) + tuple(item["image"].shape[1:]) + (4,), np.uint8)
        self._with_maps(item["image"].permute(1, 2, 0).numpy()[None], np.array([i]), out)
        item["image"] = torch.from_numpy(np.ascontiguousarray(out[0].transpose(2, 0, 1)))
        return item

    def get_batch(self, rows: np.ndarray, pin: bool = False) -> dict[str, torch.Tensor]:
        """As :meth:`VariantDataset.get_batch`, ``image`` ``(B, 4, S, S)`` (channels-last view)."""
        rows = np.asarray(rows, dtype=np.int64)
        batch = super().get_batch(rows, False)
        rgb = batch["image"].permute(0, 2, 3, 1).numpy()  # (B, S, S, 3) view of the read buffer
        images = self._buffer(rgb.shape[:3] + (4,), pin)  # every byte written below
        self._with_maps(rgb, rows, images.numpy())
        batch["image"] = images.permute(0, 3, 1, 2)
        return batch


VariantDataset.is_image = True


def cache_kind(model_cfg) -> str | None:
    """The ``features@`` cache kind a model reads (``<features_dir>/<kind>/<variant>``): its input for
    clip / lgrad, ``landmarks`` for a model that declares ``landmark_input``, else None."""
    from dfpipe.features.encoders import FEATURE_INPUTS
    from dfpipe.features.landmarks import ENCODER

    if model_cfg.input in FEATURE_INPUTS:
        return model_cfg.input
    return ENCODER if getattr(model_cfg, "landmark_input", False) else None


def open_split(
    variant_dir: str | Path,
    split: str,
    model_cfg,
    features_variant_dir: str | Path | None = None,
    with_masks: bool = False,
) -> VariantDataset:
    """The dataset a model reads: the variant's image crops, or -- for ``model.input`` clip / lgrad --
    its features@ cache ``features_variant_dir`` (= ``<features_dir>/<input>/<variant>``), or for a
    landmark model the crops with the landmark cache ``<features_dir>/landmarks/<variant>`` drawn
    as a fourth channel (:func:`cache_kind`)."""
    kind = cache_kind(model_cfg)
    if kind is None:
        return VariantDataset(variant_dir, split, model_cfg.num_classes, with_masks=with_masks)
    if kind == "landmarks":
        cache = None if features_variant_dir is None else Path(features_variant_dir) / split
        if with_masks:
            raise ValueError("a landmark-input model has no mask head")
        if cache is None or not (cache / "index.json").is_file():
            raise FileNotFoundError(
                f"{cache}: no landmark cache for this variant (add an encoder: landmarks entry to "
                "features.caches and run features@)"
            )
        return LandmarkDataset(variant_dir, split, cache, model_cfg.num_classes)
    if with_masks:
        raise ValueError(f"input {model_cfg.input!r} (cached features) has no masks")
    cache = None if features_variant_dir is None else Path(features_variant_dir) / split
    if cache is None or not (cache / "index.json").is_file():
        raise FileNotFoundError(
            f"{cache}: no {model_cfg.input} feature cache for this variant "
            f"(add it to features.caches and run features@)"
        )
    return FeatureDataset(variant_dir, split, cache, model_cfg.num_classes)
