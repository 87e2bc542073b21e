"""Augmented views of the training split in a frozen-encoder cache: a fixed number per image, each
drawn from a derived seed, cached like the clean features and served one per epoch."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from dfpipe.features import encoders as E
from dfpipe.features.augment import augmented_view
from dfpipe.training.data import BatchLoader, EpochSampler, FeatureDataset

from helpers import feature_caches_in_two_folders, tree_digest

FEATURES = {
    "out_dir": "data/features", "threads": 1, "variants_dir": "data/variants", "batch_size": 5, "shard_size": 7,
    "encoders": {
        "clip": {"arch": "ViT-L-14", "weights": None, "sha256": None, "seed": 0, "image_size": 16, "width": 16,
                 "layers": 1, "heads": 2, "patch_size": 8, "embed_dim": 8, "train_views": 2, "center_crop": True},
        "lgrad": {"arch": "random_cnn", "weights": None, "sha256": None, "seed": 0, "image_size": 32, "width": 4},
    },
    "caches": {"clip_toy": {"encoder": "clip", "variant": "toy"}},
}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    roots = feature_caches_in_two_folders(tmp_path_factory, "views", FEATURES)
    return [root / "data" / "features" / "clip" / "toy" for root in roots]


def test_views_are_cached_deterministically_and_differ(caches):
    a, b = caches
    assert tree_digest(a) == tree_digest(b)  # same seed, same bytes
    assert {"train/views/1/index.json", "train/views/2/index.json"} <= set(tree_digest(a))
    assert not (a / "val" / "views").exists() and not (a / "test" / "views").exists()
    clean, v1, v2 = (np.load(p / "features-00000.npy") for p in (a / "train", a / "train/views/1", a / "train/views/2"))
    assert clean.shape == v1.shape == v2.shape
    assert not np.array_equal(clean, v1) and not np.array_equal(v1, v2)
    assert E.FeatureCache(a / "train").views == 2 and "views" not in E.FeatureCache(a / "val").index


def test_view_is_blur_jpeg_then_a_crop_then_a_flip():
    x = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    v = augmented_view(x, 16, torch.Generator().manual_seed(3))
    assert v.shape == (8, 3, 16, 16) and v.dtype == torch.uint8
    assert torch.equal(v, augmented_view(x, 16, torch.Generator().manual_seed(3)))
    assert not torch.equal(v, augmented_view(x, 16, torch.Generator().manual_seed(4)))
    # an image left alone by blur and JPEG is an exact (possibly mirrored) window of the input
    exact = 0
    for i in range(8):
        windows = [x[i, :, t : t + 16, s : s + 16] for t in range(5) for s in range(5)]
        exact += any(torch.equal(v[i], w) or torch.equal(v[i], w.flip(-1)) for w in windows)
    assert 0 < exact < 8


def test_training_reads_one_view_per_epoch(caches):
    a = caches[0]
    variant = a.parents[2] / "variants" / "toy"
    ds = FeatureDataset(variant, "train", a / "train", num_classes=2)
    loader = BatchLoader(ds, 4, EpochSampler(len(ds), 0, shuffle=False), drop_last=False)
    seen = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        seen.append(torch.cat([b["image"] for b in loader]).numpy())
    v1 = np.concatenate([np.load(p) for p in sorted((a / "train/views/1").glob("features-*.npy"))])
    v2 = np.concatenate([np.load(p) for p in sorted((a / "train/views/2").glob("features-*.npy"))])
    np.testing.assert_array_equal(seen[0], v1)
    np.testing.assert_array_equal(seen[1], v2)
    np.testing.assert_array_equal(seen[2], v1)
    val = FeatureDataset(variant, "val", a / "val", num_classes=2)  # val and test: clean features
    val.set_epoch(1)
    np.testing.assert_array_equal(val[0]["image"].numpy(), np.load(a / "val" / "features-00000.npy")[0])
