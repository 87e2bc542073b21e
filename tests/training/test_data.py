"""VariantDataset, EpochSampler/make_loader, the device-side flip and the loss builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import make_variant
from dfpipe.training.data import EpochSampler, VariantDataset, make_loader
from dfpipe.training.engine import random_hflip, to_device
from dfpipe.training.losses import LossConfig, build_loss
from helpers import RUN_DEFAULTS, loss_config
from dfpipe.core.manifest import VARIANT_SCHEMA, write_variant
from dfpipe.core.shards import ShardWriter
from dfpipe.core.config import ConfigError, build




@pytest.fixture(scope="module")
def variant(toy_variant) -> Path:
    return toy_variant


def test_items_are_uint8_chw_with_labels(variant):
    ds = VariantDataset(variant, "train")
    assert len(ds) == 24
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 32, 32)
    assert sorted(set(ds.labels.tolist())) == [0, 1, 2]
    assert ds.class_counts().tolist() == [8, 8, 8]
    # the row's pixels: manifest order is by id, labels follow their rows
    for i in range(len(ds)):
        assert int(ds[i]["label"]) == int(ds.ids[i].split("/")[2])


def test_binary_label_mapping(variant):
    ds3 = VariantDataset(variant, "val", num_classes=3)
    ds2 = VariantDataset(variant, "val", num_classes=2)
    assert ds2.labels.tolist() == [0 if y == 0 else 1 for y in ds3.labels.tolist()]
    assert ds2.class_counts().tolist() == [4, 8]
    assert int(ds2[len(ds2) - 1]["label"]) == 1  # an edited item (label 2) -> 1


def test_mask_targets_per_label(variant):
    ds = VariantDataset(variant, "train", with_masks=True)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        mask, w, y = item["mask"], float(item["mask_weight"]), int(item["label"])
        assert mask.dtype == torch.uint8 and mask.shape == (32, 32)
        if y == 0:
            assert mask.sum() == 0 and w == 1.0
        elif y == 1:
            assert bool((mask == 1).all()) and w == 1.0
        elif ds.has_mask[i]:
            assert set(mask.unique().tolist()) == {0, 1} and int(mask.sum()) == 16 * 16 and w == 1.0
        else:
            assert w == 0.0  # edited without a mask: excluded from the seg loss
        seen.add((y, w))
    assert (2, 0.0) in seen and (2, 1.0) in seen


def test_bad_label_names_the_manifest(tmp_path):
    root = make_variant(tmp_path / "v", per_class={"train": 2})
    path = root / "train" / "manifest.parquet"
    df = pd.read_parquet(path)
    df.loc[0, "label"] = 5
    write_variant(df, path)
    with pytest.raises(ValueError, match=r"manifest.parquet: unknown labels \[5\]"):
        VariantDataset(root, "train")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        VariantDataset(root, "val")


def test_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=3, shuffle=True), EpochSampler(50, seed=3, shuffle=True)
    a.set_epoch(1)
    list(b)  # consuming epoch 0 first must not change epoch 1 (resume)
    b.set_epoch(1)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(2)
    assert list(a) != list(b)
    assert list(EpochSampler(5, seed=3, shuffle=False)) == [0, 1, 2, 3, 4]


def test_sampler_shards_ranks_and_balances():
    shards = [list(EpochSampler(11, 0, True, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert set(sum(shards, [])) == set(range(11))
    labels = np.array([0] * 90 + [1] * 10)
    weights = 1.0 / np.bincount(labels)[labels]
    drawn = labels[list(EpochSampler(100, 0, True, weights=weights))]
    assert 30 <= (drawn == 1).sum() <= 70  # balanced: about 50, not 10


def test_loader_order_does_not_depend_on_workers(variant):
    ds = VariantDataset(variant, "train")
    orders = []
    for workers in (0, 2):
        loader = make_loader(ds, 5, train=True, num_workers=workers, seed=7)
        loader.sampler.set_epoch(4)
        orders.append(torch.cat([b["index"] for b in loader]).tolist())
        assert len(orders[-1]) == 20  # drop_last: 4 full batches of 5 from 24 items
    assert orders[0] == orders[1]


def test_flip_moves_image_and_mask_together(variant):
    loader = make_loader(VariantDataset(variant, "train", with_masks=True), 24, False, 0, 0)
    batch = to_device(next(iter(loader)), torch.device("cpu"))
    assert batch["image"].dtype == torch.float32 and float(batch["image"].max()) <= 1.0
    batch["mask"][:, :, :5] = 1  # asymmetric marker
    flipped = random_hflip(batch, torch.Generator().manual_seed(0))
    did = (flipped["image"] != batch["image"]).flatten(1).any(1)
    assert 0 < int(did.sum()) < 24
    for i in range(24):
        expect_img = batch["image"][i].flip(-1) if did[i] else batch["image"][i]
        expect_mask = batch["mask"][i].flip(-1) if did[i] else batch["mask"][i]
        assert torch.equal(flipped["image"][i], expect_img)
        assert torch.equal(flipped["mask"][i], expect_mask)


# ---- losses ----------------------------------------------------------------------------------


def _outputs_and_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    outputs = {"logits": torch.randn(4, 3, generator=g), "mask": torch.randn(4, 1, 8, 8, generator=g)}
    batch = {"label": torch.tensor([0, 1, 2, 2]), "mask": (torch.rand(4, 16, 16, generator=g) > 0.5).to(torch.uint8),
             "mask_weight": torch.tensor([1.0, 1.0, 1.0, 0.0])}
    return outputs, batch


def test_zero_weights_skip_terms():
    outputs, batch = _outputs_and_batch()
    full, parts = build_loss(loss_config(w_bce=1.0, w_dice=1.0), 3)(outputs, batch)
    assert set(parts) == {"cls", "bce", "dice"}
    assert torch.allclose(full, parts["cls"] + parts["bce"] + parts["dice"])
    cls_only, parts = build_loss(loss_config(), 3)(outputs, {"label": batch["label"]})  # no masks needed
    assert set(parts) == {"cls"} and torch.allclose(cls_only, torch.nn.functional.cross_entropy(outputs["logits"], batch["label"]))
    no_dice, parts = build_loss(loss_config(w_bce=0.5), 3)(outputs, batch)
    assert set(parts) == {"cls", "bce"} and torch.allclose(no_dice, parts["cls"] + 0.5 * parts["bce"])
    with pytest.raises(ValueError, match="no mask output"):
        build_loss(loss_config(w_dice=1.0), 3)({"logits": outputs["logits"]}, batch)
    with pytest.raises(ConfigError, match="all loss weights are zero"):
        build(LossConfig, {**RUN_DEFAULTS["loss"], "w_cls": 0.0})


def test_seg_terms_ignore_zero_weight_items():
    outputs, batch = _outputs_and_batch()
    # mask_on "all": every item with weight 1 takes the mask terms (the "edited" default is
    # tested in test_train); item 3 has weight 0
    loss = build_loss(loss_config(w_cls=0.0, w_bce=1.0, w_dice=1.0, mask_on="all"), 3)
    base, _ = loss(outputs, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["mask"][3] = 1 - changed["mask"][3]  # the weight-0 item's target must not matter
    again, _ = loss(outputs, changed)
    assert torch.equal(base, again)
    changed["mask"][0] = 1 - changed["mask"][0]
    assert not torch.equal(base, loss(outputs, changed)[0])
    # a perfect, confident mask gives ~0 for both terms
    target = batch["mask"][:, None].float()
    perfect = {"logits": outputs["logits"], "mask": (target * 2 - 1) * 30}
    total, parts = loss(perfect, batch)
    assert float(parts["bce"]) < 1e-6 and float(parts["dice"]) < 1e-6


def test_class_weights_change_ce():
    outputs, batch = _outputs_and_batch()
    plain, _ = build_loss(loss_config(), 3)(outputs, batch)
    weighted, _ = build_loss(loss_config(class_weights=(1.0, 1.0, 5.0)), 3)(outputs, batch)
    expect = torch.nn.functional.cross_entropy(outputs["logits"], batch["label"], weight=torch.tensor([1.0, 1.0, 5.0]))
    assert torch.allclose(weighted, expect) and not torch.allclose(plain, weighted)
    with pytest.raises(ValueError, match="class_weights has 2 entries"):
        build_loss(loss_config(class_weights=(1.0, 2.0)), 3)


@pytest.mark.parametrize("train, balance, rank, world, workers", [
    (True, False, 0, 1, 0), (True, True, 0, 1, 2), (False, False, 0, 1, 0), (True, False, 1, 2, 1),
])
def test_batch_loader_yields_the_item_loaders_batches(variant, train, balance, rank, world, workers):
    """Whole-batch reads give the samples, order and values of the item-by-item DataLoader."""
    from torch.utils.data import DataLoader

    ds = VariantDataset(variant, "train", with_masks=True)
    fast = make_loader(ds, 5, train=train, num_workers=workers, seed=3, balance=balance, rank=rank,
                       world_size=world)
    slow = DataLoader(ds, batch_size=5, sampler=fast.sampler, drop_last=fast.drop_last)
    for epoch in (0, 1):
        fast.sampler.set_epoch(epoch)
        got, want = list(fast), list(slow)
        assert len(got) == len(want) == len(fast) > 1
        for a, b in zip(got, want):
            assert sorted(a) == sorted(b)
            for key in b:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert (ds.labels3 == 2).any() and not ds.has_mask[ds.labels3 == 2].all()  # both mask cases ran


def test_to_device_layout_keeps_values(variant):
    batch = next(iter(make_loader(VariantDataset(variant, "val"), 6, False, 0, 0)))
    plain = to_device(batch, torch.device("cpu"))["image"]
    last = to_device(batch, torch.device("cpu"), channels_last=True)["image"]
    assert plain.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last) and torch.equal(plain, batch["image"].float() / 255)


def test_batch_buffers_are_reused_only_once_released(variant):
    """A batch the caller holds is never overwritten; a released batch's buffer is reused (no fresh
    allocation, no page faults, per batch)."""
    ds = VariantDataset(variant, "train", with_masks=True)
    rows = np.arange(5)
    a = ds.get_batch(rows)
    ptr, want = a["image"].data_ptr(), a["image"].clone()
    b = ds.get_batch(rows[::-1].copy())
    assert b["image"].data_ptr() != ptr  # control: a is held, so b gets another buffer
    assert torch.equal(a["image"], want)
    view = a["image"][1:]  # a view keeps the buffer as much as the batch does
    del a
    assert ds.get_batch(rows)["image"].data_ptr() != ptr
    del view
    c = ds.get_batch(rows)
    assert c["image"].data_ptr() == ptr and torch.equal(c["image"], want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_pinned_batches_equal_pageable_ones_and_are_never_overwritten_while_held(variant):
    """The CUDA path: page-locked buffers from torch's caching host allocator, reused only after the
    batch is released (control: a held batch keeps its values while the next ones are read)."""
    ds = VariantDataset(variant, "train", with_masks=True)
    rows = np.arange(5)
    a = ds.get_batch(rows, pin=True)
    want = ds.get_batch(rows)
    assert a["image"].is_pinned() and a["mask"].is_pinned() and not want["image"].is_pinned()
    for key in want:
        assert torch.equal(a[key], want[key]), key
    held = a["image"].clone()
    for _ in range(3):
        b = ds.get_batch(rows[::-1].copy(), pin=True)
        assert b["image"].data_ptr() != a["image"].data_ptr()
        assert torch.equal(a["image"], held)
