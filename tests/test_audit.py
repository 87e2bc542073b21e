"""Leakage audit: finds planted group/video/exact/near-duplicate leaks; leak-free check fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from dfpipe.splits.audit import AuditConfig, LeakError, audit_variant, check_leak_free, near_pairs, phash
from dfpipe.core.config import build
from dfpipe.core.io import array_hash
from dfpipe.core.manifest import write_faces
from dfpipe.core.shards import ShardReader, ShardWriter
from dfpipe.splits.variants import build_variant, materialise_split, select_variant
from helpers import SIZE, face_rows, frame_image, smooth_image, split_cfg, variant_cfg, write_source

REPO = Path(__file__).resolve().parents[1]
AUDIT = build(AuditConfig, {"hamming_threshold": 8, "max_examples": 5, "out_dir": "metrics/audit"})
ALL = {"ffhq": 100, "gan_a": 100, "ff_f2f_k": 100}


@pytest.fixture()
def faces_dir(tmp_path):
    faces = tmp_path / "faces"
    write_source(faces, face_rows("ffhq", n_images=24, per_identity=3))
    write_source(faces, face_rows("gan_a", n_images=24))
    write_source(faces, face_rows("ff_f2f_k", videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 20, 2)], frames=4))
    return faces


def test_phash_distances():
    a = smooth_image("a", 64)
    near = np.clip(a.astype(np.int16) + np.random.default_rng(0).integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    d = lambda x, y: int(np.bitwise_count(phash(x) ^ phash(y)))  # noqa: E731
    assert d(a, a) == 0
    assert d(a, near) <= 4
    assert min(d(a, smooth_image(f"b{k}", 64)) for k in range(20)) > 8
    assert phash(a) == phash(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))  # gray input accepted
    pairs = near_pairs(np.array([1, 2, 0xFF], np.uint64), np.array([3, 0xFF00], np.uint64), 1, chunk_elems=2)
    assert pairs.tolist() == [[0, 0], [1, 0]]


def test_clean_group_variant_passes(tmp_path, faces_dir):
    split = split_cfg(tmp_path, on_shortfall="cap")
    build_variant("v4", variant_cfg(masks=True, train=ALL, eval=ALL), split)
    m, md = audit_variant("v4", tmp_path / "variants/v4", True, AUDIT)
    assert (m["group_leaks"], m["video_leaks"], m["exact_duplicates"]) == (0, 0, 0)
    assert m["leak_check"] == "passed" and m["near_duplicate_pairs"] == 0
    assert sum(m["items"].values()) == 24 + 24 + 40 and m["videos"] == 10
    check_leak_free(m)
    assert "Leak check: **passed**" in md


def test_frame_level_variant_shows_its_leak(tmp_path, faces_dir):
    split = split_cfg(tmp_path, on_shortfall="cap")
    build_variant("v3", variant_cfg(level="frame", leak_free=False, train=ALL, eval=ALL), split)
    m, md = audit_variant("v3", tmp_path / "variants/v3", False, AUDIT)
    assert m["group_leaks"] > 0 and m["video_leaks"] > 0 and m["leak_check"] == "not required"
    assert m["group_leaks_by_source"]["ff_f2f_k"] > 0
    assert m["near_duplicate_pairs"] > 0  # frames of one video across splits
    check_leak_free(m)  # not declared leak-free: reported, not fatal
    m2, _ = audit_variant("v3", tmp_path / "variants/v3", True, AUDIT)
    with pytest.raises(LeakError, match="declared leak_free.*group leak"):
        check_leak_free(m2)
    assert "Videos on more than one split" in md and "ff_f2f_k" in md


def _planted(tmp_path, faces_dir):
    """A clean group split plus: an exact copy of a train GAN image in eval (new group), a noisy
    copy of a train FFHQ image in eval (new group), and a new item in eval claiming a train video."""
    cfg, split = variant_cfg(train=ALL, eval=ALL), split_cfg(tmp_path, on_shortfall="cap")
    faces = pd.concat([pd.read_parquet(faces_dir / s / "manifest.parquet") for s in ALL], ignore_index=True)
    rows, _ = select_variant(faces, "p", cfg, split)
    train = rows[rows["split"] == "train"]
    gan = train[train["source"] == "gan_a"].iloc[0]
    ffhq = train[train["source"] == "ffhq"].iloc[0]
    video = train[train["source"] == "ff_f2f_k"].iloc[0]
    exact = gan.copy()
    exact[["id", "group_keys", "split", "split_group"]] = ["gan_a/copy.png", ["gan_a/copy.png"], "eval", "gan_a/copy.png"]

    plant = face_rows("plant", n_images=2)
    base = ShardReader(faces_dir / "ffhq").get(ffhq["shard"], ffhq["offset"])
    near_img = np.clip(base.astype(np.int16) + np.random.default_rng(1).integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    with ShardWriter(faces_dir / "plant", "images", 8) as w:
        for k, img in enumerate([near_img, frame_image("other", 0)]):
            plant.loc[k, ["shard", "offset", "content_hash"]] = [*w.add(img), array_hash(img)]
    plant.loc[1, "video_id"] = video["video_id"]
    write_faces(plant, faces_dir / "plant" / "manifest.parquet")
    plant["split"], plant["split_group"] = "eval", plant["id"]
    rows = pd.concat([rows, exact.to_frame().T, plant], ignore_index=True).sort_values("id")
    for s in ("train", "val", "eval"):
        materialise_split(rows[rows["split"] == s], faces_dir, tmp_path / "variants/p" / s, False, 5)
    return tmp_path / "variants/p", gan["id"], ffhq["id"]


def test_audit_finds_planted_exact_near_and_video_leaks(tmp_path, faces_dir):
    vdir, gan_id, ffhq_id = _planted(tmp_path, faces_dir)
    m, md = audit_variant("p", vdir, True, AUDIT)
    assert m["group_leaks"] == 0
    assert m["exact_duplicates"] == 1
    assert m["video_leaks"] == 1
    assert m["near_duplicate_pairs_other_group"] >= 1
    assert m["leak_check"] == "failed"
    with pytest.raises(LeakError, match="1 video leak.*1 exact duplicate"):
        check_leak_free(m)
    assert f"`{ffhq_id}` | `plant/img00000.png`" in md


def test_corrupt_pixels_are_an_error(tmp_path, faces_dir):
    build_variant("c", variant_cfg(train=ALL, eval=ALL), split_cfg(tmp_path, on_shortfall="cap"))
    shard = sorted((tmp_path / "variants/c/eval").glob("images-*.npy"))[0]
    arr = np.load(shard)
    arr[0, 0, 0, 0] ^= 1
    np.save(shard, arr)
    with pytest.raises(ValueError, match="do not match their content_hash"):
        audit_variant("c", tmp_path / "variants/c", True, AUDIT)


def test_audit_stage_writes_report_then_fails_leak_free_variant(tmp_path, faces_dir):
    vdir, _, _ = _planted(tmp_path, faces_dir)
    params = {
        "split": {"salt": "s", "scale": 1.0, "val_fraction": 0.2, "on_shortfall": "cap", "ffpp_official": None, "bridging": "drop",
                  "faces_dir": "faces", "out_dir": "variants", "shard_size": 5},
        "variants": {"p": {"description": "planted", "level": "group", "leak_free": True, "masks": False,
                           "eval_fraction": 0.3, "train": ALL, "eval": ALL}},
        "audit": {"hamming_threshold": 8, "max_examples": 5, "out_dir": "metrics/audit"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(REPO / "stages/audit.py"), "p"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "audit@p FAILED" in proc.stderr and "1 exact duplicate" in proc.stderr
    assert (tmp_path / "metrics/audit/p.json").is_file() and (tmp_path / "metrics/audit/p.md").is_file()
